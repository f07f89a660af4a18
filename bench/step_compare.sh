#!/bin/sh
# Fusion and the response cache against neither, on the ResNet-50-sized step
# of step_bench: runs both configurations interleaved, REPS times each, and
# prints the median steps/s of each and their ratio.
# usage: bench/step_compare.sh [NP] [REPS] [STEPS]   (default 2 5 20)
# Needs a build in build/ (./scripts/setup.sh).
set -eu
cd "$(dirname "$0")/.."
np=${1:-2} reps=${2:-5} steps=${3:-20}
dlaunch=build/launcher/dlaunch bench=build/bench/step_bench
[ -x "$bench" ] || { echo "build first: ./scripts/setup.sh" >&2; exit 1; }
on="" off=""
run() { # env assignments...
    env "$@" "$dlaunch" -np "$np" "$bench" "$steps" 3 | sed -n 's/.* \([0-9.]*\) steps\/s$/\1/p'
}
for i in $(seq "$reps"); do
    on="$on $(run DCOMM_FUSION_THRESHOLD=128M DCOMM_CACHE_CAPACITY=1024)"
    off="$off $(run DCOMM_FUSION_THRESHOLD=0 DCOMM_CACHE_CAPACITY=0)"
    echo "run $i: fusion+cache$on | neither$off"
done
median() { echo "$@" | tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_on=$(median $on) m_off=$(median $off)
awk -v a="$m_on" -v b="$m_off" -v np="$np" 'BEGIN {
    printf "step_bench np=%d: fusion+cache %.2f steps/s, neither %.2f steps/s, ratio %.2fx\n",
           np, a, b, (b > 0 ? a / b : 0) }'
