#!/bin/sh
# Multi-host suite on one machine: two network namespaces joined by a veth pair
# (10.77.0.1/24 and 10.77.0.2/24, both ends named dceth0, addresses only inside
# the namespaces) stand in for two hosts. dlaunch runs in the first namespace
# and starts 2 ranks in each through `--rsh 'ip netns exec'` (the host names are
# the namespace names), so same-namespace pairs use shm and cross pairs tcp.
# Checks: dcomm-info's per-peer transports, the collective matrix over tcp
# (and ucx when built) with the hierarchical allreduce and allgather forced and
# chosen by the cost model, and that a dead remote rank is reported by number
# and cause. Needs root and iproute2;
# otherwise it says why and exits 77 (ctest: skipped).
# usage: multihost_test.sh DLAUNCH DCOMM_INFO COLL_MATRIX ALLREDUCE_MATRIX ALLREDUCE_CHECK
set -u
DLAUNCH=$1
INFO=$2
COLL=$3
ARMAT=$4
CHECK=$5
SKIP=77
if [ "$(id -u)" != 0 ]; then
    echo "SKIP: the multi-host suite needs root (it creates network namespaces)"
    exit $SKIP
fi
if ! command -v ip >/dev/null 2>&1 || ! ip netns list >/dev/null 2>&1; then
    echo "SKIP: 'ip netns' is unavailable (install iproute2)"
    exit $SKIP
fi
NS1="dcmh1-$$"
NS2="dcmh2-$$"
TMP=$(mktemp -d)
cleanup() {
    ip netns del "$NS1" 2>/dev/null
    ip netns del "$NS2" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*"; echo "--- stdout"; tail -40 "$TMP/out"; echo "--- stderr"; tail -40 "$TMP/err"; exit 1; }
# Joins the two namespaces; veth names are per process until they are moved.
setup() {
    ip netns add "$NS1" && ip netns add "$NS2" &&
    ip link add "dcva$$" type veth peer name "dcvb$$" &&
    ip link set "dcva$$" netns "$NS1" && ip link set "dcvb$$" netns "$NS2" &&
    ip -n "$NS1" link set "dcva$$" name dceth0 && ip -n "$NS2" link set "dcvb$$" name dceth0 &&
    ip -n "$NS1" addr add 10.77.0.1/24 dev dceth0 && ip -n "$NS2" addr add 10.77.0.2/24 dev dceth0 &&
    ip -n "$NS1" link set dceth0 up && ip -n "$NS2" link set dceth0 up &&
    ip -n "$NS1" link set lo up && ip -n "$NS2" link set lo up
}
if ! setup 2>"$TMP/setup"; then
    echo "SKIP: cannot create network namespaces and a veth pair here: $(cat "$TMP/setup")"
    exit $SKIP
fi

# dlaunch -H ns1:2,ns2:2 from inside ns1 running $PROG; arguments: VAR=VALUE
# settings for the job (dlaunch passes DCOMM_* to the remote ranks).
run() {
    ip netns exec "$NS1" env DCOMM_TIMEOUT=60s "$@" "$DLAUNCH" -H "$NS1:2,$NS2:2" \
        --rsh 'ip netns exec' --ifname dceth0 --start-timeout 60 -- $PROG >"$TMP/out" 2>"$TMP/err"
    RC=$?
}
T0=$(date +%s)

# 1. Which transport serves each pair: by default the best network transport
#    across namespaces (ucx when its module loads, else tcp), and tcp when
#    DCOMM_TRANSPORTS says so; always shm within a namespace.
NET=tcp
"$INFO" | grep -q "^  ucx   loaded" && NET=ucx
for spec in "" "shm,tcp"; do
    PROG="$INFO --peers"; run DCOMM_TRANSPORTS="$spec"
    [ "$RC" -eq 0 ] || fail "dcomm-info (DCOMM_TRANSPORTS='$spec') exited with $RC"
    net=$NET; [ -n "$spec" ] && net=tcp
    for want in "[0] peer 1 host 0 transport shm" "[0] peer 2 host 1 transport $net" \
                "[0] peer 3 host 1 transport $net" "[2] peer 3 host 1 transport shm" \
                "[3] peer 0 host 0 transport $net" \
                "[3] job: rank 3 of 4, local rank 1 of 2, host 1 of 2"; do
        grep -qF -- "$want" "$TMP/out" || fail "dcomm-info: no '$want'"
    done
    echo "ok: dcomm-info shows shm within a namespace and $net across"
done

# From here on the network transport is tcp unless said otherwise.
# 2. The cost model picks hier for a big allreduce over 2 hosts x 2 ranks when
#    the network is slower than shared memory: the built-in link figures
#    (DCOMM_CALIBRATE=off). A veth pair inside one VM measures about as fast
#    as shm, and there the calibrated model may honestly prefer the ring.
PROG="$CHECK 8 2"; run DCOMM_TRANSPORTS=shm,tcp DCOMM_CALIBRATE=off DCOMM_LOG_LEVEL=debug
[ "$RC" -eq 0 ] || fail "allreduce_check exited with $RC"
grep -q "allreduce '.*': hier," "$TMP/err" || fail "the cost model did not choose hier"
echo "ok: auto selection chose hier"
#    Likewise the hierarchical allgather for small allgathers on COMM_WORLD
#    (fewer network steps), with the results checked by the matrix.
PROG="$COLL allgather"; run DCOMM_TRANSPORTS=shm,tcp DCOMM_CALIBRATE=off DCOMM_LOG_LEVEL=debug
[ "$RC" -eq 0 ] || fail "coll_matrix allgather (model's choice) exited with $RC"
grep -q "allgather 'ag\.0\.[a-z0-9]*\.7': hier," "$TMP/err" ||
    fail "the cost model did not choose the hierarchical allgather"
echo "ok: auto selection chose hier for allgather"

# 3. The allreduce matrix with hier forced and with the model's choice; the
#    collective matrix once, allreduce and allgather hier forced (its other
#    collectives: the model's; its allgathers on the process set of the
#    even ranks, one per host, run hier too);
#    the allreduce and allgather matrices with hier over ucx when that module
#    loads.
for tune in "allreduce:0-inf:hier" ""; do
    PROG="$ARMAT"; run DCOMM_TRANSPORTS=shm,tcp DCOMM_TUNE="$tune"
    [ "$RC" -eq 0 ] || fail "allreduce_matrix (DCOMM_TUNE='$tune') exited with $RC"
    echo "ok: allreduce matrix over tcp, DCOMM_TUNE='$tune' ($(($(date +%s) - T0)) s)"
done
PROG="$COLL"; run DCOMM_TRANSPORTS=shm,tcp DCOMM_TUNE="allreduce:0-inf:hier#allgather:0-inf:hier" \
    DCOMM_LOG_LEVEL=debug
[ "$RC" -eq 0 ] || fail "coll_matrix exited with $RC"
for comm in 0 1; do
    grep -q "allgather 'ag\.$comm\.float32\.1001': hier," "$TMP/err" ||
        fail "forced, the hierarchical allgather did not run on comm $comm"
done
echo "ok: collective matrix over tcp, hier allreduce and allgather ($(($(date +%s) - T0)) s)"
if [ "$NET" = ucx ]; then
    PROG="$ARMAT"; run DCOMM_TRANSPORTS=shm,ucx DCOMM_TUNE="allreduce:0-inf:hier"
    [ "$RC" -eq 0 ] || fail "allreduce_matrix over ucx exited with $RC"
    echo "ok: allreduce matrix over ucx, hier ($(($(date +%s) - T0)) s)"
    PROG="$COLL allgather"; run DCOMM_TRANSPORTS=shm,ucx DCOMM_TUNE="allgather:0-inf:hier"
    [ "$RC" -eq 0 ] || fail "coll_matrix allgather over ucx exited with $RC"
    echo "ok: allgather matrix over ucx, hier ($(($(date +%s) - T0)) s)"
else
    echo "note: the ucx module is not built here; no ucx pass"
fi

# 4. A remote rank that dies is named with its cause, and the job stops.
ip netns exec "$NS1" "$DLAUNCH" -H "$NS1:2,$NS2:2" --rsh 'ip netns exec' --ifname dceth0 \
    --grace 1 -- sh -c 'if [ $DCOMM_RANK = 3 ]; then kill -9 $$; fi; exec sleep 30' \
    >"$TMP/out" 2>"$TMP/err"
RC=$?
[ "$RC" -eq 137 ] || fail "dead remote rank: exit code $RC, expected 137"
grep -qF "dlaunch: rank 3 killed by signal 9 (Killed) on host $NS2" "$TMP/err" ||
    fail "dead remote rank not reported by number and cause"
echo "ok: a dead remote rank is reported"
echo "PASS: multi-host suite in $(($(date +%s) - T0)) s"
exit 0
