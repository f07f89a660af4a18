#!/bin/sh
# libdcomm must link none of MPI, UCX, CUDA or NCCL (they come as modules);
# each module that was built must link its own library (so the pattern works).
# usage: ldd_check.sh <libdcomm.so> [<module.so> <pattern>]...
set -eu
lib=$1; shift
forbidden='lib(mpi|open-pal|open-rte|ucp|ucs|uct|cudart|cuda|nccl)\.so'
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "$lib needs: $(echo $needed)"
if echo "$needed" | grep -Eq "$forbidden"; then
    echo "FAIL: $lib links $(echo "$needed" | grep -E "$forbidden" | tr '\n' ' ')" >&2
    exit 1
fi
while [ $# -ge 2 ]; do
    mneeded=$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    if ! echo "$mneeded" | grep -Eq "$2"; then
        echo "FAIL: module $1 does not link $2 (needs: $(echo $mneeded))" >&2
        exit 1
    fi
    echo "$1 links $2 as expected"
    shift 2
done
echo "PASS"
