#!/bin/sh
# walmirror's whole test suite (the README's test command; .ci/run calls it): installs the
# dependencies, then
#   1. builds with AddressSanitizer + UndefinedBehaviorSanitizer and runs the unit tests and
#      the synchronous-mirroring integration tests there (the operations tests - switchover
#      and fail-over, running exposed, maintenance windows, the full disk, the live status -,
#      the fuzzing runs, the benchmark smoke test, the package build and the fault-injection
#      cycles are left to step 2);
#   2. builds the release tree with -Werror, runs every unit suite again under valgrind
#      memcheck (the tests labelled memcheck, two at a time: about 3.5 minutes), then every
#      test step 1 did not run (the unit suites again, the rest of step 2's list) under CTest,
#      two at a time; its summary, step 1's and memcheck's close the output.
# Integration tests start real PostgreSQL 15 servers as the postgres user on free loopback
# ports and stop them, even on failure.
#   sh tests/run.sh                        (as root on a fresh Debian 12 machine)
#   WALMIRROR_SKIP_DEPS=1 sh tests/run.sh  (dependencies already installed)
#   WALMIRROR_SKIP_SANITIZE=1 sh tests/run.sh
#   WALMIRROR_SANITIZE_ALL=1 sh tests/run.sh   (every integration test under the sanitizers too)
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
    # The operations tests (switchover and fail-over, running exposed, maintenance windows,
    # the full disk, the live status, the etcd-arbitrated pair) run in the release tree only,
    # to keep the suite under 20 minutes on two cores; WALMIRROR_SANITIZE_ALL=1 runs them
    # here too.
    skip='^(test_ha|test_avail|test_ha_etcd|test_maint_live|test_diskfull|test_status_live)$'
    [ "${WALMIRROR_SANITIZE_ALL:-0}" = 1 ] && skip='^$'
    asan=0
    (cd "$build-asan" &&
        ctest --output-on-failure -LE 'fuzz|bench|faults|package' -E "$skip" --timeout 900 \
            -j"$jobs") 2>&1 | tee "$build-asan/run.txt"
    grep -q '^100% tests passed' "$build-asan/run.txt" || asan=1
    if [ "$asan" != 0 ]; then
        echo "run.sh: the sanitizer tree's tests FAILED (see above)" >&2
        exit 1
    fi
    # The integration suites that passed here (real PostgreSQL, TLS, io_uring, etcd) are not
    # run again in the release tree: the sanitizers watched them more closely than a second
    # run would.  The unit suites run again there, under valgrind as well.
    again=$(cd "$build-asan" && ctest -N -L integration -LE 'fuzz|bench|faults|package' \
        -E "$skip" | sed -n 's/^ *Test *#[0-9]*: *//p' | paste -sd'|' -)
fi

echo "== release build =="
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWALMIRROR_WERROR=ON >/dev/null
cmake --build "$build" -j"$jobs"
# The postgres user runs the servers the tests start: let it reach the build tree.
chmod o+rx "$build" 2>/dev/null || true
cd "$build"
echo "== valgrind memcheck (unit suites) =="
if ! command -v valgrind >/dev/null; then
    echo "run.sh: valgrind is missing (tools/install-deps.sh installs it)" >&2
    exit 1
fi
memcheck=0
ctest --output-on-failure --timeout 600 -L memcheck -j"$jobs" >"$build/memcheck.txt" 2>&1 ||
    memcheck=$?
cat "$build/memcheck.txt"
# No memcheck test registered (valgrind not found when CMake ran) is a failure too.
grep -q 'tests passed' "$build/memcheck.txt" || memcheck=1
echo "== all other tests =="
# Two at a time on two cores: the tests wait on servers, timers and disks far more than they
# compute, and every timing they assert leaves room for a busy machine.
ctest --output-on-failure --timeout 900 -LE memcheck -E "^(${again:-})$" -j"$jobs" ||
    status=$?
echo "== summaries =="
if [ -n "${again:-}" ]; then
    grep -E 'tests passed' "$build-asan/run.txt" | sed 's/^/sanitizer tree (ASan + UBSan): /'
fi
grep -E 'tests passed|^memcheck +=' "$build/memcheck.txt" | sed 's/^/valgrind memcheck: /'
if [ "$memcheck" != 0 ]; then
    echo "run.sh: valgrind memcheck FAILED (see above)" >&2
    exit 1
fi
exit "${status:-0}"
