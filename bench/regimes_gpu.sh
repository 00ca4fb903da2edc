#!/bin/bash
# The regimes table on a lent GPU (CIFAR ResNet-18, bf16): the tuning sets, then the held-out
# sets, each run's directory (checkpoints left out) packed back for re-analysis without a GPU.
# Run from the project root on the GPU machine, with ../shared/device copied to .device-carry
# and carried (see shared/device/README.md); it writes to $OUT: log.txt (the tuning table),
# tuning.json and xz archives of the run directories, two runs each, memorise runs first
# (tuning_*.tar.xz, heldout_*.tar.xz, the held-out table inside heldout_1, unread until the
# end). A call brings back about 64 MB in all: past MAX_ARCHIVES archives (default 4) the log
# lists the runs left out.
# Re-analyse the runs anywhere: python bench/regimes.py --mode gpu --runs DIR/*-seed*
# FIRST_SEED=K SEEDS=N: seeds K..K+N-1 (default: seed 0); REGIMES=default: one regime;
# HELD_OUT=0 skips the held-out sets; MAX_ARCHIVES=0 brings back the tables only;
# T1, T2: the time limits of the tuning and held-out steps in seconds (about 25 s a training).
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
  DATA=/tmp/data; SIZE=""; T1=${T1:-300}; T2=${T2:-230}
  nvidia-smi -L >> "$LOG" 2>&1
fi
echo "start $(date -u +%T)" >> "$LOG"
SEEDS_ARGS="--first-seed ${FIRST_SEED:-0} --seeds ${SEEDS:-1}${REGIMES:+ --regimes $REGIMES}"
timeout $T1 python3 bench/regimes.py --mode gpu $SIZE $SEEDS_ARGS --data $DATA --out /tmp/reg_t --keep-runs \
  --skip-gpu-runs --pages-dir /tmp/reg_t >> "$LOG" 2>&1
echo "tuning rc=$? $(date -u +%T)" >> "$LOG"
cp /tmp/reg_t/regimes.json "$OUT/tuning.json" 2>> "$LOG"
if [ "${HELD_OUT:-1}" = 1 ]; then
  mkdir -p /tmp/reg_h
  timeout $T2 python3 bench/regimes.py --mode gpu $SIZE $SEEDS_ARGS --held-out --data $DATA --out /tmp/reg_h \
    --keep-runs --skip-gpu-runs --pages-dir /tmp/reg_h > /tmp/reg_h/heldout_log.txt 2>&1
  echo "held-out rc=$? $(date -u +%T)" >> "$LOG"
fi
ARCHIVES=0
pack() {  # pack NAME PATH...: those of the paths that exist (run directories without checkpoints), xz
  local name=$1 p; shift; local have=()
  for p in "$@"; do [ -e "$p" ] && have+=("$p"); done
  [ ${#have[@]} -gt 0 ] || return 0
  # Each archive of two GPU runs is about 13 MB and a call brings back about 64 MB.
  if [ $ARCHIVES -ge ${MAX_ARCHIVES:-4} ]; then echo "not packed (about 64 MB come back): ${have[*]}" >> "$LOG"; return 0; fi
  timeout 90 tar --exclude=checkpoints -cf - "${have[@]}" | xz -T0 -6 > "$OUT/$name.tar.xz"
}
pack_runs() {  # pack_runs PREFIX DIR [EXTRA...]: DIR's run directories two to an archive, memorise runs first
  local prefix=$1 dir=$2 i=0; shift 2; local extra=("$@")
  [ -d "$dir" ] || return 0
  local runs=($(cd "$dir" && for r in memorise default finetune; do ls -d runs-*/$r-* 2>/dev/null; done))
  while [ $i -lt ${#runs[@]} ]; do
    (cd "$dir" && pack "${prefix}_$((i / 2 + 1))" ${extra[@]+"${extra[@]}"} "${runs[@]:$i:2}")
    [ -f "$OUT/${prefix}_$((i / 2 + 1)).tar.xz" ] && ARCHIVES=$((ARCHIVES + 1))
    extra=(); i=$((i + 2))
  done
}
pack_runs tuning /tmp/reg_t
[ "${HELD_OUT:-1}" = 1 ] && pack_runs heldout /tmp/reg_h heldout_log.txt regimes_heldout.md regimes_heldout.json
echo "packed $(date -u +%T)" >> "$LOG"; ls -la "$OUT" >> "$LOG"
