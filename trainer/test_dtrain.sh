#!/bin/sh
# dtrain smoke test (ctest, label "ranks"): two ranks train 2 short epochs on a
# subset; the same run is then repeated with rank 1 killed (SIGKILL) in the
# middle of epoch 2, which must stop the job with a message naming rank 1, and
# `--resume` from the epoch-1 checkpoint must end bit-identical to the
# uninterrupted run (same final checkpoint, same accuracy), and so must a run
# with --elastic (commits, no failure).
# usage: test_dtrain.sh DLAUNCH DTRAIN
set -u
dlaunch=$1 dtrain=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
args="--limit 1536 --test-limit 512 --epochs 2 --batch-size 32 --progress lines --log-every 0"

# 1. the reference run
timeout 120 "$dlaunch" -np 2 "$dtrain" $args --out-dir "$work/a" --plot "$work/a.png" \
    >"$work/a.out" 2>&1
rc=$?
cat "$work/a.out"
[ "$rc" -eq 0 ] || fail "uninterrupted run exited $rc"
acc_a=$(sed -n 's/.*final test accuracy \([0-9.]*\).*/\1/p' "$work/a.out")
[ -n "$acc_a" ] || fail "no final accuracy line"
awk -v a="$acc_a" 'BEGIN { exit !(a > 0.55) }' || fail "accuracy $acc_a is not above 0.55"
[ "$(wc -l <"$work/a/metrics.csv")" -eq 3 ] || fail "metrics.csv should have a header and 2 rows"
[ -s "$work/a.png" ] || fail "--plot wrote no PNG"

# 2. the same run, rank 1 killed during epoch 2
timeout 120 "$dlaunch" -np 2 "$dtrain" $args --out-dir "$work/b" >"$work/b.out" 2>&1 &
job=$!
victim=""
i=0
while [ $i -lt 1200 ]; do
    # rank 1 is the dlaunch child whose environment says DCOMM_RANK=1
    if [ -z "$victim" ]; then
        for p in $(pgrep -P "$job" 2>/dev/null; for c in $(pgrep -P "$job"); do pgrep -P "$c"; done); do
            tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx 'DCOMM_RANK=1' && victim=$p
        done
    fi
    if [ -n "$victim" ] && grep -q "epoch 2/2 step" "$work/b.out"; then
        kill -KILL "$victim"
        break
    fi
    sleep 0.1
    i=$((i + 1))
done
wait "$job"
rc=$?
cat "$work/b.out"
[ -n "$victim" ] || fail "never found rank 1's process"
[ "$rc" -ne 0 ] || fail "the job exited 0 although rank 1 was killed"
[ "$rc" -ne 124 ] || fail "the job hung after rank 1 was killed"
grep -q "rank 1" "$work/b.out" || fail "no message names rank 1"
grep -q "final test accuracy" "$work/b.out" && fail "the killed run finished anyway"
[ -f "$work/b/checkpoint.dtc" ] || fail "no epoch-1 checkpoint to resume from"

# 3. resume: the same end as the uninterrupted run, bit for bit
timeout 120 "$dlaunch" -np 2 "$dtrain" $args --out-dir "$work/b" --resume >"$work/c.out" 2>&1
rc=$?
cat "$work/c.out"
[ "$rc" -eq 0 ] || fail "resumed run exited $rc"
grep -q "resumed after epoch 1" "$work/c.out" || fail "did not resume after epoch 1"
acc_c=$(sed -n 's/.*final test accuracy \([0-9.]*\).*/\1/p' "$work/c.out")
[ "$acc_c" = "$acc_a" ] || fail "resumed accuracy $acc_c differs from uninterrupted $acc_a"
cmp "$work/a/checkpoint.dtc" "$work/b/checkpoint.dtc" ||
    fail "final checkpoints differ: the resume was not bit-exact"

# 4. --elastic without a failure: its commits and hosts checks change nothing
timeout 120 "$dlaunch" -np 2 "$dtrain" $args --elastic --commit-every 3 --out-dir "$work/e" \
    >"$work/e.out" 2>&1
rc=$?
cat "$work/e.out"
[ "$rc" -eq 0 ] || fail "--elastic run exited $rc"
[ "$(grep -c "elastic: commit at" "$work/e.out")" -ge 10 ] || fail "--elastic made no commits"
cmp "$work/a/checkpoint.dtc" "$work/e/checkpoint.dtc" ||
    fail "--elastic without a failure did not end bit-identical to the plain run"
echo "dtrain test passed: accuracy $acc_a, resume bit-exact, --elastic bit-exact"
