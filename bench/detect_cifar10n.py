"""Real-data detection benchmark: which training signal finds the mislabeled CIFAR-10-N samples?

    python bench/detect_cifar10n.py                           # CPU: tiny CNN, first 5,000 images
    python bench/detect_cifar10n.py --mode gpu                # ResNet-18, all 20,000 images (reference setting)
    python bench/detect_cifar10n.py --label-sets worst --epochs 20 --window after_warmup
    python bench/detect_cifar10n.py --reuse                   # re-analyse finished runs, no training

Data: ``cifar10/train_first20000.npz`` (sample id = row index = CIFAR-10 training index),
``cifar10/test_first1000.npz`` (the held-out evaluation set) and the CIFAR-10-N label file
``cifar10n/CIFAR-10_human.pt``, found under ``../shared/data`` from the repository root
(``--data`` to point elsewhere). The first ``--n`` training images are used.

For each CIFAR-10-N label set (``--label-sets``, default worst, aggre, random1) the script
trains one model with ``gwa_diag.training.engine.train`` while the recorder scores every sample
presentation, evaluating on the 1,000 test images after each epoch. It then prints:

* the detection table: AUROC, average precision, and precision / recall at k (k = number of
  truly mislabeled samples) for every per-sample scorer of ``gwa_diag.analysis.summaries.SCORERS``
  (means over ``--window``), plus precision / recall / F1 of the rule "alignment < 0 at the
  GWA-selected epoch";
* an external peer, cleanlab (confident learning): the last-epoch checkpoint is run once more
  over the *un-augmented training images* (one extra forward pass, done here in the
  benchmark, not by the recorder) to get an N x C probability matrix. Its ranking metrics
  use cleanlab's self-confidence label-quality score (lower quality = more suspicious), its
  P / R / F1 use the set ``cleanlab.filter.find_label_issues`` flags. These probabilities
  are in-sample (the model trained on these labels), so the row is labelled
  "cleanlab (in-sample, last-epoch probs)"; published cleanlab numbers use out-of-sample
  (cross-validated) probabilities, which cost k extra trainings. cleanlab is AGPL-licensed:
  it is imported only here, is optional (``pip install -r bench/requirements.txt``), and
  its row is skipped with a message when it is not installed;
* the test accuracy at the GWA-selected epoch, at the best test epoch and at the last epoch.

Modes:

* ``cpu``: tiny CNN, first 5,000 images, 15 epochs, batch 256, SGD nesterov lr 0.1, 2 warm-up
  epochs then linear decay, fp32. A few minutes for three label sets on 2 CPU cores.
* ``gpu``: CIFAR ResNet-18, all 20,000 images, 40 epochs, batch 512, SGD nesterov lr 0.2,
  2 warm-up epochs then linear decay, bf16 (the reference setting for CIFAR-10-N detection).

Runs go to ``OUT/runs/<label set>`` (a previous gwa-diag run there is replaced unless
``--reuse``); the tables are also written as markdown to ``OUT/results.md``.
One seed, one subset: the numbers vary from run to run and machine to machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from gwa_diag.training.data import CIFAR10N_LABEL_SETS, load_npz, with_cifar10n
from gwa_diag.training.batches import channel_stats
from gwa_diag.training.engine import TrainConfig, train
from gwa_diag.analysis.metrics import RULE_ROW, auroc, average_precision, detection_table, precision_recall_at_k, rule_scores
from gwa_diag.analysis.truth import ground_truth
from gwa_diag.training.models import resnet18_cifar, tiny_cnn
from gwa_diag.store import open_run
from gwa_diag.analysis.summaries import WINDOWS, summarize

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
CLEANLAB_ROW = "cleanlab (in-sample, last-epoch probs)"

#: Per-mode defaults; every entry can be overridden on the command line.
MODES: dict[str, dict[str, Any]] = {
    "cpu": {"model": "tiny", "n": 5000, "epochs": 15, "batch_size": 256, "lr": 0.1, "warmup_epochs": 2.0,
            "precision": "fp32", "device": "cpu"},
    "gpu": {"model": "resnet18_cifar", "n": 20000, "epochs": 40, "batch_size": 512, "lr": 0.2, "warmup_epochs": 2.0,
            "precision": "bf16", "device": "cuda"},
}
MODEL_BUILDERS = {"tiny": tiny_cnn, "resnet18_cifar": resnet18_cifar}
COLUMNS = [("auroc", "AUROC"), ("ap", "AP"), ("p_at_k", "P@k"), ("r_at_k", "R@k"),
           ("precision", "P"), ("recall", "R"), ("f1", "F1"), ("n_flagged", "flagged")]


# -- hardware --------------------------------------------------------------------------------
def hardware(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    line = f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        line += f"; GPU: {torch.cuda.get_device_name(device)}"
    elif torch.cuda.is_available():
        line += f"; GPU present but unused: {torch.cuda.get_device_name(0)}"
    else:
        line += "; GPU: none"
    return line + f"; torch {torch.__version__}, python {sys.version.split()[0]}"


# -- data -------------------------------------------------------------------------------------
def load_sets(data: Path, n: int):
    train_path = data / "cifar10" / "train_first20000.npz"
    test_path = data / "cifar10" / "test_first1000.npz"
    label_path = data / "cifar10n" / "CIFAR-10_human.pt"
    for p in (train_path, test_path, label_path):
        if not p.is_file():
            raise SystemExit(f"missing data file {p}: pass --data pointing at the folder with cifar10/ and cifar10n/")
    full = load_npz(train_path)
    if not 1 <= n <= len(full):
        raise SystemExit(f"--n must be between 1 and {len(full)}, got {n}")
    if n < len(full):
        from gwa_diag.training.data import ArrayDataset

        # The first n rows: ids 0..n-1 stay CIFAR-10 training indices.
        sub = ArrayDataset(full.images_nchw[:n], full.labels[:n], sample_ids=full.sample_ids[:n],
                           class_names=full.class_names, spec={"source": "arrays", "of": full.spec, "first": n})
    else:
        sub = full
    return sub, load_npz(test_path), label_path


# -- the external peer ------------------------------------------------------------------------
@torch.no_grad()
def in_sample_probs(run_dir: Path, model_name: str, train_set, device: torch.device, dtype, batch: int) -> np.ndarray:
    """Softmax probabilities [N, C] of the last-epoch checkpoint on the un-augmented training
    images, rows in ``train_set`` order (normalised exactly as the engine normalises)."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location=device, weights_only=True)
    model = MODEL_BUILDERS[model_name](train_set.num_classes)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    images = train_set.images_nchw.to(device)
    mean, std = channel_stats(images)
    mean, std = mean[None, :, None, None], std[None, :, None, None]
    out = []
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for s in range(0, len(images), batch):
            x = (images[s : s + batch].float().div_(255) - mean) / std
            out.append(F.softmax(model(x).float(), dim=1).cpu())
    return torch.cat(out).double().numpy()


def cleanlab_row(labels: np.ndarray, probs: np.ndarray, is_noisy: np.ndarray) -> dict[str, float] | None:
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        return None
    probs = probs / probs.sum(axis=1, keepdims=True)  # exact row sums for cleanlab's checks
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    flags = np.zeros(len(labels), dtype=bool)
    flags[ranked] = True
    score = -quality  # lower label quality = more suspicious
    p_k, r_k = precision_recall_at_k(score, is_noisy)
    row = {"auroc": auroc(score, is_noisy), "ap": average_precision(score, is_noisy), "p_at_k": p_k, "r_at_k": r_k}
    row.update(rule_scores(flags, is_noisy))
    return row


# -- one label set ----------------------------------------------------------------------------
def run_label_set(name: str, args, train_base, test_set, label_path: Path, device: torch.device) -> dict[str, Any]:
    run_dir = Path(args.out) / "runs" / name
    train_set = with_cifar10n(train_base, label_path, label_set=name)
    noise = float(np.mean(train_set.labels != train_set.clean_labels))
    t_train = None
    if args.reuse:
        meta = open_run(run_dir).meta if (run_dir / "run.json").exists() else {}
        if meta.get("status") != "finished":
            raise SystemExit(f"--reuse: {run_dir} holds no finished run; run without --reuse first")
        if meta.get("num_samples") != len(train_set):
            raise SystemExit(f"--reuse: {run_dir} was trained on {meta.get('num_samples')} samples, this command "
                             f"asks for --n {len(train_set)}: pass the same --n (and --mode) as the training command")
        cfg = meta.get("config", {})
        wanted = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
        differ = {k: (cfg.get(k), v) for k, v in wanted.items() if cfg.get(k) != v}
        if differ or meta.get("model") != type(MODEL_BUILDERS[args.model](10)).__name__:
            recorded = [f"model {meta.get('model')}", *(f"{k} {a}" for k, (a, _) in differ.items())]
            print(f"warning: {run_dir} was trained with another setting than this command's (recorded: "
                  f"{', '.join(recorded)}); the tables describe the recorded run")
    else:
        if run_dir.exists():
            if not (run_dir / "run.json").exists():
                raise SystemExit(f"{run_dir} exists and is not a gwa-diag run: remove it or choose another --out")
            shutil.rmtree(run_dir)
        cfg = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer="sgd", momentum=0.9,
            weight_decay=5e-4, warmup_epochs=args.warmup_epochs, schedule="linear", augment=True,
            precision=args.precision, device=args.device, seed=args.seed, mode="scratch", progress=args.progress,
        )
        torch.manual_seed(args.seed)
        model = MODEL_BUILDERS[args.model](train_set.num_classes)
        t0 = time.perf_counter()
        train(model, train_set, run_dir, config=cfg, eval_set=test_set,
              meta={"benchmark": "bench/detect_cifar10n.py", "label_set": name})
        t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    summary = summarize(run_dir, window=args.window)
    truth = ground_truth(run_dir)
    table = detection_table(summary, truth)
    t_analysis = time.perf_counter() - t0

    # External peer on one extra forward pass of the last checkpoint.
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision) if device.type == "cuda" else None
    probs = in_sample_probs(run_dir, args.model, train_set, device, dtype, batch=1024)
    pos = train_set.positions(truth.index.to_numpy())
    peer = cleanlab_row(train_set.labels[pos], probs[pos], truth.to_numpy())
    if peer is not None:
        table.loc[CLEANLAB_ROW] = pd.Series(peer)
    last_acc = float(np.mean(probs.argmax(1) == train_set.labels))

    epochs = open_run(run_dir).epochs()
    sel = summary.attrs["selection"]
    acc = epochs.set_index("epoch")["eval_acc"] if "eval_acc" in epochs else pd.Series(dtype=float)
    best_epoch = int(acc.idxmax()) if len(acc) else None
    last_epoch = int(epochs["epoch"].max())
    return {
        "name": name, "noise": noise, "n": table.attrs["n"], "n_noisy": table.attrs["n_noisy"], "table": table,
        "peer_missing": peer is None, "gwa_epoch": sel["gwa_epoch"], "selection_reason": sel["reason"],
        "selected_epoch": summary.attrs["selected_epoch"], "fallback": sel["fallback"],
        "acc": acc, "best_epoch": best_epoch, "last_epoch": last_epoch, "train_fit_last": last_acc,
        "window": summary.attrs["window_epochs"], "t_train": t_train, "t_analysis": t_analysis,
    }


# -- output -----------------------------------------------------------------------------------
def _fmt(v: Any, col: str) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return "-"
    if col == "n_flagged":
        return str(int(v))
    return f"{float(v):.3f}"


def text_table(table: pd.DataFrame) -> str:
    width = max(len(str(i)) for i in table.index) + 2
    lines = [f"{'method':{width}s}" + "".join(f"{h:>8s}" for _, h in COLUMNS)]
    for name, row in table.iterrows():
        lines.append(f"{name!s:{width}s}" + "".join(f"{_fmt(row.get(c), c):>8s}" for c, _ in COLUMNS))
    return "\n".join(lines)


def md_table(table: pd.DataFrame) -> str:
    lines = ["| method | " + " | ".join(h for _, h in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, row in table.iterrows():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c), c) for c, _ in COLUMNS) + " |")
    return "\n".join(lines)


def accuracy_line(r: dict[str, Any]) -> str:
    acc = r["acc"]
    if not len(acc):
        return "test accuracy: not recorded"
    sel = r["gwa_epoch"]
    sel_txt = f"GWA-selected epoch {sel}: {acc[sel]:.3f}" if sel is not None else f"GWA selected no epoch ({r['selection_reason']})"
    return (f"test accuracy (1,000 test images): {sel_txt} | best epoch {r['best_epoch']}: {acc[r['best_epoch']]:.3f} | "
            f"last epoch {r['last_epoch']}: {acc[r['last_epoch']]:.3f}")


def header(r: dict[str, Any], window: str) -> str:
    w0, w1 = r["window"]
    sel = f"epoch {r['selected_epoch']}" + (" (fallback: last epoch)" if r["fallback"] else "")
    timing = f"train {r['t_train']:.0f} s, " if r["t_train"] is not None else "reused run, "
    return (f"label set {r['name']}: {r['n']} samples, {r['n_noisy']} mislabeled ({r['noise']:.1%}), k = {r['n_noisy']}; "
            f"window {window} = epochs {w0}..{w1}; rule at {sel}; {timing}analysis {r['t_analysis']:.1f} s; "
            f"last-epoch train-set fit (un-augmented) {r['train_fit_last']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="cpu",
                    help="cpu: tiny CNN on a subset (minutes on 2 cores); gpu: CIFAR ResNet-18 on all 20,000 images, bf16")
    ap.add_argument("--label-sets", default="worst,aggre,random1",
                    help=f"comma-separated CIFAR-10-N label sets (of {', '.join(k for k in CIFAR10N_LABEL_SETS if k != 'clean')})")
    ap.add_argument("--n", type=int, help="train on the first N of the 20,000 images (default: cpu 5000, gpu 20000)")
    ap.add_argument("--epochs", type=int, help="epochs per run (default: cpu 15, gpu 40)")
    ap.add_argument("--batch-size", type=int, help="default: cpu 256, gpu 512")
    ap.add_argument("--lr", type=float, help="peak SGD learning rate (default: cpu 0.1, gpu 0.2)")
    ap.add_argument("--warmup-epochs", type=float, help="linear warm-up epochs before the linear decay (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the initialisation, data order and augmentation (default 0)")
    ap.add_argument("--window", choices=list(WINDOWS), default="second_half",
                    help="epochs the mean-over-epochs scorers average: "
                    + "; ".join(f"{k}: {v}" for k, v in WINDOWS.items()).replace("%", "%%"))
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder with cifar10/ and cifar10n/ (default: ../shared/data from the repo root)")
    ap.add_argument("--out", default="bench_out/detect", help="output folder: runs/<label set>/ and results.md")
    ap.add_argument("--reuse", action="store_true", help="analyse the finished runs already in OUT/runs instead of training")
    ap.add_argument("--progress", action="store_true", help="show the engine's per-epoch progress bar")
    args = ap.parse_args()
    for key, value in MODES[args.mode].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    names = [s.strip() for s in args.label_sets.split(",") if s.strip()]
    bad = [s for s in names if s not in CIFAR10N_LABEL_SETS or s == "clean"]
    if bad or not names:
        raise SystemExit(f"unknown label set(s) {bad}: choose from {', '.join(k for k in CIFAR10N_LABEL_SETS if k != 'clean')}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--mode gpu needs a CUDA device; none is available here (use --mode cpu)")
    device = torch.device(args.device)

    hw = hardware(device)
    setting = (f"mode {args.mode}: {args.model}, first {args.n} training images, {args.epochs} epochs, batch {args.batch_size}, "
               f"SGD nesterov lr {args.lr}, {args.warmup_epochs:g} warm-up epochs then linear decay, {args.precision}, "
               f"crop+flip, seed {args.seed}; eval set: 1,000 test images")
    print(hw)
    print(setting)
    train_base, test_set, label_path = load_sets(Path(args.data), args.n)

    results = []
    for name in names:
        r = run_label_set(name, args, train_base, test_set, label_path, device)
        results.append(r)
        print()
        print(header(r, args.window))
        print(text_table(r["table"]))
        if r["peer_missing"]:
            print(f"cleanlab is not installed: row '{CLEANLAB_ROW}' skipped (pip install -r bench/requirements.txt)")
        print(accuracy_line(r))

    notes = [
        "Every score is oriented higher = more suspicious; k = number of truly mislabeled samples (P@k = R@k then).",
        (f"Scorer rows: gwa_diag.analysis.summaries.SCORERS, means over the '{args.window}' window. "
         f"P/R/F1 of '{RULE_ROW}': the samples with raw alignment < 0 at the GWA-selected epoch."),
        (f"'{CLEANLAB_ROW}': one extra forward pass of the last-epoch checkpoint over the un-augmented training "
         "images; AUROC/AP/P@k/R@k rank by cleanlab's self-confidence label-quality score (= p(given label)), "
         "P/R/F1 are of the set cleanlab.filter.find_label_issues flags (prune_by_noise_rate). "
         "In-sample probabilities, not the cross-validated ones cleanlab recommends."),
    ]
    summary_cols = ["align_mean", "aum", "loss_mean", "confidence", "forgetting", "el2n", CLEANLAB_ROW]
    summary_lines = ["| label set (noise) | " + " | ".join(summary_cols) + " |", "|---|" + "---|" * len(summary_cols)]
    for r in results:
        cells = []
        for c in summary_cols:
            cells.append(f"{_fmt(r['table'].loc[c, 'auroc'], 'auroc')} / {_fmt(r['table'].loc[c, 'ap'], 'ap')}"
                         if c in r["table"].index else "-")
        summary_lines.append(f"| {r['name']} ({r['noise']:.1%}) AUROC / AP | " + " | ".join(cells) + " |")
    print()
    print("summary, AUROC / AP:")
    print("\n".join(summary_lines))

    md = ["# CIFAR-10-N detection benchmark", "", f"Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`", "",
          f"Hardware: {hw}", "", f"Setting: {setting}; window: {args.window}", ""]
    for r in results:
        md += [f"## {r['name']}", "", header(r, args.window), "", md_table(r["table"]), ""]
        if r["peer_missing"]:
            md += [f"cleanlab is not installed: row '{CLEANLAB_ROW}' skipped.", ""]
        md += [accuracy_line(r), ""]
    md += ["## Summary (AUROC / AP)", "", *summary_lines, "", *(f"* {n}" for n in notes), ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(md))
    print()
    for n in notes:
        print("note: " + n)
    print(f"markdown: {out / 'results.md'}")


if __name__ == "__main__":
    main()
