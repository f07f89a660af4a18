#!/bin/sh
# Sets everything up (setup.sh: Debian packages incl. OpenBLAS and the
# Fashion-MNIST data set, then the build) and runs the main job: dtrain, the
# bundled CNN, training one epoch on Fashion-MNIST data parallel over two ranks,
# with a progress line, the test accuracy and a checkpoint in dtrain-out/.
# More epochs: DTRAIN_EPOCHS=5 ./scripts/demo.sh (5 reach about 0.91).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
build=${DCOMM_BUILD_DIR:-build}
exec "$build/launcher/dlaunch" -np 2 "$build/trainer/dtrain" --epochs "${DTRAIN_EPOCHS:-1}" \
    --out-dir "${DTRAIN_OUT:-dtrain-out}"
