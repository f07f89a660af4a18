#!/bin/sh
# Sets everything up (setup.sh) and runs every test with ctest.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh "$@"
build=${DCOMM_BUILD_DIR:-build}
cd "$build"
ctest --output-on-failure --timeout 600 -j"${DCOMM_TEST_JOBS:-1}"
