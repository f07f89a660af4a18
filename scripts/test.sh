#!/bin/sh
# Sets everything up (setup.sh), runs every test with ctest, then the fuzz
# harnesses (tests/fuzz/ci.sh: their own clang tree, build-fuzz or
# $DCOMM_FUZZ_BUILD_DIR; every corpus replayed, each target fuzzed FUZZ_TIME
# seconds, 15 by default: about 3-5 minutes in all; DCOMM_FUZZ_CI=0 skips it),
# then CI's sanitizer jobs (scripts/test_sanitizers.sh; DCOMM_SANITIZERS=0
# skips them).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh "$@"
build=${DCOMM_BUILD_DIR:-build}
# The long matrix (label "full": every algorithm x 1..5 ranks x transport) is
# run by hand: cd build && ctest -L full
(cd "$build" && ctest --output-on-failure --timeout 600 -LE full -j"${DCOMM_TEST_JOBS:-2}")
if [ "${DCOMM_FUZZ_CI:-1}" != 0 ]; then
    if command -v clang >/dev/null; then
        FUZZ_TIME=${FUZZ_TIME:-15} ./tests/fuzz/ci.sh "${DCOMM_FUZZ_BUILD_DIR:-build-fuzz}"
    else
        echo "test.sh: clang not found: fuzz harnesses skipped (scripts/setup.sh installs it)"
    fi
fi
if [ "${DCOMM_SANITIZERS:-1}" != 0 ]; then
    ./scripts/test_sanitizers.sh all
fi
