#!/bin/sh
# Training speed, in one run on this machine:
#  1. dtrain (np=1) against PyTorch (bench/train_compare_torch.py) on the same
#     model, batch size and thread count, each timed over STEPS steps after 3
#     warm-up steps: images/s of each and the ratio (target: dtrain >= 1.5x);
#  2. dtrain at np=1 and np=2, one thread per rank: images/s and the scaling
#     efficiency (target: np=2 >= 1.8x np=1).
# Runs are interleaved and repeated REPS times; medians are printed, since the
# machine is shared. Besides wall-clock images/s, each side reports images per
# second of its process's CPU time over the same steps (all its threads), which
# other jobs on a shared machine disturb far less; the 1-thread comparison is
# printed for both. Both sides run with the glibc malloc setting of DESIGN.md.
# PyTorch is the PyPI wheel from .venv-torch when bench/torch_venv.sh made it
# (or PYTHON names a python with torch); else Debian's python3-torch, the
# fallback, run with the system BLAS (OpenBLAS).
# The host's phases (bench/host_probe.c, bench/compare): each run starts once
# host_probe is within 2.5x its best of this session (waiting up to a minute)
# and is taken again, up to twice, when the probe after it is not; the same
# rule for every run, and the report says how many it retook. GUARD=0: off.
# usage: bench/train_compare.sh [BUILD_DIR] (env: STEPS=100 BATCH=64 THREADS=1 REPS=5 PYTHON GUARD=1)
set -eu
cd "$(dirname "$0")/.."
build=${1:-${DCOMM_BUILD_DIR:-build}}
steps=${STEPS:-100} batch=${BATCH:-64} threads=${THREADS:-1} reps=${REPS:-5} guard=${GUARD:-1}
if [ -n "${PYTHON:-}" ]; then
    python=$PYTHON
elif [ -x .venv-torch/bin/python ]; then
    python=.venv-torch/bin/python
else
    python=/usr/bin/python3
    echo "train_compare: no .venv-torch: comparing with Debian's python3-torch (bench/torch_venv.sh installs the PyPI wheel)"
fi
dlaunch=$build/launcher/dlaunch dtrain=$build/trainer/dtrain probe=$build/bench/host_probe
[ -x "$dtrain" ] || { echo "train_compare: no $dtrain (build first: ./scripts/setup.sh)" >&2; exit 1; }
[ "$guard" = 0 ] || [ -x "$probe" ] || { echo "train_compare: no $probe (build first, or GUARD=0)" >&2; exit 1; }
"$python" -c "import torch" 2>/dev/null ||
    { echo "train_compare: $python has no torch (bench/torch_venv.sh, or apt-get install python3-torch)" >&2; exit 1; }
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296
export OMP_NUM_THREADS=$threads
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ips() { sed -n 's/.*: \([0-9.]*\) images\/s.*/\1/p' "$1" | tail -1; }
cpu_ips() { sed -n 's/.* \([0-9.]*\) images per CPU second.*/\1/p' "$1" | tail -1; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
run_dtrain() { # np threads out
    "$dlaunch" -np "$1" "$dtrain" --bench "$steps" --batch-size "$batch" --threads "$2" \
        --progress off >"$3" 2>&1 || { cat "$3" >&2; exit 1; }
}
run_torch() { # out
    "$python" bench/train_compare_torch.py --steps "$steps" --batch-size "$batch" \
        --threads "$threads" >"$1" 2>&1 || { cat "$1" >&2; exit 1; }
}
best="" runs=0 retaken=0 waited=0
calm() { # the host in its usual phase: host_probe within 2.5x its best so far
    us=$("$probe") || exit 1
    best=$(awk -v a="$us" -v b="${best:-$us}" 'BEGIN { print (a < b) ? a : b }')
    awk -v a="$us" -v b="$best" 'BEGIN { exit !(a <= 2.5 * b) }'
}
guarded() { # command...: see the top
    [ "$guard" = 0 ] && { "$@"; return; }
    [ -n "$best" ] || for i in 1 2 3 4 5; do calm || :; done
    runs=$((runs + 1)) attempt=0
    while :; do
        w=0
        while ! calm && [ $w -lt 60 ]; do sleep 1; w=$((w + 1)); done
        waited=$((waited + w))
        "$@"
        if calm || [ $attempt -ge 2 ]; then return 0; fi
        attempt=$((attempt + 1)) retaken=$((retaken + 1))
    done
}

echo "train_compare: $steps steps, batch $batch per rank, $threads thread(s), $reps repetitions"
"$python" -c "import torch; print('\n'.join(l for l in torch.__config__.show().splitlines() if 'BLAS' in l or 'MKL-DNN' in l or 'oneDNN' in l))" |
    sed 's/^ *//; s/, CXX_COMPILER=.*USE_CUDA/ ... USE_CUDA/; s/^/torch config: /' | cut -c1-200
: >"$tmp/torch" ; : >"$tmp/dt1" ; : >"$tmp/np1" ; : >"$tmp/np2" ; : >"$tmp/torch.cpu" ; : >"$tmp/dt1.cpu"
r=0
while [ $r -lt "$reps" ]; do
    guarded run_torch "$tmp/t.out"
    [ $r -eq 0 ] && head -1 "$tmp/t.out"
    ips "$tmp/t.out" >>"$tmp/torch"
    cpu_ips "$tmp/t.out" >>"$tmp/torch.cpu"
    guarded run_dtrain 1 "$threads" "$tmp/d.out"
    ips "$tmp/d.out" >>"$tmp/dt1"
    cpu_ips "$tmp/d.out" >>"$tmp/dt1.cpu"
    guarded run_dtrain 1 1 "$tmp/d.out"
    ips "$tmp/d.out" >>"$tmp/np1"
    guarded run_dtrain 2 1 "$tmp/d.out"
    ips "$tmp/d.out" >>"$tmp/np2"
    echo "  rep $((r + 1)): torch $(tail -1 "$tmp/torch")  dtrain $(tail -1 "$tmp/dt1")  np1 $(tail -1 "$tmp/np1")  np2 $(tail -1 "$tmp/np2") images/s; per CPU second: torch $(tail -1 "$tmp/torch.cpu")  dtrain $(tail -1 "$tmp/dt1.cpu")"
    r=$((r + 1))
done
t=$(median <"$tmp/torch") d=$(median <"$tmp/dt1") n1=$(median <"$tmp/np1") n2=$(median <"$tmp/np2")
tc=$(median <"$tmp/torch.cpu") dc=$(median <"$tmp/dt1.cpu")
if [ "$guard" = 0 ]; then
    echo "host-phase guard off (GUARD=0)"
else
    echo "host-phase guard: host_probe best $best us; $retaken of $runs runs retaken; $waited s waited for the host"
fi
awk -v t="$t" -v d="$d" -v n1="$n1" -v n2="$n2" -v th="$threads" -v tc="$tc" -v dc="$dc" 'BEGIN {
    printf "PyTorch  %8.1f images/s (%d thread(s))\n", t, th
    printf "dtrain   %8.1f images/s (np=1, %d thread(s))  ratio dtrain/PyTorch %.2fx (target >= 1.5x)\n", d, th, d / t
    printf "per CPU second: PyTorch %.1f, dtrain %.1f images  ratio %.2fx\n", tc, dc, dc / tc
    printf "dtrain   %8.1f images/s np=1, %8.1f images/s np=2 (1 thread each): speed-up %.2fx, scaling efficiency %.0f%% (target >= 1.8x, 90%%)\n", n1, n2, n2 / n1, 50 * n2 / n1
}'
