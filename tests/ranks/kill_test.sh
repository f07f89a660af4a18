#!/bin/sh
# Runs kill.c through dlaunch and checks: dlaunch exits non-zero naming the
# killed rank; every survivor got DCOMM_ERR_PEER_LOST for the pending call and
# DCOMM_ERR_SHUT_DOWN for the next one, both naming the killed rank (kill.c
# checks that); no rank process and no /dev/shm file is left behind.
# usage: kill_test.sh DLAUNCH KILL_PROG NP [TRANSPORTS]
set -u
dlaunch=$1 prog=$2 np=$3
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
# dcomm's shared memory is memfd-based; any /dev/shm file of ours would carry
# "dcomm" in its name (other programs' files, e.g. Python's sem.mp-*, are not ours).
shm_before=$(ls /dev/shm | grep -c dcomm)
# A marker in the ranks' environment tells our ranks from those of tests
# running in parallel.
marker="DCOMM_KILL_TEST_ID=$$.$(date +%s%N)"
env "$marker" DCOMM_TRANSPORTS="${4:-}" DCOMM_TIMEOUT=10s timeout 60 "$dlaunch" -np "$np" "$prog" \
    >"$out" 2>"$err"
rc=$?
cat "$out"; cat "$err" >&2
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$rc" -ne 0 ] || fail "dlaunch exited 0"
[ "$rc" -ne 124 ] || fail "the job hung (timeout)"
last=$((np - 1))
grep -q "rank $last killed by signal 9" "$err" || fail "dlaunch did not name rank $last"
survivors=$(grep -c "PEER_LOST\|a peer rank was lost" "$out")
# The failing call: PEER_LOST when it was pending, SHUT_DOWN when submitted
# after this rank's coordinator had already stopped; kill.c checks the cause.
[ "$(grep -Ec ': (a peer rank was lost|dcomm has shut down) after' "$out")" -eq "$last" ] ||
    fail "expected $last survivors to report the lost rank, output above"
[ "$(grep -c 'next call: dcomm has shut down' "$out")" -eq "$last" ] ||
    fail "later calls did not fail with SHUT_DOWN"
sleep 0.5
grep -lsa "$marker" /proc/[0-9]*/environ | grep -v "/proc/$$/" | grep -q . &&
    fail "rank processes left behind"
[ "$(ls /dev/shm | grep -c dcomm)" -le "$shm_before" ] || fail "dcomm files left in /dev/shm"
echo "kill test passed ($survivors survivor lines)"
