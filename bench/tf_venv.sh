#!/bin/sh
# Installs TensorFlow as its users run it today, the CPU wheel from PyPI
# (tensorflow-cpu, which brings Keras 3), into a virtual environment for
# dcomm.tensorflow / dcomm.keras and the ctest label `tensorflow`, which skips
# when the environment is absent; with it what Horovod's TensorFlow suites
# import (tests/compat/horovod_tf.sh). About 1.6 GB.
# usage: bench/tf_venv.sh [DIR] (default: .venv-tf in the repository)
set -eu
cd "$(dirname "$0")/.."
dir=${1:-.venv-tf}
exec bench/py_venv.sh "$dir" \
    "import tensorflow as tf, keras; print('tf_venv: tensorflow', tf.__version__, 'keras', keras.__version__, 'in $dir')" \
    "${TF_PACKAGE:-tensorflow-cpu}" pytest pytest-timeout cloudpickle parameterized mock
