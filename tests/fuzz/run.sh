#!/usr/bin/env bash
# Runs every fuzz target of a CV_FUZZ build for a bounded time on its corpus.
#   tests/fuzz/run.sh BUILD_DIR SECONDS [target...]
# Each target first replays tests/fuzz/corpus/<target>/ (seeds and regress-* inputs), then
# mutates for SECONDS. New inputs go to a scratch corpus, never into the repository; a crash
# leaves its input in BUILD_DIR/fuzz-artifacts/<target>/ (replay: BUILD_DIR/bin/fuzz_<target>
# FILE). Prints "fuzz passed: <target>" or "fuzz failed: <target>" per target and exits non-zero
# if any failed.
set -uo pipefail
build=$1 seconds=$2; shift 2
src=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for bin in "$build"/bin/fuzz_*; do targets+=("${bin##*/fuzz_}"); done
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export TMPDIR=$scratch  # the targets' temporary stores and extent files
status=0
for t in "${targets[@]}"; do
  max_len=4096
  [ "$t" = scan_extent ] && max_len=65536  # up to 128 records in the layout of mode 2
  mkdir -p "$scratch/corpus-$t" "$build/fuzz-artifacts/$t"
  log="$build/fuzz-artifacts/$t.log"
  "$build/bin/fuzz_$t" -max_total_time="$seconds" -max_len=$max_len -timeout=25 \
    -rss_limit_mb=2560 -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t/" \
    "$scratch/corpus-$t" "$src/corpus/$t" >"$log" 2>&1
  rc=$?
  runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo ?)
  if [ $rc -eq 0 ]; then
    echo "fuzz passed: $t ($runs runs in ${seconds}s)"
  else
    status=1
    echo "fuzz failed: $t (exit $rc); log and input in $build/fuzz-artifacts/"
    grep -E 'property failed|ERROR: |SUMMARY|Test unit written' "$log" | head -20
  fi
done
exit $status
