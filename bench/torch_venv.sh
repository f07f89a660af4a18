#!/bin/sh
# Installs today's PyTorch as its users get it, the newest wheel, into a virtual
# environment: bench/train_compare.sh uses it when present, and so do the
# python.torch2 tests (tests/python). The CPU wheels of PyTorch's own index are
# taken when that index answers (a few hundred MB); else PyPI's wheel, which pulls
# the CUDA libraries with it (about 5.5 GB). numpy and pytest come too, for the
# test suites; the venv does not see Debian's packages, so its torch is the one
# imported.
# usage: bench/torch_venv.sh [DIR] (default: .venv-torch in the repository)
#        TORCH_INDEX=URL picks another index; TORCH_INDEX=pypi forces PyPI.
set -eu
cd "$(dirname "$0")/.."
dir=${1:-.venv-torch}
python=${PYTHON:-/usr/bin/python3}
cpu_index=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
"$python" -m venv --help >/dev/null 2>&1 ||
    { echo "torch_venv: $python has no venv module (apt-get install -y python3-venv)" >&2; exit 1; }
[ -x "$dir/bin/python" ] || "$python" -m venv "$dir"
"$dir/bin/pip" install -q --upgrade pip setuptools
if [ "$cpu_index" != pypi ] && "$dir/bin/python" - "$cpu_index" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=10).close()
except Exception as exc:
    print("torch_venv: %s does not answer (%s): PyPI's torch instead" % (sys.argv[1], exc))
    sys.exit(1)
EOF
then
    "$dir/bin/pip" install --upgrade --index-url "$cpu_index" --extra-index-url https://pypi.org/simple torch
else
    "$dir/bin/pip" install --upgrade torch
fi
"$dir/bin/pip" install -q numpy pytest pytest-timeout cloudpickle mock packaging
"$dir/bin/python" -c "import torch; print('torch_venv: torch', torch.__version__, 'in $dir')"
