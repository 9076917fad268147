#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test:
#   1. Release build (with assertions): unit tests, integration tests against a real
#      chunkvaultd over HTTPS, and real-client (restic) tests;
#   2. ASan+UBSan build: the unit tests again;
#   3. libFuzzer build (clang, tests/fuzz): every fuzz target for CV_FUZZ_SECONDS (default 15)
#      on its corpus in tests/fuzz/corpus/.
# Usage: ./deploy/test.sh [--no-asan] [--no-fuzz] [ctest -R filter]
set -euo pipefail
cd "$(dirname "$0")/.."

asan=1 fuzz=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-asan) asan=0; shift ;;
    --no-fuzz) fuzz=0; shift ;;
    *) break ;;
  esac
done
filter=("$@")
[ ${#filter[@]} -gt 0 ] && filter=(-R "${filter[0]}")

./deploy/install-deps.sh
jobs=$(nproc)
unit_log=$(mktemp)
integration_log=$(mktemp)
fuzz_log=$(mktemp)
trap 'rm -f "$unit_log" "$integration_log" "$fuzz_log"' EXIT

run_ctest() {  # log, dir, extra ctest args...
  local log=$1 dir=$2; shift 2
  set +e
  ctest --test-dir "$dir" --output-on-failure --timeout 900 "$@" "${filter[@]}" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

echo "== build (Release with assertions)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j"$jobs"

status=0
echo "== unit tests (Release)"
run_ctest "$unit_log" build -L unit -j"$jobs" || status=1
if ctest --test-dir build -N -L integration 2>/dev/null | grep -q "Total Tests: [1-9]"; then
  echo "== integration tests (Release, real server, real restic)"
  run_ctest "$integration_log" build -L integration -j1 --verbose || status=1
fi

if [ "$asan" = 1 ]; then
  echo "== build (ASan+UBSan, unit tests)"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCV_SANITIZE=ON -DCV_UNIT_ONLY=ON >/dev/null
  ninja -C build-asan -j"$jobs"
  echo "== unit tests (ASan+UBSan)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_ctest "$unit_log" build-asan -L unit -j"$jobs" || status=1
fi

if [ "$fuzz" = 1 ]; then
  fuzz_seconds=${CV_FUZZ_SECONDS:-15}
  echo "== build (libFuzzer targets, clang, ASan+UBSan)"
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 -DCV_FUZZ=ON >/dev/null
  ninja -C build-fuzz -j"$jobs"
  echo "== fuzzing (${fuzz_seconds} s per target)"
  ./tests/fuzz/run.sh build-fuzz "$fuzz_seconds" | tee -a "$fuzz_log" || status=1
fi

# One closing line over every run above: the unit tests by ctest's counts, the integration
# tests by the pytest cases they ran (ctest sees them as one test), each fuzz target as one.
passed=0; failed=0
while read -r line; do
  if [[ $line =~ tests\ passed,\ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
    failed=$((failed + BASH_REMATCH[1])); passed=$((passed + BASH_REMATCH[2] - BASH_REMATCH[1]))
  fi
done < "$unit_log"
pytest_line=$(grep -E '^[0-9]+: .*[0-9]+ (passed|failed).* in [0-9.]+s' "$integration_log" | tail -1 || true)
if [[ $pytest_line =~ ([0-9]+)\ passed ]]; then passed=$((passed + BASH_REMATCH[1])); fi
if [[ $pytest_line =~ ([0-9]+)\ failed ]]; then failed=$((failed + BASH_REMATCH[1])); fi
if [[ $pytest_line =~ ([0-9]+)\ error ]]; then failed=$((failed + BASH_REMATCH[1])); fi
passed=$((passed + $(grep -c '^fuzz passed: ' "$fuzz_log" || true)))
failed=$((failed + $(grep -c '^fuzz failed: ' "$fuzz_log" || true)))
echo "all suites: $passed passed, $failed failed"
exit $status
