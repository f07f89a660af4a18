#!/bin/sh
# Horovod 0.28.1's own TensorFlow suites against dcomm.tensorflow/dcomm.keras:
# one pytest run of a whole file under dlaunch. The suite lives outside the
# project (../shared/compat/horovod-0.28.1) and is run from a temporary copy in
# which only the import lines change (horovod.X -> dcomm.X; horovod.common.util's
# version helper -> dcomm.tensorflow.util). Exit 77 (ctest: skipped) when the
# suite or the TensorFlow virtual environment (bench/tf_venv.sh) is absent.
# usage: horovod_tf.sh NP DLAUNCH LIBDCOMM PYTHON FILE [pytest args...]
#   FILE: test_tensorflow.py or test_tensorflow2_keras.py
preload=${LD_PRELOAD:-}
unset LD_PRELOAD
set -eu
np=$1 dlaunch=$2 lib=$3 python=$4 file=$5
shift 5
top=$(cd "$(dirname "$0")/../.." && pwd)
suite=${DCOMM_HOROVOD_COMPAT:-$top/../shared/compat/horovod-0.28.1}
if [ ! -f "$suite/test/parallel/$file" ]; then
    echo "compat: skipped: Horovod's $file is not in $suite (set DCOMM_HOROVOD_COMPAT)"
    exit 77
fi
if [ ! -x "$python" ]; then
    echo "compat: skipped: no TensorFlow environment at $python (make it with bench/tf_venv.sh)"
    exit 77
fi
for m in tensorflow keras pytest cloudpickle mock packaging parameterized; do
    if ! "$python" -c "import $m" 2>/dev/null; then
        echo "compat: skipped: $python lacks the module '$m' the suite needs"
        exit 77
    fi
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/parallel" "$work/utils" "$work/bin"
for f in "$file" base_test_tensorflow.py; do
    sed -e 's/^\(from\|import\) horovod\.common\.util /\1 dcomm.tensorflow.util /' \
        -e 's/^\(from\|import\) horovod\.\(tensorflow\|keras\)/\1 dcomm.\2/' \
        "$suite/test/parallel/$f" > "$work/parallel/$f"
done
cp "$suite/test/utils/common.py" "$work/utils/"
ln -s "$dlaunch" "$work/bin/dlaunch"
if [ -n "$preload" ]; then
    printf '#!/bin/sh\nLD_PRELOAD=%s exec %s "$@"\n' "$preload" "$python" > "$work/bin/python"
    chmod +x "$work/bin/python"
    python=$work/bin/python
fi
export PATH="$work/bin:$PATH" PYTHON="$python" DCOMM_LIBRARY="$lib"
export PYTHONPATH="$top/plugins/python:$suite" TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
# Each rank's TensorFlow keeps to one thread for its ops (ranks share the
# machine's cores), and a test that hangs is stopped with every thread's stack.
export TF_NUM_INTRAOP_THREADS=${TF_NUM_INTRAOP_THREADS:-1}
cd "$work/parallel"
# shellcheck disable=SC2016
dlaunch -np "$np" -- /bin/sh -c 'export HOROVOD_RANK=$DCOMM_RANK HOROVOD_SIZE=$DCOMM_SIZE
    export HOROVOD_LOCAL_RANK=$DCOMM_LOCAL_RANK HOROVOD_LOCAL_SIZE=$DCOMM_LOCAL_SIZE
    exec "$PYTHON" -m pytest -p no:cacheprovider -q -rfEs --timeout=300 --timeout-method=thread "$@"' sh "$file" "$@"
