#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test:
#   1. Release build (with assertions): unit tests, integration tests against a real
#      chunkvaultd over HTTPS, and real-client (restic) tests;
#   2. ASan+UBSan build: the unit tests again.
# Usage: ./deploy/test.sh [--no-asan] [ctest -R filter]
set -euo pipefail
cd "$(dirname "$0")/.."

asan=1
if [ "${1:-}" = "--no-asan" ]; then asan=0; shift; fi
filter=("$@")
[ ${#filter[@]} -gt 0 ] && filter=(-R "${filter[0]}")

./deploy/install-deps.sh
jobs=$(nproc)
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT

run_ctest() {  # dir, extra ctest args...
  local dir=$1; shift
  set +e
  ctest --test-dir "$dir" --output-on-failure --timeout 900 "$@" "${filter[@]}" 2>&1 | tee -a "$summary"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

echo "== build (Release with assertions)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j"$jobs"

status=0
echo "== unit tests (Release)"
run_ctest build -L unit -j"$jobs" || status=1
if ctest --test-dir build -N -L integration 2>/dev/null | grep -q "Total Tests: [1-9]"; then
  echo "== integration tests (Release, real server, real restic)"
  run_ctest build -L integration -j1 --verbose || status=1
fi

if [ "$asan" = 1 ]; then
  echo "== build (ASan+UBSan, unit tests)"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCV_SANITIZE=ON -DCV_UNIT_ONLY=ON >/dev/null
  ninja -C build-asan -j"$jobs"
  echo "== unit tests (ASan+UBSan)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    run_ctest build-asan -L unit -j"$jobs" || status=1
fi

# One closing line over every run above: ctest's counts, with the integration ctest entry
# replaced by the pytest cases it ran.
passed=0; failed=0
while read -r line; do
  if [[ $line =~ tests\ passed,\ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
    failed=$((failed + BASH_REMATCH[1])); passed=$((passed + BASH_REMATCH[2] - BASH_REMATCH[1]))
  elif [[ $line =~ ([0-9]+)\ passed.*\ in\ [0-9.]+s ]]; then
    passed=$((passed + BASH_REMATCH[1] - 1))
    if [[ $line =~ ([0-9]+)\ failed ]]; then failed=$((failed + BASH_REMATCH[1])); fi
  fi
done < "$summary"
echo "all suites: $passed passed, $failed failed"
exit $status
