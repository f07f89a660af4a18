#!/bin/sh
# MPI's native collectives as dcomm algorithms: runs PROG under mpirun with
# every peer on the mpi transport and the "mpi" algorithm forced for allreduce,
# allgather and broadcast. The program checks its results (every dtype and op
# it covers); here we also check that the mpi algorithm really ran for each
# collective named in WANT (on COMM_WORLD and, for coll_matrix, on process
# sets, which get their own MPI communicators), and that float16 and bfloat16,
# which MPI lacks, were declined with an info line and run by dcomm instead.
# usage: mpi_native_test.sh MPIRUN NP PROG "COLL..." [PROG ARGS...]
set -u
mpirun=$1
np=$2
prog=$3
want=$4
shift 4
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; tail -30 "$dir/err" >&2; exit 1; }
"$mpirun" --allow-run-as-root --oversubscribe -np "$np" -x DCOMM_TRANSPORTS=mpi \
    -x DCOMM_TUNE='allreduce:0-inf:mpi#allgather:0-inf:mpi#broadcast:0-inf:mpi' \
    -x DCOMM_LOG_LEVEL=debug "$prog" "$@" > "$dir/out" 2> "$dir/err" ||
    fail "$prog under mpirun -np $np exited with $?"
tail -1 "$dir/out"
for coll in $want; do
    n=$(grep -c "DEBUG .* $coll '[^']*': mpi," "$dir/err")
    [ "$n" -gt 0 ] || fail "the mpi algorithm never ran a $coll"
    echo "ok: $n ${coll}s by MPI (lines over all ranks)"
done
for dt in float16 bfloat16; do
    n=$(grep -c " INFO .*mpi algorithm: declined for $dt" "$dir/err")
    [ "$n" -eq "$np" ] || fail "expected one info line per rank declining $dt, got $n"
done
echo "ok: float16 and bfloat16 declined with one info line per rank"
if [ "$(basename "$prog")" = rank_coll_matrix ]; then
    grep -q "communicator for a group" "$dir/err" ||
        fail "no MPI communicator was made for a process set"
    grep -q "DEBUG .* allgather 'ag\.1\.[^']*': mpi," "$dir/err" ||
        fail "the mpi algorithm did not run on a process set"
    echo "ok: process sets ran on their own MPI communicators"
fi
echo PASS
