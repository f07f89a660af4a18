#!/bin/sh
# dtrain --elastic through dlaunch's elastic driver (ctest, labels "ranks" and
# "fault"): three workers, two on host localhost and one on 127.0.0.1 (two
# names of this machine). After a few commits of epoch 1 the worker on
# 127.0.0.1 is killed (SIGKILL); the survivors must go back to rank 0's last
# commit (the one it printed last, none lost) and carry on at np=2. The
# discovery script then offers a third slot on localhost: the new worker joins
# at the survivors' next commit (size 3 again), and the job finishes 2 epochs.
# Prints the time from the kill to the first completed step after it.
# usage: test_dtrain_elastic.sh DLAUNCH DTRAIN [DTRAIN_ARGS...]  (they override the
# defaults, e.g. "--limit 60000 --batch-size 64" for a measurement; the kill comes
# after rank 0's KILL_AFTER_COMMITS-th commit of epoch 1, default 3)
set -u
dlaunch=$1 dtrain=$2
shift 2
kill_after=${KILL_AFTER_COMMITS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
marker="DTRAIN_ELASTIC_TEST_ID=$$.$(date +%s%N)"
cat >"$work/hosts.sh" <<SH
#!/bin/sh
if [ -e "$work/add" ]; then echo localhost:3; else echo localhost:2; fi
echo 127.0.0.1:1
SH
chmod +x "$work/hosts.sh"
args="--elastic --commit-every 4 --limit 6144 --test-limit 1024 --epochs 2 --batch-size 32"
args="$args --progress off --out-dir $work/out"
# shellcheck disable=SC2086
env "$marker" DCOMM_TIMEOUT=20s timeout 600 "$dlaunch" -np 3 --min-np 2 --max-np 3 \
    --host-discovery-script "$work/hosts.sh" --discovery-interval 0.2 \
    "$dtrain" $args "$@" >"$work/out.txt" 2>"$work/err.txt" &
job=$!

# the worker on 127.0.0.1: the process with the marker and that HOROVOD_HOSTNAME
victim="" killed_at="" i=0
while [ $i -lt 1800 ]; do
    if [ -z "$victim" ]; then
        for f in $(grep -lsa "$marker" /proc/[0-9]*/environ); do
            tr '\0' '\n' <"$f" 2>/dev/null | grep -qx 'HOROVOD_HOSTNAME=127.0.0.1' &&
                tr '\0' '\n' <"$f" 2>/dev/null | grep -q '^DCOMM_ELASTIC_WORKER=' &&
                victim=$(echo "$f" | cut -d/ -f3)
        done
    fi
    # mid-epoch 1: after rank 0's kill_after-th commit
    if [ -n "$victim" ] &&
        [ "$(grep -c 'elastic: commit at epoch 1 ' "$work/out.txt")" -ge "$kill_after" ]; then
        killed_at=$(date +%s.%N)
        kill -KILL "$victim"
        break
    fi
    sleep 0.05
    i=$((i + 1))
done
[ -n "$killed_at" ] || { kill "$job"; wait "$job"; cat "$work/out.txt" "$work/err.txt"; fail "never killed the worker on 127.0.0.1"; }
# once the survivors have re-formed at np=2, a third slot appears
i=0
while [ $i -lt 1200 ] && ! grep -q "round 2: 2 workers" "$work/err.txt"; do
    sleep 0.05
    i=$((i + 1))
done
touch "$work/add"
wait "$job"
rc=$?
cat "$work/out.txt"; cat "$work/err.txt" >&2
[ "$rc" -ne 124 ] || fail "the job hung (timeout)"
[ "$rc" -eq 0 ] || fail "dlaunch exited $rc"
grep -q "round 1: 3 workers" "$work/err.txt" || fail "no first round of 3 workers"
grep -q "on host 127.0.0.1 failed: " "$work/err.txt" || fail "dlaunch did not name the failed worker"
grep -q "round 2: 2 workers" "$work/err.txt" || fail "no second round of 2 workers"
grep -q "round 3: 3 workers" "$work/err.txt" || fail "no third round of 3 workers (the added slot)"

# no lost commit: rank 0 goes back to the last commit it printed before the failure
r0=$(grep -e "dtrain: elastic: commit at" -e "dtrain: elastic: rank 0 of 3: .*back to the commit" \
    "$work/out.txt")
last=$(echo "$r0" | sed -n '/back to the commit/q;s/.*commit at \(epoch [0-9]* image [0-9]*\)$/\1/p' | tail -n 1)
back=$(echo "$r0" | sed -n 's/.*rank 0 of 3: .*back to the commit at \(epoch [0-9]* image [0-9]*\)$/\1/p' | head -n 1)
{ [ -n "$last" ] && [ "$last" = "$back" ]; } ||
    fail "rank 0 went back to '$back', its last commit was '$last'"
grep -q "round 2: 2 ranks from $back\$" "$work/out.txt" || fail "round 2 did not start from $back"
grep -q "round 3: 3 ranks from epoch " "$work/out.txt" || fail "dtrain did not go on at 3 ranks"
grep -q "first step of round 2 done" "$work/out.txt" || fail "no step completed after the kill"
acc=$(sed -n 's/.*final test accuracy \([0-9.]*\) (3 ranks.*/\1/p' "$work/out.txt")
[ -n "$acc" ] || fail "no final accuracy line at 3 ranks"
awk -v a="$acc" 'BEGIN { exit !(a > 0.55) }' || fail "accuracy $acc is not above 0.55"
[ "$(wc -l <"$work/out/metrics.csv")" -eq 3 ] || fail "metrics.csv should have a header and 2 rows"
wall=$(sed -n 's/.*rank 0 of 2: first step of round 2 done .*(wall clock \([0-9.]*\)).*/\1/p' "$work/out.txt")
[ -n "$wall" ] || fail "no wall clock of rank 0's first step after the kill"
sleep 0.5
grep -lsa "$marker" /proc/[0-9]*/environ | grep -v "/proc/$$/" | grep -q . &&
    fail "worker processes left behind"
echo "dtrain elastic test passed: accuracy $acc; from the kill to the next completed step:" \
    "$(awk -v a="$killed_at" -v b="$wall" 'BEGIN { printf "%.2f s", b - a }')"
