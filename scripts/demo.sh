#!/bin/sh
# Sets everything up (setup.sh) and runs the main job: two ranks over shared
# memory allreducing 64 MiB of float32 and checking every element.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
build=${DCOMM_BUILD_DIR:-build}
exec "$build/launcher/dlaunch" -np 2 "$build/examples/allreduce_check" 64 3
