#!/bin/sh
# Runs stall.c with DCOMM_STALL_WARNING=1s and DCOMM_STALL_SHUTDOWN=3s and
# checks: rank 0 warns naming tensor x and rank 1 within the warning time plus
# a cycle (the warning's arrival is timed against "submitted x"), and every
# rank's wait fails with DCOMM_ERR_TIMEOUT naming x (checked by the program).
# usage: stall_test.sh DLAUNCH STALL_PROG NP [TRANSPORTS]
set -u
dlaunch=$1 prog=$2 np=$3
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s.%N)
DCOMM_TRANSPORTS=${4:-} DCOMM_STALL_WARNING=1s DCOMM_STALL_SHUTDOWN=3s timeout 60 \
    "$dlaunch" -np "$np" "$prog" 3 2>&1 | while IFS= read -r line; do
        printf '%s %s\n' "$(date +%s.%N)" "$line"
    done >"$log"
cat "$log"
fail() { echo "FAIL: $*" >&2; exit 1; }
grep -q "dlaunch: rank .* exited with code" "$log" && fail "a rank failed its checks"
t_sub=$(awk '/rank 0: submitted x/ {print $1; exit}' "$log")
t_warn=$(awk '/stall:.*'"'"'x'"'"' waits for rank 1/ {print $1; exit}' "$log")
[ -n "$t_sub" ] || fail "rank 0 did not start"
[ -n "$t_warn" ] || fail "no stall warning naming x and rank 1"
awk -v a="$t_sub" -v b="$t_warn" 'BEGIN { d = b - a; printf "warning after %.2f s\n", d;
    exit !(d >= 0.9 && d <= 1.6) }' || fail "the warning came outside 1 s + a cycle"
[ "$(grep -c 'wait returned operation timed out' "$log")" -eq "$np" ] || fail "not every rank timed out"
echo "stall test passed (started $start)"
