#!/bin/bash
# The regimes table on a lent GPU (CIFAR ResNet-18, bf16): the tuning sets, then the held-out
# sets, each run's directory (checkpoints left out) packed back for re-analysis without a GPU.
# Run from the project root on the GPU machine, with ../shared/device copied to .device-carry
# and carried (see shared/device/README.md); it writes to $OUT: log.txt (the tuning table),
# tuning.json and xz archives of the run directories (tuning_*.tar.xz, heldout_*.tar.xz, the
# held-out table inside heldout_a, unread until the end). A call brings back about 64 MB in
# all: the six archives may not all fit (then rerun single label sets with --label-sets).
# Re-analyse the runs anywhere: python bench/regimes.py --mode gpu --runs DIR/*-seed*
# TOY=1: a few images and epochs on the CPU, to check the script (TOY_DATA: a data folder).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOG=$OUT/log.txt
if [ "${TOY:-0}" = 1 ]; then
  DATA=${TOY_DATA:?a folder with cifar10/train_first15000.npz, test_first1000.npz and cifar10n/}
  SIZE="--n 200 --test-extra 0 --epochs 5 --device cpu --regimes ${TOY_REGIMES:-default,memorise}"; T1=900; T2=900
else
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device-carry/wheels/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site && python3 .device-carry/unpack.py .device-carry/pack /tmp/data >> "$LOG" 2>&1 || exit 1
  DATA=/tmp/data; SIZE=""; T1=300; T2=230
  nvidia-smi -L >> "$LOG" 2>&1
fi
echo "start $(date -u +%T)" >> "$LOG"
timeout $T1 python3 bench/regimes.py --mode gpu $SIZE --data $DATA --out /tmp/reg_t --keep-runs --skip-gpu-runs >> "$LOG" 2>&1
echo "tuning rc=$? $(date -u +%T)" >> "$LOG"
cp /tmp/reg_t/regimes.json "$OUT/tuning.json" 2>> "$LOG"
mkdir -p /tmp/reg_h
timeout $T2 python3 bench/regimes.py --mode gpu $SIZE --held-out --data $DATA --out /tmp/reg_h --keep-runs --skip-gpu-runs > /tmp/reg_h/heldout_log.txt 2>&1
echo "held-out rc=$? $(date -u +%T)" >> "$LOG"
pack() {  # pack NAME PATH...: those of the paths that exist (run directories without checkpoints), xz
  local name=$1 p; shift; local have=()
  for p in "$@"; do [ -e "$p" ] && have+=("$p"); done
  [ ${#have[@]} -gt 0 ] && timeout 90 tar --exclude=checkpoints -cf - "${have[@]}" | xz -T0 -6 > "$OUT/$name.tar.xz"
}
cd /tmp/reg_t && T=$(ls -d runs-* | head -1)
pack tuning_a $T/default-worst-seed0 $T/memorise-worst-seed0
pack tuning_b $T/default-aggre-seed0 $T/memorise-aggre-seed0
pack tuning_c $T/default-random1-seed0 $T/memorise-random1-seed0
cd /tmp/reg_h && H=$(ls -d runs-* | head -1)
pack heldout_a heldout_log.txt regimes.md regimes.json $H/default-random2-seed0 $H/memorise-random2-seed0
pack heldout_b $H/default-random3-seed0 $H/memorise-random3-seed0
pack heldout_c $H/default-pair30-seed0 $H/memorise-pair30-seed0
echo "packed $(date -u +%T)" >> "$LOG"; ls -la "$OUT" >> "$LOG"
