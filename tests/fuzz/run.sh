#!/bin/sh
# Drives the libFuzzer harnesses of a fuzz build (cmake -DDCOMM_FUZZ=ON, see ci.sh).
#
#   run.sh replay BUILD [TARGET...] [--no-fuzz]
#       each harness runs its seed corpus once, then fuzzes for FUZZ_TIME seconds
#       (default 20; --no-fuzz: replay only). For CI. Fails on any crash.
#       A target with inputs in findings/<target>/ (a known defect not fixed yet)
#       only replays: fuzzing would stop at that defect at once (FUZZ_FORCE=1
#       fuzzes anyway).
#   run.sh long BUILD [TARGET...]
#       each harness fuzzes for FUZZ_RUNS executions (default 10^7) or, when
#       FUZZ_TIME is set, that many seconds; FUZZ_JOBS targets at a time
#       (default 1). The issue's acceptance run.
#   run.sh findings BUILD [TARGET...]
#       replays the crashing inputs kept in findings/<target>/ (known defects,
#       fixed elsewhere) and says which still crash. Never fails. Once one no
#       longer crashes, move it into corpus/<target>/.
#   run.sh seeds BUILD
#       rewrites the corpus/<target>/real-* seeds (fuzz_seeds: real encoders and
#       captured traffic).
#
# New corpus entries and crash artifacts go under BUILD/fuzz/ (work/<target>,
# artifacts/<target>/, logs/<target>.log); the committed corpus is only read.
# Known targets: rdv_codec rdv_server wire tcp shm_seg idx ckpt dlaunch.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
all="rdv_codec rdv_server wire tcp shm_seg idx ckpt dlaunch"

usage() {
    sed -n '2,27p' "$0" >&2
    exit 2
}
[ $# -ge 2 ] || usage
mode=$1
build=$(cd "$2" && pwd)
shift 2
nofuzz=0
targets=""
for a in "$@"; do
    case $a in
    --no-fuzz) nofuzz=1 ;;
    -*) usage ;;
    *) targets="$targets $a" ;;
    esac
done
[ -n "$targets" ] || targets=$all
bin() { echo "$build/tests/fuzz/fuzz_$1"; }
for t in $targets; do
    [ -x "$(bin "$t")" ] || { echo "run.sh: $(bin "$t") missing: build the fuzz target" >&2; exit 2; }
done
out=$build/fuzz
mkdir -p "$out/logs"
# Leaks are real bugs too, but a harness that ends a run early on one would hide
# everything after it: report them, do not stop.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# The socket harnesses (tcp, rdv_server) open loopback connections by the
# thousand a second; each one a peer closes first leaves a TIME-WAIT socket for a
# minute, and in a long run they use up the loopback's ports (bind: Address
# already in use), for this and every other program on the machine. Where we may
# (root, unshare), each run gets a network namespace of its own whose TIME-WAIT
# table is small (the kernel drops what does not fit). FUZZ_NETNS=0: do not.
netns=""
if [ "${FUZZ_NETNS:-1}" = 1 ] && command -v unshare >/dev/null && command -v ip >/dev/null &&
    unshare -n sh -c 'ip link set lo up && sysctl -qw net.ipv4.tcp_max_tw_buckets=1024' \
        2>/dev/null; then
    netns="$here/in_netns.sh"
fi

# fuzz TARGET ARGS...: one libFuzzer run over a scratch corpus plus the seeds.
fuzz() {
    t=$1
    shift
    mkdir -p "$out/work/$t" "$out/artifacts/$t"
    log=$out/logs/$t.log
    start=$(date +%s)
    if $netns "$(bin "$t")" -artifact_prefix="$out/artifacts/$t/" -timeout=25 -print_final_stats=1 \
        "$@" "$out/work/$t" "$here/corpus/$t" >"$log" 2>&1; then
        rc=0
    else
        rc=$?
    fi
    secs=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    if [ $rc -eq 0 ]; then
        echo "fuzz $t: ok, ${execs:-?} executions in ${secs} s (${rate:-?}/s)"
    else
        echo "fuzz $t: FAILED (exit $rc) after ${secs} s; log $log, input in $out/artifacts/$t/"
        grep -E "ERROR|SUMMARY|runtime error|abort" "$log" | head -5 | sed 's/^/    /'
    fi
    return $rc
}

failed=0
case $mode in
replay)
    for t in $targets; do
        open=$(find "$here/findings/$t" -type f ! -name '*.txt' ! -name 'README*' 2>/dev/null | wc -l)
        if [ $nofuzz -eq 0 ] && [ "$open" -gt 0 ] && [ "${FUZZ_FORCE:-0}" != 1 ]; then
            echo "fuzz $t: $open open finding(s) in findings/$t/: replaying the corpus only"
            fuzz "$t" -runs=0 || failed=1
        elif [ $nofuzz -eq 1 ]; then
            fuzz "$t" -runs=0 || failed=1
        else
            fuzz "$t" -max_total_time="${FUZZ_TIME:-20}" || failed=1
        fi
    done
    ;;
long)
    if [ -n "${FUZZ_TIME:-}" ]; then
        budget="-max_total_time=$FUZZ_TIME"
    else
        budget="-runs=${FUZZ_RUNS:-10000000}"
    fi
    jobs=${FUZZ_JOBS:-1}
    running=0
    for t in $targets; do
        rm -f "$out/logs/$t.failed"
        ( fuzz "$t" "$budget" || echo "fuzz $t failed" >"$out/logs/$t.failed" ) &
        running=$((running + 1))
        if [ $running -ge "$jobs" ]; then
            wait
            running=0
        fi
    done
    wait
    for t in $targets; do
        [ ! -e "$out/logs/$t.failed" ] || failed=1
    done
    ;;
findings)
    n=$(find "$here/findings" -type f ! -name '*.txt' ! -name 'README*' 2>/dev/null | wc -l)
    [ "$n" -gt 0 ] || echo "run.sh: no open findings in $here/findings"
    for t in $targets; do
        for f in "$here/findings/$t"/*; do
            [ -f "$f" ] || continue
            case $f in *.txt) continue ;; esac
            if "$(bin "$t")" -runs=1 "$f" >"$out/logs/finding.log" 2>&1; then
                echo "finding $t/$(basename "$f"): no longer crashes"
            else
                echo "finding $t/$(basename "$f"): still crashes: $(grep -v -E '^(INFO|MERGE|Running|Executed)|Running [0-9]+ inputs' "$out/logs/finding.log" | grep -m1 -E 'SUMMARY|runtime error|^[a-z_]+: ' | cut -c1-160)"
            fi
        done
    done
    ;;
seeds)
    "$build/tests/fuzz/fuzz_seeds" "$here/corpus"
    ;;
*)
    usage
    ;;
esac
exit $failed
