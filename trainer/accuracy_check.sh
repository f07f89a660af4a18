#!/bin/sh
# The acceptance run (ctest label "full"): `dlaunch -np NP dtrain --epochs 5` on
# all of Fashion-MNIST must reach MIN test accuracy (the model's published
# reference is 0.916). usage: accuracy_check.sh DLAUNCH DTRAIN NP MIN
set -u
dlaunch=$1 dtrain=$2 np=$3 min=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$dlaunch" -np "$np" "$dtrain" --epochs 5 --out-dir "$work" --log-every 60 | tee "$work/out"
acc=$(sed -n 's/.*final test accuracy \([0-9.]*\).*/\1/p' "$work/out")
[ -n "$acc" ] || { echo "FAIL: no final accuracy" >&2; exit 1; }
awk -v a="$acc" -v m="$min" 'BEGIN { exit !(a >= m) }' ||
    { echo "FAIL: test accuracy $acc < $min" >&2; exit 1; }
echo "accuracy check passed: $acc >= $min with $np ranks"
