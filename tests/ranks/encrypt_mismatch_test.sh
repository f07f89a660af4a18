#!/bin/sh
# DCOMM_TCP_ENCRYPT on for rank 1 only, over tcp: the job fails at init (never
# hangs, never runs unencrypted), and a rank names the setting and the rank
# that differs.
# usage: encrypt_mismatch_test.sh DLAUNCH PROG [ARGS...]
set -u
dlaunch=$1
shift
out=$(mktemp)
trap 'rm -f "$out"' EXIT
DCOMM_TRANSPORTS=tcp DCOMM_TCP_ENCRYPT=0 timeout 90 "$dlaunch" -np 2 sh -c \
    'if [ "$DCOMM_RANK" = 1 ]; then export DCOMM_TCP_ENCRYPT=1; fi; exec "$@"' sh "$@" \
    >"$out" 2>&1
rc=$?
cat "$out"
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$rc" -ne 0 ] || fail "the job succeeded with DCOMM_TCP_ENCRYPT differing between ranks"
[ "$rc" -ne 124 ] || fail "the job hung (timeout)"
grep -Eq "rank (1 has DCOMM_TCP_ENCRYPT=on but rank 0 has it off|0 has DCOMM_TCP_ENCRYPT=off but rank 1 has it on): every rank must use the same setting" "$out" ||
    fail "no rank named the mismatched DCOMM_TCP_ENCRYPT"
echo "PASS: mismatched DCOMM_TCP_ENCRYPT fails the job naming both ranks' settings"
