#!/bin/sh
# pip install of the repository root into a fresh virtual environment, as a
# user does it, then what the user gets: dlaunch and dcomm-info on the venv's
# PATH, libdcomm and its modules from the wheel (no DCOMM_LIBRARY, no
# LD_LIBRARY_PATH), a 2-rank job of the installed package, the '[torch]'
# extra, the version check at import and DCOMM_LIBRARY still overriding.
# The venv sees the system's packages (numpy; Debian's torch for '[torch]'),
# so only the build requirement (scikit-build-core) comes from PyPI: exits 77
# (skipped) when PyPI cannot be reached for it.
# usage: pip_test.sh SOURCE_DIR BUILD_LIBDCOMM [PYTHON]
set -eu
src=$1 build_lib=$2 python=${3:-/usr/bin/python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
unset DCOMM_LIBRARY LD_LIBRARY_PATH PYTHONPATH
"$python" -m venv --system-site-packages "$work/venv" ||
    { echo "pip install test skipped: $python -m venv failed (python3-venv)"; exit 77; }
venv=$work/venv
if ! "$venv/bin/pip" download -q --no-deps -d "$work/probe" "scikit-build-core>=0.10" \
        >"$work/probe.log" 2>&1; then
    cat "$work/probe.log"
    echo "pip install test skipped: scikit-build-core cannot be had from PyPI (offline?)"
    exit 77
fi
extra=""
"$venv/bin/python" -c "import torch" 2>/dev/null && extra="[torch]"
"$venv/bin/pip" install -q "$src$extra" >"$work/pip.log" 2>&1 ||
    { cat "$work/pip.log"; fail "pip install $src$extra failed"; }
export PATH="$venv/bin:$PATH"
cd "$work"          # not the source tree: the installed package is the one imported
[ "$(command -v dlaunch)" = "$venv/bin/dlaunch" ] || fail "dlaunch on PATH is $(command -v dlaunch)"
[ "$(command -v dcomm-info)" = "$venv/bin/dcomm-info" ] || fail "dcomm-info not in the venv"
pkg=$("$venv/bin/python" -c "import dcomm, os; print(os.path.dirname(dcomm.__file__))")
case $pkg in "$venv"/*) ;; *) fail "dcomm imported from $pkg, not the venv" ;; esac
# dcomm-info runs the bundled program, which finds the bundled library and
# every bundled module next to it.
dcomm-info >"$work/info.txt" || fail "dcomm-info failed"
for m in "$pkg"/lib/libdcomm-*.so; do
    [ -e "$m" ] || continue
    name=${m##*/libdcomm-}
    grep -q "^  ${name%.so} .*$pkg/.*/libdcomm-$name" "$work/info.txt" ||
        { cat "$work/info.txt"; fail "dcomm-info does not list $m"; }
done
echo "pip install test: modules in the wheel:" "$pkg"/lib/libdcomm-*.so
# A 2-rank job of the installed package.
cat >"$work/job.py" <<'PY'
import sys
import numpy as np
import dcomm
from dcomm import _lib
venv = sys.argv[1]
assert _lib.LIBRARY_PATH.startswith(venv), _lib.LIBRARY_PATH
dcomm.init()
total = dcomm.allreduce(np.full(3, dcomm.rank() + 1.0), op=dcomm.Sum, name="pip.x")
assert total.tolist() == [3.0] * 3, total
if sys.argv[2:] == ["torch"]:
    import torch, torch.distributed as dist
    import dcomm.torch
    dist.init_process_group("dcomm")
    t = torch.full((4,), float(dist.get_rank() + 1))
    dist.all_reduce(t)
    assert t.tolist() == [3.0] * 4, t
    dist.destroy_process_group()
print("rank %d: installed dcomm %s works" % (dcomm.rank(), dcomm.__version__))
PY
dlaunch -np 2 "$venv/bin/python" "$work/job.py" "$venv" ${extra:+torch} ||
    fail "dlaunch -np 2 with the installed package failed"
# The version check: a package whose version is not the library's refuses to load.
cp -r "$pkg" "$work/other"
mkdir "$work/pp" && mv "$work/other" "$work/pp/dcomm"
echo '__version__ = "999.0.0"' >"$work/pp/dcomm/_version.py"
if PYTHONPATH=$work/pp "$venv/bin/python" -c "import dcomm" 2>"$work/err.txt"; then
    fail "a package of version 999.0.0 imported with libdcomm $("$venv/bin/python" -c \
        "import dcomm; print(dcomm.version())")"
fi
grep -q "version 999.0.0 but the libdcomm it loaded .* is version" "$work/err.txt" ||
    { cat "$work/err.txt"; fail "no clear version error"; }
# DCOMM_LIBRARY overrides the bundled library.
got=$(DCOMM_LIBRARY=$build_lib "$venv/bin/python" -c "from dcomm import _lib; print(_lib.LIBRARY_PATH)")
[ "$(readlink -f "$got")" = "$(readlink -f "$build_lib")" ] ||
    fail "DCOMM_LIBRARY=$build_lib loaded $got"
echo "pip install test: passed"
