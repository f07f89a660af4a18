#!/bin/sh
# Elastic re-init of a C program (elastic.c) through dlaunch's elastic driver.
# Hosts are two names of this machine: 127.0.0.1 runs the worker that starts as
# rank 0, localhost the other three. That worker dies at step 3 of round 1.
#   recover:  --min-np 2: its host is blacklisted, the three survivors report
#             DCOMM_ERR_PEER_LOST naming rank 0, re-init as ranks 0..2 of 3 in
#             round 2 (start rank 1 now rank 0) and finish every step; exit 0.
#   min:      --min-np 4 --elastic-timeout 2: the job fails naming --min-np.
#   reset:    --reset-limit 0: the job fails naming --reset-limit.
# Every run is under a deadline; no worker process is left behind.
# usage: elastic_test.sh DLAUNCH PROG recover|min|reset [kill|exit]
set -u
dlaunch=$1 prog=$2 mode=$3 how=${4:-kill}
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
marker="ELASTIC_TEST_ID=$$.$(date +%s%N)"
case $mode in
recover) flags="--min-np 2" ;;
min) flags="--min-np 4 --elastic-timeout 2" ;;
reset) flags="--min-np 2 --reset-limit 0" ;;
*) echo "unknown mode $mode" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
env "$marker" DCOMM_TIMEOUT=20s timeout 90 "$dlaunch" -H 127.0.0.1:1,localhost:3 $flags \
    "$prog" 8 0 3 "$how" >"$out" 2>"$err"
rc=$?
cat "$out"; cat "$err" >&2
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$rc" -ne 124 ] || fail "the job hung (timeout)"
grep -q "round 1: 4 workers" "$err" || fail "no first round of 4 workers"
grep -q "(started as rank 0) on host 127.0.0.1 failed: " "$err" || fail "dlaunch did not name the failed worker"
case $mode in
recover)
    [ "$rc" -eq 0 ] || fail "dlaunch exited $rc"
    grep -q "round 2: 3 workers" "$err" || fail "no second round of 3 workers"
    for s in 1 2 3; do
        grep -q "^\[$s\] start_rank $s: peer lost at step 3: .*rank 0 " "$out" ||
            fail "start rank $s did not report the lost rank 0"
        r=$((s - 1))
        grep -q "^\[$s\] start_rank $s: round 2: rank $r of 3 from step 3" "$out" ||
            fail "start rank $s is not rank $r of 3 in round 2"
        grep -q "^\[$s\] start_rank $s: done: rank $r of 3, 8 steps" "$out" ||
            fail "start rank $s did not finish"
    done
    ;;
min)
    [ "$rc" -ne 0 ] || fail "dlaunch exited 0"
    grep -q "only 3 workers for 2 s (--elastic-timeout), fewer than --min-np 4" "$err" ||
        fail "no --min-np failure"
    ;;
reset)
    [ "$rc" -ne 0 ] || fail "dlaunch exited 0"
    grep -q "the job was reset 1 times, more than --reset-limit 0" "$err" ||
        fail "no --reset-limit failure"
    ;;
esac
sleep 0.5
grep -lsa "$marker" /proc/[0-9]*/environ | grep -v "/proc/$$/" | grep -q . &&
    fail "worker processes left behind"
echo "elastic $mode ($how) passed"
