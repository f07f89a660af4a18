#!/bin/sh
# A module that cannot be loaded (here: a file that is not a shared object, found
# first through DCOMM_MODULE_PATH) is reported once at info level and skipped,
# and the program runs on without it.
# usage: load_failure_test.sh <single-rank program> <module name>
set -eu
prog=$1
name=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "not an ELF file" > "$dir/libdcomm-$name.so"
env -u DCOMM_RANK -u OMPI_COMM_WORLD_RANK -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK \
    DCOMM_MODULE_PATH="$dir" DCOMM_LOG_LEVEL=info "$prog" > "$dir/out" 2> "$dir/err" || {
    echo "FAIL: $prog exited with $?" >&2; cat "$dir/err" >&2; exit 1; }
n=$(grep -c "module $name skipped: .*libdcomm-$name.so" "$dir/err" || true)
if [ "$n" -ne 1 ]; then
    echo "FAIL: expected one 'module $name skipped' line, got $n" >&2
    cat "$dir/err" >&2
    exit 1
fi
grep "module $name skipped" "$dir/err"
if grep -q " INFO .*module $name skipped" "$dir/err"; then
    echo "PASS"
else
    echo "FAIL: the report is not at info level" >&2
    exit 1
fi
