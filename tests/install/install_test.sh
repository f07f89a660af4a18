#!/bin/sh
# Installs the build tree into a scratch prefix and checks what a user gets:
# the files, a program built with find_package(dcomm) and one built with
# pkg-config, both run by the installed dlaunch with 2 ranks.
# usage: install_test.sh BUILD_DIR SOURCE_DIR [CFLAGS]   (CFLAGS: e.g. the
# sanitizer flags the library was built with, for the consumers too)
set -eu
build=$1 src=$2 cflags=${3:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
cmake --install "$build" --prefix "$work/prefix" >/dev/null
p=$work/prefix
for f in bin/dlaunch include/dcomm.h lib/pkgconfig/dcomm.pc lib/cmake/dcomm/dcommConfig.cmake; do
    [ -e "$p/$f" ] || fail "$f not installed"
done
ls "$p"/lib/libdcomm.so* >/dev/null 2>&1 || fail "libdcomm.so not installed"
[ ! -e "$p/include/dcomm_internal.h" ] || fail "the internal header dcomm_internal.h was installed"
# dcomm-info links the installed libdcomm and finds it without LD_LIBRARY_PATH.
"$p/bin/dcomm-info" -c | grep -q '^DCOMM_FUSION_THRESHOLD' || fail "installed dcomm-info -c failed"
mkdir "$work/cm"
cp "$src/consumer.c" "$work/cm/"
cp "$src/CMakeLists.consumer.txt" "$work/cm/CMakeLists.txt"
cmake -S "$work/cm" -B "$work/cm/b" -DCMAKE_PREFIX_PATH="$p" -DCMAKE_C_FLAGS="$cflags" \
    >/dev/null ||
    fail "find_package(dcomm) failed"
cmake --build "$work/cm/b" >/dev/null || fail "building with find_package(dcomm) failed"
flags=$(PKG_CONFIG_PATH=$p/lib/pkgconfig pkg-config --cflags --libs dcomm) ||
    fail "pkg-config dcomm failed"
# shellcheck disable=SC2086
cc $cflags -o "$work/consumer_pc" "$src/consumer.c" $flags || fail "building with pkg-config failed"
export LD_LIBRARY_PATH="$p/lib"
"$p/bin/dlaunch" -np 2 "$work/cm/b/consumer" || fail "find_package program failed"
"$p/bin/dlaunch" -np 2 "$work/consumer_pc" || fail "pkg-config program failed"
echo "install test passed"
