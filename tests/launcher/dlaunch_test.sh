#!/bin/sh
# Launcher tests: runs dlaunch with shell ranks (or rdv_probe) and checks exit
# codes, prefixed output, failure reports and that no rank process is left.
# usage: dlaunch_test.sh DLAUNCH PROBE CASE [HVD_FUSION [FLOOD_JOB]]
set -u
DLAUNCH=$1
PROBE=$2
CASE=$3
FUSION=${4:-}
FLOOD_JOB=${5:-}
# The cases set the DCOMM_*/HOROVOD_* variables they test; none is inherited
# (dlaunch forwards them, and a caller's DCOMM_SANITIZERS=0 would show up in
# the commands the cases compare).
for v in $(env | sed -n 's/^\(\(DCOMM\|HOROVOD\)_[A-Za-z0-9_]*\)=.*/\1/p'); do
    unset "$v"
done
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# A sleep nobody else runs: "sleep 300.<pid>" is how we find leftovers.
MARK="300.$$"
RSH="$(dirname "$0")/fake_rsh.sh"

fail() { echo "FAIL [$CASE]: $*"; echo "--- stdout"; cat "$TMP/out"; echo "--- stderr"; cat "$TMP/err"; exit 1; }
expect_rc() { [ "$RC" -eq "$1" ] || fail "exit code $RC, expected $1"; }
expect_out() { grep -qF -- "$1" "$TMP/out" || fail "stdout lacks '$1'"; }
expect_err() { grep -qF -- "$1" "$TMP/err" || fail "stderr lacks '$1'"; }
no_leftovers() {
    sleep 0.2
    if pgrep -f "sleep $MARK" >/dev/null; then
        pgrep -af "sleep $MARK"
        pkill -KILL -f "sleep $MARK"
        fail "rank processes left behind"
    fi
}
run() { START=$(date +%s); "$DLAUNCH" "$@" >"$TMP/out" 2>"$TMP/err"; RC=$?; END=$(date +%s); }
: >"$TMP/out"; : >"$TMP/err"

case $CASE in
success)
    run -np 2 -- sh -c 'echo "out $DCOMM_RANK/$DCOMM_SIZE local $DCOMM_LOCAL_RANK/$DCOMM_LOCAL_SIZE cross $DCOMM_CROSS_RANK/$DCOMM_CROSS_SIZE"; echo "err $DCOMM_RANK" >&2; echo "secret ${#DCOMM_JOB_SECRET} id ${#DCOMM_JOB_ID} rdv $DCOMM_RENDEZVOUS start $DCOMM_START_TIMEOUT"; printf "no newline $DCOMM_RANK"'
    expect_rc 0
    expect_out "[0] out 0/2 local 0/2 cross 0/1"
    expect_out "[1] out 1/2 local 1/2 cross 0/1"
    expect_err "[0] err 0"
    expect_err "[1] err 1"
    expect_out "[1] no newline 1"
    expect_out "[0] secret 64 id 32 rdv 127.0.0.1:"
    expect_out "start 60"
    grep -q "^\[0\] out" "$TMP/err" && fail "stdout line on stderr"
    [ "$(grep -c '^\[[01]\] ' "$TMP/out")" -eq 6 ] || fail "expected 6 prefixed stdout lines"
    ;;
rank_exit)
    run -np 3 --grace 5 sh -c "if [ \$DCOMM_RANK = 2 ]; then sleep 0.3; exit 3; fi; exec sleep $MARK"
    expect_rc 3
    expect_err "dlaunch: rank 2 exited with code 3"
    [ $((END - START)) -le 4 ] || fail "sleeping ranks were not stopped quickly"
    no_leftovers
    ;;
rank_killed)
    run -np 3 sh -c "if [ \$DCOMM_RANK = 1 ]; then kill -9 \$\$; fi; exec sleep $MARK"
    expect_rc 137
    expect_err "dlaunch: rank 1 killed by signal 9 (Killed)"
    no_leftovers
    ;;
sigterm)
    "$DLAUNCH" -np 3 sh -c "echo started; exec sleep $MARK" >"$TMP/out" 2>"$TMP/err" &
    PID=$!
    i=0
    while [ "$(grep -c started "$TMP/out")" -lt 3 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -TERM $PID
    wait $PID
    RC=$?
    expect_rc 143
    expect_err "dlaunch: received signal 15"
    no_leftovers
    ;;
grace)
    # Ranks ignore SIGTERM: SIGKILL must follow after --grace.
    run -np 2 --grace 0.5 sh -c "trap '' TERM; if [ \$DCOMM_RANK = 0 ]; then sleep 0.3; exit 4; fi; sleep $MARK; sleep $MARK"
    expect_rc 4
    expect_err "rank 0 exited with code 4"
    [ $((END - START)) -le 4 ] || fail "SIGKILL did not follow the grace period"
    no_leftovers
    ;;
stray)
    # A rank leaves a background child behind and exits 0: it must not survive.
    run -np 2 sh -c "sleep $MARK & echo spawned; exit 0"
    expect_rc 0
    expect_out "[1] spawned"
    [ $((END - START)) -le 4 ] || fail "dlaunch waited for the stray child"
    no_leftovers
    ;;
usage)
    run
    expect_rc 2
    expect_err "usage:"
    run -np 0 true
    expect_rc 2
    run -np 2
    expect_rc 2
    run --bogus -np 2 true
    expect_rc 2
    run -np x true
    expect_rc 2
    run -n 2 --grace -1 true
    expect_rc 2
    run -n 2 true
    expect_rc 0
    run -np 1 /nonexistent/program
    expect_rc 127
    expect_err "cannot execute"
    ;;
start_timeout)
    run -np 2 --start-timeout 1 --grace 1 sh -c "exec sleep $MARK"
    expect_rc 124
    expect_err "only 0 of 2 ranks connected to the rendezvous within 1 s"
    no_leftovers
    ;;
rdv_probe)
    run -np 3 "$PROBE" store
    expect_rc 0
    expect_out "[0] rank 0 ok via 127.0.0.1"
    expect_out "[2] rank 2 ok via 127.0.0.1"
    expect_err "dropped unauthenticated connection"
    expect_err "authentication failed"
    ;;
rdv_flood)
    # Strangers holding 4300 idle connections (more than the server's 4096
    # connections and its 1024 handshake slots) do not keep a 4-rank job from
    # starting; dlaunch starts with a soft fd limit of 1024 and raises it.
    N=4300
    [ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge $((2 * N + 200)) ] || N=$(( ($(ulimit -Hn) - 200) / 2 ))
    ( ulimit -Sn 1024; run -np 4 "$PROBE" flood $N; echo "$RC" >"$TMP/rc" )
    RC=$(cat "$TMP/rc")
    expect_rc 0
    expect_out "[0] rank 0 holds $N idle connections"
    expect_out "[3] rank 3 started behind the idle connections"
    # Promptly (the old server took 19 s, spinning on EMFILE), and quietly.
    SLOW=$(sed -n 's/.*started behind the idle connections in \([0-9]*\) ms/\1/p' "$TMP/out" | awk '$1 > 5000')
    [ -z "$SLOW" ] || fail "a rank took more than 5 s to start: $SLOW ms"
    [ "$(wc -l <"$TMP/err")" -le 50 ] || fail "$(wc -l <"$TMP/err") lines of warnings"
    ;;
rdv_flood_job)
    # The same flood (4300 idle connections on the rendezvous server, held by
    # rank 0 from before dcomm_init) under a real job: all four ranks' dcomm_init
    # (store, hosts, event channel, transports, calibration) and an allreduce.
    N=4300
    [ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge $((2 * N + 200)) ] || N=$(( ($(ulimit -Hn) - 200) / 2 ))
    ( ulimit -Sn 1024; run -np 4 "$FLOOD_JOB" "$TMP" $N; echo "$RC" >"$TMP/rc" )
    RC=$(cat "$TMP/rc")
    expect_rc 0
    expect_out "[0] rank 0 holds $N idle connections"
    for r in 0 1 2 3; do
        expect_out "[$r] rank $r of 4: init and allreduce behind the idle connections"
    done
    SLOW=$(sed -n 's/.*behind the idle connections in \([0-9]*\) ms/\1/p' "$TMP/out" | awk '$1 > 10000')
    [ -z "$SLOW" ] || fail "a rank took more than 10 s to start: $SLOW ms"
    ;;
events)
    run -np 3 "$PROBE" events
    expect_rc 5
    expect_err "dlaunch: rank 1 exited with code 5"
    expect_out "[0] event: rank 1 exited with code 5"
    ;;
hosts)
    # Host lists: -H (repeats add up), --hostfile, Slurm's node list; --dry-run.
    run -H a:2,b,a:1 --dry-run true
    expect_rc 0
    expect_out "4 ranks on 2 hosts"
    expect_out "host 0 a slots 3 ranks 0-2 remote"
    expect_out "host 1 b slots 1 ranks 3-3 remote"
    printf '# cluster\nn1 slots=2\nlocalhost slots=3 # this machine\n\n' >"$TMP/hf"
    run --hostfile "$TMP/hf" -np 4 --dry-run true
    expect_rc 0
    expect_out "host 0 n1 slots 2 ranks 0-1 remote"
    expect_out "host 1 localhost slots 3 ranks 2-3 local"
    SLURM_JOB_NODELIST='gpu[01-03,7],cpu9' SLURM_TASKS_PER_NODE='2(x3),1,4' run --dry-run true
    expect_rc 0
    expect_out "11 ranks on 5 hosts"
    expect_out "host 2 gpu03 slots 2 ranks 4-5"
    expect_out "host 3 gpu7 slots 1 ranks 6-6"
    expect_out "host 4 cpu9 slots 4 ranks 7-10"
    run -H a:2 -np 3 true
    expect_rc 2
    expect_err "-np 3 is more than the 2 slots"
    run -H a:x true
    expect_rc 2
    expect_err "slots after ':' must be a number"
    printf 'n1 slots=two\n' >"$TMP/hf"
    run --hostfile "$TMP/hf" true
    expect_rc 2
    expect_err "line 1: expected 'host slots=N'"
    run --bind-to socket -np 1 true
    expect_rc 2
    expect_err "--bind-to takes core, numa or none"
    ;;
mpi_plan)
    # --mpi: the mpirun command dlaunch's options become (--dry-run prints it).
    DCOMM_TUNE=x run --mpi --dry-run -H a:2,b:2 --rsh 'ip netns exec' --ifname eth9 \
        --mpirun 'mpirun --mca btl self,tcp' -- prog 'x y'
    expect_rc 0
    expect_out "DLAUNCH_MPI_RSH='ip netns exec' mpirun --mca btl self,tcp "
    expect_out " --oversubscribe --host a:2,b:2 --mca plm_rsh_agent '$(realpath "$DLAUNCH") --mpi-rsh'"
    expect_out " --mca oob_tcp_if_include eth9 --mca btl_tcp_if_include eth9 "
    expect_out " -x DCOMM_TUNE "
    expect_out " -x DCOMM_IFNAME "
    expect_out " prog 'x y'"
    if grep -q -- " -np " "$TMP/out"; then fail "-np given to mpirun without -np"; fi
    # ssh takes a command line itself: given to mpirun as it is.
    run --mpi --dry-run -np 3 --rsh '/usr/bin/ssh -p 22' --hostfile /nonexistent/hf prog
    expect_rc 0
    expect_out " -np 3 --hostfile /nonexistent/hf --mca plm_rsh_agent '/usr/bin/ssh -p 22' prog"
    if grep -q DLAUNCH_MPI_RSH "$TMP/out"; then fail "ssh went through the shim"; fi
    # The shim: RSH HOST sh -c "the command line" (fake_rsh drops the host).
    DLAUNCH_MPI_RSH="$RSH" run --mpi-rsh hostA echo 'a  b' '$((1+2))'
    expect_rc 0
    expect_out "a b 3"
    run --mpi-rsh hostA echo x
    expect_rc 2
    expect_err "DLAUNCH_MPI_RSH is not set"
    DLAUNCH_MPI_RSH=/nonexistent/rsh run --mpi-rsh hostA echo x
    expect_rc 127
    expect_err "cannot run /nonexistent/rsh"
    run --mpi --mpirun ' ' -np 2 prog
    expect_rc 2
    expect_err "--mpirun needs a command"
    ;;
remote)
    # Two "hosts" through an rsh stand-in that runs the agent here.
    run -H a:2,b:2 --rsh "$RSH" -- sh -c 'echo "id $DCOMM_RANK/$DCOMM_SIZE local $DCOMM_LOCAL_RANK/$DCOMM_LOCAL_SIZE cross $DCOMM_CROSS_RANK/$DCOMM_CROSS_SIZE tune $DCOMM_TUNE"; echo "err $DCOMM_RANK" >&2'
    expect_rc 0
    expect_out "[0] id 0/4 local 0/2 cross 0/2"
    expect_out "[3] id 3/4 local 1/2 cross 1/2"
    expect_err "[2] err 2"
    DCOMM_TUNE=x run -H a:1,b:1 --rsh "$RSH" -- sh -c 'echo "tune $DCOMM_TUNE"'
    expect_out "[1] tune x"
    run -H a:1,b:1 --rsh "$RSH" --bind-to core -- sh -c 'grep Cpus_allowed_list /proc/self/status'
    expect_rc 0
    expect_out "[1] Cpus_allowed_list:"
    ;;
remote_fail)
    # A remote rank killed is named with its host; the others are stopped.
    run -H a:2,b:2 --rsh "$RSH" --grace 1 sh -c "if [ \$DCOMM_RANK = 3 ]; then sleep 0.3; kill -9 \$\$; fi; exec sleep $MARK"
    expect_rc 137
    expect_err "dlaunch: rank 3 killed by signal 9 (Killed) on host b"
    no_leftovers
    # An rsh that cannot run: the ranks of that host are reported lost.
    run -H a:1,b:1 --rsh /nonexistent/rsh true
    [ "$RC" -ne 0 ] || fail "a missing rsh command passed"
    # Whichever agent dies first fails the job; the other host is then stopping.
    grep -Eq "dlaunch: rank (0 lost: the agent on host a|1 lost: the agent on host b)" "$TMP/err" ||
        fail "no rank reported lost with its host"
    expect_err "cannot execute the rsh command"
    ;;
remote_grace)
    # Remote ranks ignore SIGTERM: dlaunch's "K 9" after the grace must reach them
    # (it used to be read as "K 95", the tail of "K 15" left in the agent's buffer).
    run -H a:1,b:1 --rsh "$RSH" --grace 0.5 -- sh -c "trap '' TERM; if [ \$DCOMM_RANK = 0 ]; then sleep 0.3; exit 4; fi; sleep $MARK; sleep $MARK"
    expect_rc 4
    expect_err "rank 0 exited with code 4"
    [ $((END - START)) -le 5 ] || fail "SIGKILL did not reach the remote rank after the grace ($((END - START)) s)"
    no_leftovers
    ;;
remote_kill)
    # dlaunch killed outright: the agents see their stdin close and stop the ranks.
    "$DLAUNCH" -H a:2,b:2 --rsh "$RSH" sh -c "echo started; exec sleep $MARK" >"$TMP/out" 2>"$TMP/err" &
    PID=$!
    i=0
    while [ "$(grep -c started "$TMP/out")" -lt 4 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL $PID
    wait $PID
    sleep 1
    no_leftovers
    ;;
hvd_env)
    # Horovod's identity variables, as horovodrun sets them, beside DCOMM_*.
    SHOW='echo "hvd $HOROVOD_RANK/$HOROVOD_SIZE local $HOROVOD_LOCAL_RANK/$HOROVOD_LOCAL_SIZE cross $HOROVOD_CROSS_RANK/$HOROVOD_CROSS_SIZE host $HOROVOD_HOSTNAME dcomm $DCOMM_RANK/$DCOMM_SIZE ft ${HOROVOD_FUSION_THRESHOLD:-}"'
    HOROVOD_RANK=9 run -np 3 -- sh -c "$SHOW"
    expect_rc 0
    H=$(hostname)
    expect_out "[0] hvd 0/3 local 0/3 cross 0/1 host $H dcomm 0/3"
    expect_out "[1] hvd 1/3 local 1/3 cross 0/1 host $H dcomm 1/3"
    expect_out "[2] hvd 2/3 local 2/3 cross 0/1 host $H dcomm 2/3"
    # A host list: the name as given.
    run -H localhost:2 -- sh -c "$SHOW"
    expect_out "[1] hvd 1/2 local 1/2 cross 0/1 host localhost"
    # Remote ranks (through the agent): theirs, and HOROVOD_* settings travel too.
    HOROVOD_FUSION_THRESHOLD=0 run -H a:2,b:1 --rsh "$RSH" -- sh -c "$SHOW"
    expect_rc 0
    expect_out "[0] hvd 0/3 local 0/2 cross 0/2 host a dcomm 0/3 ft 0"
    expect_out "[1] hvd 1/3 local 1/2 cross 0/2 host a dcomm 1/3 ft 0"
    expect_out "[2] hvd 2/3 local 0/1 cross 1/2 host b dcomm 2/3 ft 0"
    # --mpi hands HOROVOD_* settings to mpirun too.
    HOROVOD_CYCLE_TIME=2 run --mpi --dry-run -np 2 prog
    expect_out " -x HOROVOD_CYCLE_TIME "
    ;;
hvd_alias)
    # HOROVOD_FUSION_THRESHOLD=0 turns fusion off; DCOMM_FUSION_THRESHOLD wins over it.
    fused() { sed -n 's/.*dcomm stats rank \([0-9]*\):.* in \([0-9]*\) groups.*/\1 \2/p' "$TMP/err"; }
    DCOMM_STATS=1 run -np 3 "$FUSION"
    expect_rc 0
    expect_out "[2] hvd rank 2 of 3: 80 allreduces right"
    [ "$(fused | wc -l)" -eq 3 ] || fail "no stats line from every rank"
    fused | while read -r r g; do [ "$g" -gt 0 ] || fail "rank $r fused nothing by default"; done || exit 1
    HOROVOD_FUSION_THRESHOLD=0 DCOMM_STATS=1 run -np 3 "$FUSION"
    expect_rc 0
    expect_out "[1] hvd rank 1 of 3: 80 allreduces right"
    [ "$(fused | wc -l)" -eq 3 ] || fail "no stats line from every rank"
    fused | while read -r r g; do [ "$g" -eq 0 ] || fail "rank $r fused $g groups with HOROVOD_FUSION_THRESHOLD=0"; done || exit 1
    DCOMM_FUSION_THRESHOLD=64M HOROVOD_FUSION_THRESHOLD=0 DCOMM_STATS=1 run -np 3 "$FUSION"
    expect_rc 0
    fused | while read -r r g; do [ "$g" -gt 0 ] || fail "rank $r: HOROVOD_FUSION_THRESHOLD beat DCOMM_FUSION_THRESHOLD"; done || exit 1
    # A bad alias value stops the rank with its name.
    HOROVOD_CYCLE_TIME=soon run -np 1 "$FUSION"
    [ "$RC" -ne 0 ] || fail "HOROVOD_CYCLE_TIME=soon accepted"
    expect_err "HOROVOD_CYCLE_TIME='soon' is not valid"
    ;;
hvd_flags)
    # horovodrun's flags: mapped onto the DCOMM_* variables every rank reads.
    SHOW='echo "ft $DCOMM_FUSION_THRESHOLD ct $DCOMM_CYCLE_TIME cc $DCOMM_CACHE_CAPACITY tl $DCOMM_TIMELINE mc $DCOMM_TIMELINE_MARK_CYCLES at $DCOMM_AUTOTUNE $DCOMM_AUTOTUNE_LOG sw $DCOMM_STALL_WARNING ss $DCOMM_STALL_SHUTDOWN sc $DCOMM_STALL_CHECK ll $DCOMM_LOG_LEVEL st $DCOMM_START_TIMEOUT"'
    DCOMM_CYCLE_TIME=9ms run --num-proc 2 --fusion-threshold-mb 3 --cycle-time-ms 0.1 \
        --cache-capacity 7 --timeline-filename tl.json --timeline-mark-cycles --autotune \
        --autotune-log-file at.csv --stall-check-warning-time-seconds 5 \
        --stall-check-shutdown-time-seconds 9 --no-stall-check --log-level WARNING \
        --start-timeout 20 --gloo -- sh -c "$SHOW"
    expect_rc 0
    expect_out "[1] ft 3M ct 0.1ms cc 7 tl tl.json mc on at on at.csv sw 5s ss 9s sc off ll WARNING st 20"
    run -np 1 --log-level fatal --no-autotune --stall-check -- sh -c "$SHOW"
    expect_out "[0] ft  ct  cc  tl  mc  at off  sw  ss  sc on ll error"
    # Host spellings and ssh's options (dry runs).
    run --hosts a:2,b --dry-run true
    expect_out "host 1 b slots 1 ranks 2-2 remote"
    printf 'n1 slots=2\n' >"$TMP/hf"
    run -hostfile "$TMP/hf" --dry-run true
    expect_out "host 0 n1 slots 2 ranks 0-1 remote"
    run --mpi --dry-run -np 2 -p 2222 --ssh-identity-file /k/id --output-filename /o prog
    expect_out " --mca plm_rsh_agent 'ssh -p 2222 -i /k/id' --output-filename /o "
    run -np 1 --ssh-port 22 --rsh 'ip netns exec' true
    expect_rc 2
    expect_err "--ssh-port is ssh's option, but --rsh is 'ip netns exec'"
    # --output-filename: every rank's own files, its lines without the prefix.
    run -np 2 --output-filename "$TMP/logs" -- sh -c 'echo "o $DCOMM_RANK"; echo "e $DCOMM_RANK" >&2'
    expect_rc 0
    expect_out "[1] o 1"
    [ "$(cat "$TMP/logs/rank.1/stdout")" = "o 1" ] || fail "rank.1/stdout: $(cat "$TMP/logs/rank.1/stdout")"
    [ "$(cat "$TMP/logs/rank.0/stderr")" = "e 0" ] || fail "rank.0/stderr: $(cat "$TMP/logs/rank.0/stderr")"
    run -np 11 --output-dir "$TMP/wide" true
    [ -d "$TMP/wide/rank.00" ] && [ -d "$TMP/wide/rank.10" ] || fail "rank numbers not padded"
    : >"$TMP/file"
    run -np 1 --output-filename "$TMP/file/x" true
    expect_rc 1
    expect_err "--output-filename: cannot make"
    # Bad values and flags dlaunch does not take: refused, naming the flag.
    run -np 1 --cycle-time-ms soon true
    expect_rc 2
    expect_err "--cycle-time-ms needs milliseconds"
    run -np 1 --fusion-threshold-mb 1.5 true
    expect_rc 2
    expect_err "--fusion-threshold-mb needs a whole number"
    run -np 1 --log-level loud true
    expect_rc 2
    expect_err "--log-level takes trace"
    run -np 1 --mpi-args '--bind-to none' true
    expect_rc 2
    expect_err "horovodrun's --mpi-args is not supported"
    run -np 1 --tcp true
    expect_rc 2
    expect_err "unknown option --tcp"
    run -np 1 --gloo --mpi true
    expect_rc 2
    expect_err "--gloo (no mpirun) and --mpi (mpirun) exclude each other"
    run -np 1 --network-interfaces eth0,eth1 true
    expect_rc 2
    expect_err "one interface only"
    ;;
*)
    echo "unknown case $CASE"
    exit 2
    ;;
esac
echo "PASS [$CASE]"
exit 0
