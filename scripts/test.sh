#!/bin/sh
# Sets everything up (setup.sh) and runs every test with ctest.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh "$@"
build=${DCOMM_BUILD_DIR:-build}
cd "$build"
# The long matrix (label "full": every algorithm x 1..5 ranks x transport) is
# run by hand: cd build && ctest -L full
ctest --output-on-failure --timeout 600 -LE full -j"${DCOMM_TEST_JOBS:-2}"
