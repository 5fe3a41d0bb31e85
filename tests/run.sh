#!/bin/sh
# walmirror's whole test suite (the README's test command; .ci/run calls it): installs the
# dependencies, then
#   1. builds with AddressSanitizer + UndefinedBehaviorSanitizer and runs the unit and
#      integration tests there (the fuzzing runs, the benchmark smoke test and the
#      fault-injection cycles are left to step 2);
#   2. builds the release tree with -Werror and runs every test under CTest - its summary
#      closes the output.
# Integration tests start real PostgreSQL 15 servers as the postgres user on free loopback
# ports and stop them, even on failure.
#   sh tests/run.sh                        (as root on a fresh Debian 12 machine)
#   WALMIRROR_SKIP_DEPS=1 sh tests/run.sh  (dependencies already installed)
#   WALMIRROR_SKIP_SANITIZE=1 sh tests/run.sh
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${WALMIRROR_BUILD_DIR:-$src/build-ci}
jobs=$(nproc)

if [ "${WALMIRROR_SKIP_DEPS:-0}" != 1 ]; then sh "$src/tools/install-deps.sh"; fi

if [ "${WALMIRROR_SKIP_SANITIZE:-0}" != 1 ]; then
    echo "== sanitizer build (ASan + UBSan) =="
    cmake -S "$src" -B "$build-asan" -DCMAKE_BUILD_TYPE=Debug -DWALMIRROR_SANITIZE=ON \
        -DWALMIRROR_WERROR=ON >/dev/null
    cmake --build "$build-asan" -j"$jobs" >/dev/null
    chmod o+rx "$build-asan" 2>/dev/null || true
    (cd "$build-asan" && ctest --output-on-failure -LE 'fuzz|bench|faults' --timeout 900)
fi

echo "== release build =="
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWALMIRROR_WERROR=ON >/dev/null
cmake --build "$build" -j"$jobs"
# The postgres user runs the servers the tests start: let it reach the build tree.
chmod o+rx "$build" 2>/dev/null || true
cd "$build"
ctest --output-on-failure --timeout 900
