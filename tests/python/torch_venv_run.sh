#!/bin/sh
# Runs a test with today's PyPI torch: the Python of bench/torch_venv.sh's
# venv replaces the word VENV_PYTHON among the command's arguments. Exits 77
# (ctest: skipped), saying why, when that venv is absent.
# usage: torch_venv_run.sh VENV_DIR COMMAND [ARGS...]
set -eu
venv=$1
shift
py=$venv/bin/python
if [ ! -x "$py" ] || ! "$py" -c "import torch" 2>/dev/null; then
    echo "skipped: no venv with torch at $venv; bench/torch_venv.sh makes it (PyPI's newest" \
         "torch: about 5.5 GB with its CUDA libraries, 3 minutes here)"
    exit 77
fi
"$py" -c "import torch; print('torch', torch.__version__, 'from $venv')"
n=$#
for a in "$@"; do
    [ "$a" = VENV_PYTHON ] && a=$py
    set -- "$@" "$a"
done
shift "$n"
exec "$@"
