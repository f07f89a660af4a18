#!/bin/sh
# CI entry point of the fuzz harnesses: configures a clang fuzz tree in BUILD
# (ASan+UBSan+libFuzzer; installs nothing: needs clang and libclang-rt-14-dev,
# i.e. Debian's clang package, plus the normal build dependencies), builds the
# harnesses and replays every corpus with a short fuzz run (run.sh replay;
# FUZZ_TIME seconds per target, default 20).
#   tests/fuzz/ci.sh BUILD
set -eu
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$1
cc=${FUZZ_CC:-clang}
command -v "$cc" >/dev/null || { echo "ci.sh: $cc not found (apt-get install clang)" >&2; exit 2; }
cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER="$cc" -DDCOMM_FUZZ=ON -DDCOMM_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="-Werror" \
    -DDCOMM_WITH_MPI=OFF -DDCOMM_WITH_UCX=OFF -DDCOMM_WITH_NCCL=OFF -DDCOMM_WITH_CUDA=OFF
cmake --build "$build" -j"$(nproc)" --target fuzz
exec "$src/tests/fuzz/run.sh" replay "$build"
