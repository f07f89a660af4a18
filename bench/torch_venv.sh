#!/bin/sh
# Installs PyTorch as its users run it, the PyPI wheel (CPU execution through
# MKL and oneDNN), into a virtual environment for bench/train_compare.sh, which
# uses it when present. The wheel pulls CUDA libraries with it: about 5.5 GB.
# usage: bench/torch_venv.sh [DIR] (default: .venv-torch in the repository)
set -eu
cd "$(dirname "$0")/.."
dir=${1:-.venv-torch}
python=${PYTHON:-/usr/bin/python3}
"$python" -m venv --help >/dev/null 2>&1 ||
    { echo "torch_venv: $python has no venv module (apt-get install -y python3-venv)" >&2; exit 1; }
[ -x "$dir/bin/python" ] || "$python" -m venv "$dir"
"$dir/bin/pip" install --upgrade pip setuptools
"$dir/bin/pip" install torch
"$dir/bin/python" -c "import torch; print('torch_venv: torch', torch.__version__, 'in $dir')"
