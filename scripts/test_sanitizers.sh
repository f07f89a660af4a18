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
