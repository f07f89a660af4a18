#!/bin/sh
# Runs gpu_colls (collectives on cudaMalloc'd buffers) under dlaunch and checks
# from the coordinator's info log which path served the device tensors:
#   nccl    DCOMM_TRANSPORTS unset: NCCL. NCCL takes one GPU per rank, so with
#           a single GPU this runs 1 rank (the 2-rank NCCL run needs 2 GPUs).
#   staged  nccl left out of DCOMM_TRANSPORTS (added to a '^' list, or to be
#           '^nccl'; an explicit list such as 'tcp' leaves it out already):
#           staging through pinned host memory, np ranks.
# Exits 77 (ctest's skip) where there is no GPU, saying so.
# usage: gpu_colls_test.sh <dlaunch> <gpu_colls> nccl|staged <np>
set -u
dlaunch=$1
prog=$2
mode=$3
np=$4
ngpus=$("$prog" probe) || { rc=$?; echo "$ngpus"; exit "$rc"; }
case $mode in
nccl)
    unset DCOMM_TRANSPORTS
    want="device tensors through NCCL"
    if [ "$ngpus" -lt "$np" ]; then
        echo "NOTE: $ngpus GPU(s): NCCL needs one per rank, running $ngpus rank(s) instead of $np"
        np=$ngpus
    fi
    ;;
staged)
    case ${DCOMM_TRANSPORTS:-} in
    "") export DCOMM_TRANSPORTS=^nccl ;;
    ^*) export DCOMM_TRANSPORTS="$DCOMM_TRANSPORTS,nccl" ;;
    *nccl*) echo "usage: staged runs cannot have nccl in DCOMM_TRANSPORTS" >&2; exit 2 ;;
    esac
    want="device tensors staged through pinned host memory"
    ;;
*)
    echo "usage: $0 <dlaunch> <gpu_colls> nccl|staged <np>" >&2
    exit 2
    ;;
esac
log=$(mktemp)
trap 'rm -f "$log"' EXIT
DCOMM_LOG_LEVEL=info timeout 300 "$dlaunch" -np "$np" "$prog" > "$log" 2>&1
rc=$?
grep -v " INFO " "$log"
grep "device tensors" "$log"
if [ "$rc" -ne 0 ]; then
    echo "FAIL: $mode, $np rank(s): exit $rc"
    exit 1
fi
n=$(grep -c "$want" "$log")
if [ "$n" -lt "$np" ]; then
    echo "FAIL: $mode: '$want' logged by $n of $np ranks: the device tensors took another path"
    exit 1
fi
echo "PASS: $mode, $np rank(s)"
