#!/usr/bin/env bash
# test.sh -- herald's test command (README, .ci/run): install what is missing,
# build with AddressSanitizer + UndefinedBehaviorSanitizer, run every test.
#
# Every test runs with TMPDIR set to one private directory; on exit -- success,
# failure or interrupt -- any process still running from it (a test's
# PostgreSQL, a daemon under test) is killed and the directory removed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

bash infra/install-deps.sh

JOBS=$(nproc)
cmake -S . -B build-san -DHERALD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug -Wno-dev >/dev/null
cmake --build build-san -j"$JOBS" 2>&1 | grep -vE '^\[ *[0-9]+%\]|^Consolidate|^-- ' || true
# The grep above hides progress lines only; a failed build must stop us.
cmake --build build-san -j"$JOBS" >/dev/null
# The optimised build the first command (infra/demo.sh) makes: -O2 sees warnings
# (format truncation, maybe-uninitialized) that the Debug build does not, and
# -Werror makes them errors there.  Compiled here so main never breaks the demo.
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -Wno-dev >/dev/null
cmake --build build -j"$JOBS" 2>&1 | grep -vE '^\[ *[0-9]+%\]|^Consolidate|^-- ' || true
cmake --build build -j"$JOBS" >/dev/null

TESTROOT=$(mktemp -d /tmp/herald-test.XXXXXX)
chmod 711 "$TESTROOT" # the embedded PostgreSQL runs as another OS user when we are root
cleanup() {
  local rc=$?
  pkill -KILL -f "$TESTROOT" 2>/dev/null || true
  rm -rf "$TESTROOT"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export TMPDIR="$TESTROOT"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export HERALD_SHARED_DIR="$ROOT/../shared"

set +e
ctest --test-dir build-san --output-on-failure -j"$JOBS" --timeout 900
rc=$?
set -e
# check's own summary line of every test binary, for the record.
echo "--- per-suite summaries (check) ---"
grep -hE '^[0-9]+%: Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+|^liquid-spec passed=' \
  build-san/Testing/Temporary/LastTest.log || true
exit $rc
