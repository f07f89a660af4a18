#!/bin/sh
# Autotune: a 2-rank dbench run through the async API with DCOMM_AUTOTUNE=1
# must try every (fusion threshold, cycle time) pair and then the other alpha
# scales, log one CSV row per sample, announce its choice, and stay correct
# (dbench checks every value) while the settings change under it.
# usage: autotune_test.sh DLAUNCH DBENCH
set -u
dlaunch=$1 dbench=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
DCOMM_AUTOTUNE=1 DCOMM_AUTOTUNE_LOG=$dir/tune.csv DCOMM_LOG_LEVEL=info \
    timeout 240 "$dlaunch" -np 2 "$dbench" -b 256K -e 256K -n 400 -w 0 -c 1 \
    >"$dir/out" 2>&1 || { cat "$dir/out"; fail "dbench under autotune failed"; }
grep -q "Out of bounds values : 0 OK" "$dir/out" || { cat "$dir/out"; fail "wrong values"; }
grep -q "autotune: fusion threshold" "$dir/out" || { cat "$dir/out"; fail "no autotune choice logged"; }
python3 - "$dir/tune.csv" <<'PY' || fail "autotune log"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
grid = {(r["fusion_threshold"], r["cycle_time_us"]) for r in rows if float(r["alpha_scale"]) == 1}
scales = {float(r["alpha_scale"]) for r in rows}
print(f"{len(rows)} samples, {len(grid)} grid points, alpha scales {sorted(scales)}")
ok = len(rows) == 24 and len(grid) == 20 and len(scales) == 5 and all(
    float(r["gbs"]) > 0 for r in rows)
sys.exit(0 if ok else 1)
PY
grep "autotune:" "$dir/out" | head -1
echo "autotune test passed"
