#!/usr/bin/env bash
# Every CUDA-only check in one command, for a machine with an NVIDIA GPU.
# Needs torch, pyarrow, pandas and pytest; no install of gwa-diag, no dataset.
#
#     bash bench/gpu_checks.sh                # log in bench_out/gpu/gpu_checks.log
#     OUT=/some/dir bash bench/gpu_checks.sh  # log in /some/dir/gpu_checks.log
#
# 1. the sync tests: torch's CUDA sync debug mode on the recorder's step, plus the
#    fake-device check that runs everywhere;
# 2. the step-time ratio recorder-on/off for CIFAR ResNet-18, batch 512, bf16 (target <= 1.01);
# 3. recorder memory and flush time at N = 1,281,167 with a 1000-class and a 10-class head;
# 4. the training engine end to end on the GPU (ResNet-18, bf16, shipped sample data).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_out/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0
step() { echo; echo "== $*"; "$@" || { echo "!! failed ($?): $*"; status=1; }; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  step "$PY" -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name())"
  # A per-test time limit where the pytest-timeout plugin is there (it is not required).
  timeout_opt=$("$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout=300")
  step "$PY" -m pytest -q -p no:cacheprovider -o addopts="" $timeout_opt tests/test_cuda.py tests/test_sync_free.py
  step "$PY" bench/recorder_overhead.py --skip-cpu --repeats 15 --pages-dir "$OUT"
  step "$PY" bench/recorder_scale.py --classes 1000 --pages-dir "$OUT"
  step "$PY" bench/recorder_scale.py --classes 10 --pages-dir "$OUT"
  step "$PY" - <<'PYEOF'
import tempfile, time
from pathlib import Path
from gwa_diag.training.data import sample_data
from gwa_diag.training.engine import TrainConfig, train
from gwa_diag.training.models import resnet18_cifar
from gwa_diag.store import open_run
# Named by path: this script runs from the checkout without installing gwa-diag, where the
# package gwa_diag.sample_data (the top-level sample_data/ folder, once installed) is absent.
train_set, test_set = sample_data(label_set="worst", path="sample_data/cifar10n_subset.npz")
# The run is removed when this block ends, pass or fail.
with tempfile.TemporaryDirectory(prefix="gwa-gpu-") as tmp:
    out = Path(tmp) / "run"
    t0 = time.perf_counter()
    res = train(resnet18_cifar(10), train_set, out, config=TrainConfig(epochs=4, batch_size=256, lr=0.05, progress=False), eval_set=test_set)
    run = open_run(out)
    ep = run.epochs()
    print(ep[["epoch", "gwa", "train_loss", "train_acc", "eval_acc", "seconds"]].to_string(index=False))
    rows = len(run.epoch_scores(int(ep["epoch"].max())))
    print(f"engine on GPU: {len(ep)} epochs in {time.perf_counter() - t0:.1f} s, {rows} rows in the last epoch, on {run.meta['device']} ({run.meta['environment']['cuda']})")
assert rows == len(train_set), (rows, len(train_set))
PYEOF
  exit "$status"
} 2>&1 | tee "$OUT/gpu_checks.log"
exit "${PIPESTATUS[0]}"
