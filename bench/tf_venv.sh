#!/bin/sh
# Installs TensorFlow as its users run it today, the CPU wheel from PyPI
# (tensorflow-cpu, which brings Keras 3), into a virtual environment for
# dcomm.tensorflow / dcomm.keras and the ctest label `tensorflow`, which skips
# when the environment is absent.
# usage: bench/tf_venv.sh [DIR] (default: .venv-tf in the repository)
set -eu
cd "$(dirname "$0")/.."
dir=${1:-.venv-tf}
python=${PYTHON:-/usr/bin/python3}
"$python" -m venv --help >/dev/null 2>&1 ||
    { echo "tf_venv: $python has no venv module (apt-get install -y python3-venv)" >&2; exit 1; }
[ -x "$dir/bin/python" ] || "$python" -m venv "$dir"
"$dir/bin/pip" install --upgrade pip setuptools
"$dir/bin/pip" install "${TF_PACKAGE:-tensorflow-cpu}"
# what Horovod's TensorFlow suites (ctest label compat) need besides TensorFlow
"$dir/bin/pip" install pytest pytest-timeout cloudpickle parameterized mock
"$dir/bin/python" -c "import tensorflow as tf, keras; print('tf_venv: tensorflow', tf.__version__, 'keras', keras.__version__, 'in $dir')"
