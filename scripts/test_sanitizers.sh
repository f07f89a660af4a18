#!/bin/sh
# CI's sanitizer jobs: builds the tree with ASan + UBSan into build-asan and
# runs the ctest labels unit, ranks and python there, then builds it with
# ThreadSanitizer into build-tsan and runs the unit label. Any sanitizer report
# (in a test, a rank or a child process, even one whose test expected it to
# fail) fails the job. Usage: scripts/test_sanitizers.sh [asan|tsan|all]
set -eu
cd "$(dirname "$0")/.."
root=$(pwd)
mode=${1:-all}
jobs=${DCOMM_TEST_JOBS:-2}
case $mode in
asan | tsan | all) ;;
*)
    echo "usage: $0 [asan|tsan|all]" >&2
    exit 2
    ;;
esac

now() { date +%s; }

# selfcheck DIR FLAGS SOURCE: a program with a known defect, built with FLAGS
# and run with the options the tests get, must fail and leave a report file,
# or the job would pass without checking anything.
selfcheck() {
    check=$root/$1/sanitizer-selfcheck
    rm -rf "$check"
    mkdir -p "$check"
    printf '%s\n' "$3" >"$check/defect.c"
    # shellcheck disable=SC2086
    ${CC:-cc} $2 -g -o "$check/defect" "$check/defect.c" -lpthread
    if ASAN_OPTIONS="$ASAN_OPTIONS:log_path=$check/report" \
        TSAN_OPTIONS="$TSAN_OPTIONS:log_path=$check/report" "$check/defect"; then
        echo "sanitizer self-check ($2): the defect went unnoticed" >&2
        return 1
    fi
    if [ -z "$(find "$check" -name 'report.*' -size +0)" ]; then
        echo "sanitizer self-check ($2): no report file written" >&2
        return 1
    fi
}

# run_job NAME BUILD_DIR LABELS CMAKE_ARGS...: configure, build, run ctest with
# every sanitizer report written to BUILD_DIR/sanitizer-reports/<tool>.<pid>;
# nonzero when a test failed or any report was written.
run_job() {
    name=$1 dir=$2 labels=$3
    shift 3
    t0=$(now)
    # The CUDA and NCCL modules are left out: nvcc's code is not instrumented
    # and their tests need a GPU (label modules, not run here).
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="${CFLAGS:-} -Werror" \
        -DDCOMM_WITH_CUDA=OFF -DDCOMM_WITH_NCCL=OFF "$@"
    cmake --build "$dir" -j"$(nproc)"
    t1=$(now)
    reports=$root/$dir/sanitizer-reports
    rm -rf "$reports"
    mkdir -p "$reports"
    # halt_on_error: the first report ends the process with a failing status;
    # log_path: reports also land in files, so one from a process whose exit
    # status a test ignores (a rank a failure test kills, a forked child) is
    # still seen below. Tests may add LSAN_OPTIONS (leaks of Open MPI, Python).
    ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$reports/asan"
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
    TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$reports/tsan"
    export ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS
    status=0
    case $name in
    asan) selfcheck "$dir" "-fsanitize=address,undefined" \
        '#include <stdlib.h>
int main(void) { void *volatile p = malloc(7); p = 0; return p != 0; }' || status=1 ;;
    tsan) selfcheck "$dir" "-fsanitize=thread" \
        '#include <pthread.h>
static int shared;
static void *bump(void *a) { shared++; return a; }
int main(void) { pthread_t t; pthread_create(&t, 0, bump, 0); shared++; pthread_join(t, 0); return 0; }' ||
        status=1 ;;
    esac
    (cd "$dir" && ctest --output-on-failure --timeout 900 -L "$labels" -LE full -j"$jobs") ||
        status=1
    unset ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS
    t2=$(now)
    found=$(find "$reports" -type f -size +0 | sort)
    if [ -n "$found" ]; then
        for f in $found; do
            echo "==== sanitizer report $f"
            cat "$f"
        done
        echo "$name: $(echo "$found" | wc -l) sanitizer report file(s), see above" >&2
        status=1
    fi
    echo "$name: build $((t1 - t0)) s, tests ($labels) $((t2 - t1)) s, status $status"
    return $status
}

rc=0
if [ "$mode" = asan ] || [ "$mode" = all ]; then
    run_job asan "${DCOMM_ASAN_BUILD_DIR:-build-asan}" "unit|ranks|python" \
        -DDCOMM_SANITIZE=ON -DDCOMM_TSAN=OFF || rc=1
fi
if [ "$mode" = tsan ] || [ "$mode" = all ]; then
    run_job tsan "${DCOMM_TSAN_BUILD_DIR:-build-tsan}" unit \
        -DDCOMM_SANITIZE=OFF -DDCOMM_TSAN=ON || rc=1
fi
exit $rc
