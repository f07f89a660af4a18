#!/bin/sh
# Installs what dcomm needs to build (Debian 12, as root), then builds it into
# build/ (or $DCOMM_BUILD_DIR). Extra arguments go to cmake's configure step.
set -eu
cd "$(dirname "$0")/.."
packages="build-essential cmake pkg-config libsodium-dev libhwloc-dev libcmocka-dev procps openmpi-bin libopenmpi-dev libucx-dev
          libopenblas-dev zlib1g-dev gnuplot-nox dataset-fashion-mnist"
# The Python package's tests and example (plugins/python, tests/python).
packages="$packages python3-numpy python3-pytest python3-torch dataset-fashion-mnist"
# pip install of the package into a fresh venv (tests/install/pip_test.sh),
# and TensorFlow's virtual environment (below): the venv module.
packages="$packages python3-venv"
# Horovod's own suite (tests/compat, label "compat"): its imports and a per-test deadline.
packages="$packages python3-cloudpickle python3-mock python3-packaging python3-pytest-timeout"
# The multi-host suite (tests/multihost): network namespaces and veth pairs.
packages="$packages iproute2"
# The fuzz harnesses (tests/fuzz, run by scripts/test.sh): clang, libFuzzer and
# the sanitizer runtimes (a recommendation of clang-14, so named here).
packages="$packages clang libclang-rt-14-dev"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
fi
# dcomm.tensorflow/dcomm.keras (tests labelled "tensorflow"): TensorFlow from
# PyPI into .venv-tf (bench/tf_venv.sh), made once and kept: about 1.5 minutes
# and 1.7 GB the first time. DCOMM_TF=0 skips it; without it (or without the
# network) those tests are skipped, saying why.
has_tf() {
    [ -x .venv-tf/bin/python ] && .venv-tf/bin/python -c \
        "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is None)"
}
if [ "${DCOMM_TF:-1}" != 0 ] && ! has_tf; then
    bench/tf_venv.sh .venv-tf ||
        echo "setup: TensorFlow could not be installed: the tensorflow tests will be skipped"
fi
build=${DCOMM_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="${CFLAGS:-} -Werror" "$@"
cmake --build "$build" -j"$(nproc)"
