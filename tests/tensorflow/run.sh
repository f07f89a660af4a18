#!/bin/sh
# Runs this directory's pytest suite under dlaunch with TensorFlow's interpreter.
# Exit 77 (ctest: skipped) when that interpreter or TensorFlow is missing.
# usage: run.sh NP DLAUNCH PYTHON [pytest args...]
set -eu
np=$1 dlaunch=$2 python=$3
shift 3
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -x "$python" ] || ! "$python" -c "import tensorflow, keras, pytest" 2>/dev/null; then
    echo "tensorflow tests skipped: no TensorFlow+pytest at $python (make it with bench/tf_venv.sh)"
    exit 77
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2} TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-1}
exec "$dlaunch" -np "$np" "$python" -m pytest -q -rs -p no:cacheprovider --rootdir "$here" "$here" "$@"
