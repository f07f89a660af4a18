#!/bin/sh
# Sets everything up (setup.sh), runs every test with ctest, then CI's
# sanitizer jobs (scripts/test_sanitizers.sh; DCOMM_SANITIZERS=0 skips them).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh "$@"
build=${DCOMM_BUILD_DIR:-build}
# The long matrix (label "full": every algorithm x 1..5 ranks x transport) is
# run by hand: cd build && ctest -L full
(cd "$build" && ctest --output-on-failure --timeout 600 -LE full -j"${DCOMM_TEST_JOBS:-2}")
if [ "${DCOMM_SANITIZERS:-1}" != 0 ]; then
    ./scripts/test_sanitizers.sh all
fi
