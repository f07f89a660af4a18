#!/bin/sh
# Makes (or updates) a Python virtual environment with PyPI packages; the
# helper of bench/torch_venv.sh and bench/tf_venv.sh.
# usage: bench/py_venv.sh DIR CHECK PACKAGE... (CHECK: Python code run at the end)
set -eu
dir=$1 check=$2
shift 2
python=${PYTHON:-/usr/bin/python3}
"$python" -m venv --help >/dev/null 2>&1 ||
    { echo "py_venv: $python has no venv module (apt-get install -y python3-venv)" >&2; exit 1; }
[ -x "$dir/bin/python" ] || "$python" -m venv "$dir"
"$dir/bin/pip" install --upgrade pip setuptools
"$dir/bin/pip" install "$@"
"$dir/bin/python" -c "$check"
