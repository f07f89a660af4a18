#!/bin/sh
# Timeline: a 2-rank step_bench run with DCOMM_TIMELINE writes Chrome-trace
# JSON that parses and has every phase (the MEMCPY ones where the fusion
# buffer is used); a job killed with SIGKILL in the middle
# of a run still leaves a file that parses.
# usage: timeline_test.sh DLAUNCH STEP_BENCH
set -u
dlaunch=$1 bench=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
check() { # file, phases...
    f=$1
    shift
    python3 - "$f" "$@" <<'PY' || return 1
import json, sys
events = json.load(open(sys.argv[1]))
names = {e.get("name") for e in events}
missing = [p for p in sys.argv[2:] if p not in names]
rows = {e["tid"] for e in events if e.get("ph") == "X"}
print(f"{sys.argv[1]}: {len(events)} events on {len(rows)} tensor rows; missing: {missing}")
sys.exit(1 if missing else 0)
PY
}
DCOMM_TIMELINE=$dir/t.json timeout 120 "$dlaunch" -np 2 "$bench" 3 1 || fail "step_bench failed"
check "$dir/t.json" NEGOTIATE QUEUE ALLREDUCE "rank 1 ready" || fail "timeline of a finished run"
# Horovod's mark cycles: CYCLE_START points, also set through its variable.
HOROVOD_TIMELINE_MARK_CYCLES=1 DCOMM_TIMELINE=$dir/c.json timeout 120 "$dlaunch" -np 2 "$bench" 3 1 ||
    fail "step_bench with cycle marks failed"
check "$dir/c.json" CYCLE_START NEGOTIATE ALLREDUCE || fail "no cycle marks"
# shm-direct fuses without a copy (segments); the ring algorithm copies small
# tensors into the fusion buffer, which the MEMCPY phases show.
DCOMM_TUNE=allreduce:0-inf:ring DCOMM_TIMELINE=$dir/r.json timeout 120 "$dlaunch" -np 2 "$bench" 3 1 ||
    fail "step_bench (ring) failed"
check "$dir/r.json" NEGOTIATE QUEUE MEMCPY_IN_FUSION ALLREDUCE MEMCPY_OUT_FUSION "rank 1 ready" ||
    fail "timeline of a finished run with the fusion buffer"
DCOMM_TIMELINE=$dir/k.json "$dlaunch" -np 2 "$bench" 100000 1 >/dev/null 2>&1 &
pid=$!
sleep 3
pkill -KILL -f "^$bench" 2>/dev/null
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
[ -s "$dir/k.json" ] || fail "no timeline from the killed run"
check "$dir/k.json" NEGOTIATE ALLREDUCE || fail "timeline of a killed run does not parse"
echo "timeline test passed"
