#!/bin/sh
# GPU checks for the cuda and nccl modules, for a machine with an NVIDIA GPU
# (about 1-3 minutes: a build of just these targets, then the test programs):
#   - test_cuda_module: pointer kinds, GPU reduction kernels for every dtype/op
#     against the CPU kernels, AVG scaling, pinned staging, a bandwidth figure;
#   - test_nccl_module: a single-rank NCCL communicator, allreduce SUM/AVG/MAX,
#     broadcast, allgather, reducescatter, alltoall, 300 queued allreduces;
#   - gpu_colls through libdcomm under dlaunch (tests/gpu/gpu_colls_test.sh):
#     every collective on cudaMalloc buffers, checked, with NCCL (2 ranks, or 1
#     where there is one GPU: NCCL wants a GPU per rank) and staged through
#     pinned host memory (DCOMM_TRANSPORTS=^nccl, 2 ranks); each checks the log
#     for the path taken.
# Usage: tests/gpu/run_gpu_checks.sh   (DCOMM_GPU_BUILD_DIR, DCOMM_CUDA_ARCH override)
# Exit status: 0 when all pass; 1 otherwise (a skip for want of a GPU fails here).
set -u
cd "$(dirname "$0")/../.."
build=${DCOMM_GPU_BUILD_DIR:-build-gpu}
arch=${DCOMM_CUDA_ARCH:-90}
export PATH="$PATH:/usr/local/cuda/bin"

echo "== GPU"
nvidia-smi -L 2>&1 || echo "(nvidia-smi not found)"
echo "== build ($build, CUDA architectures $arch)"
if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDCOMM_TESTS=ON \
        -DDCOMM_WITH_CUDA=ON -DDCOMM_WITH_NCCL=ON -DDCOMM_WITH_MPI=OFF -DDCOMM_WITH_UCX=OFF \
        -DCMAKE_CUDA_ARCHITECTURES="$arch" > "$build.configure.log" 2>&1; then
    tail -20 "$build.configure.log"
    echo "FAIL: configure (log: $build.configure.log)"
    exit 1
fi
start=$(date +%s)
if ! cmake --build "$build" -j"$(nproc)" --target dcomm-cuda dcomm-nccl test_cuda_module \
        test_nccl_module dlaunch gpu_colls > "$build.build.log" 2>&1; then
    tail -30 "$build.build.log"
    echo "FAIL: build (log: $build.build.log)"
    exit 1
fi
echo "built in $(( $(date +%s) - start )) s"
case $build in /*) ;; *) build="$PWD/$build" ;; esac
export DCOMM_MODULE_PATH="$build"
status=0
for t in cuda nccl; do
    echo "== test_${t}_module"
    t0=$(date +%s)
    timeout 150 "$build/tests/modules/test_${t}_module"
    rc=$?
    echo "test_${t}_module: exit $rc in $(( $(date +%s) - t0 )) s"
    [ "$rc" -eq 0 ] || status=1
done
for mode in nccl staged; do
    echo "== gpu_colls, $mode"
    t0=$(date +%s)
    tests/gpu/gpu_colls_test.sh "$build/launcher/dlaunch" "$build/tests/gpu/gpu_colls" "$mode" 2
    rc=$?
    echo "gpu_colls $mode: exit $rc in $(( $(date +%s) - t0 )) s"
    [ "$rc" -eq 0 ] || status=1
done
[ "$status" -eq 0 ] && echo "GPU CHECKS PASSED" || echo "GPU CHECKS FAILED"
exit "$status"
