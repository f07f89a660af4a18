#!/bin/sh
# Installs PyTorch as its users run it, the PyPI wheel (CPU execution through
# MKL and oneDNN), into a virtual environment for bench/train_compare.sh, which
# uses it when present. The wheel pulls CUDA libraries with it: about 5.5 GB.
# usage: bench/torch_venv.sh [DIR] (default: .venv-torch in the repository)
set -eu
cd "$(dirname "$0")/.."
dir=${1:-.venv-torch}
exec bench/py_venv.sh "$dir" "import torch; print('torch_venv: torch', torch.__version__, 'in $dir')" torch
