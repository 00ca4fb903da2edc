"""Early stopping without a validation set on CIFAR-10-N: the protocol of Table 1 of
Hölzl et al. (2025) at the scale of a small CPU.

    python bench/early_stopping.py                       # 3 seeds, regimes memorise, decay, finetune
    python bench/early_stopping.py --quick               # pool 2000, fewer epochs, 2 seeds, memorise only
    python bench/early_stopping.py --regime memorise --seeds 0 1 2 3 4
    python bench/early_stopping.py --held-out            # adds random2 and random3: run it once, at the end

Question: which epoch should a user keep when the labels are noisy and there is no clean
validation set? Each rule picks one epoch of a training run; the table shows the clean test
accuracy of the epoch it picked (mean ± std over seeds, in %):

* oracle: the best test epoch (what no rule can beat); last: the last epoch;
* val 10% / val 1%: a separate run trained on the other 90% / 99% of the pool; the epoch
  with the best accuracy on the held-out part, whose labels are the NOISY ones, as a user
  would have them (ties: the earliest epoch);
* GWA: :func:`gwa_diag.early_stopping.select_epoch` on the GWA curve the recorder wrote for
  the full-pool run (``scratch``: highest GWA after the first 10% of training;
  ``finetune``: highest GWA after its first local minimum);
* LabelWave: :func:`gwa_diag.early_stopping.labelwave_epoch` on the same run's
  training-set prediction changes between epochs.

A rule that picks no epoch keeps the last one (what a user would be left with); the table
counts those cases. Per row it also gives the trust level
:func:`~gwa_diag.early_stopping.assess_choice` gives the GWA choice (seeds with a clear /
weak / no peak) and the mean Spearman rank correlation of GWA with the test accuracy over
the epochs. A second table lists the chosen epochs; a third shows what the curves do
(training fit at the end, where mean alignment and GWA peak relative to the test peak, with
and without the warm-up exclusion).

Data (``--data``, default ``../shared/data`` from the repository root): the first 20,000
CIFAR-10 training images (row = CIFAR-10 training index) and the first 1,000 test images;
CIFAR-10-N human labels read with the safe loader
:func:`gwa_diag.training.data.load_cifar10n`. Rows are split once, the same for every
seed and label set:

* test block: the last ``--test-block`` training rows (default 15,000..19,999) with their
  CLEAN labels, never trained on, plus the 1,000 test images: 6,000 clean test images, so
  that a 3-point change is well outside the epoch-to-epoch noise;
* pool: the first ``--pool`` rows, with the chosen noisy label set;
* pretraining part (finetune regime only): rows 10,000..14,999 with their CLEAN labels.

Rows of the table: the label sets aggre (9% noise), random1 (17%) and worst (41%), used to
tune the recipes; random2 and random3 only with ``--held-out``.

Regimes (``--regime``, several allowed):

* ``memorise``: tiny CNN (width 32), Adam at a constant learning rate, no augmentation,
  no weight decay, batch 128, long enough to fit the noisy training labels (the training
  fit is printed): test accuracy peaks and then falls as the wrong labels are learned. The
  regime the paper's stopping rule is meant for. At a constant learning rate without
  augmentation the test curve also jumps by several points from one epoch to the next, so
  the oracle column (the luckiest epoch) is optimistic and the last epoch is one noisy draw.
* ``decay``: the engine's default recipe (:class:`gwa_diag.training.config.TrainConfig`:
  SGD nesterov, its lr, weight decay, warm-up epochs, linear decay, batch, epochs and
  crop+flip), on the same tiny CNN. A short schedule that ends at a learning rate of zero.
* ``finetune``: a tiny CNN pretrained once (first seed) with the decay recipe on the CLEAN
  labels of the pretraining part, then fine-tuned (all layers, pretrained head kept) on the
  NOISY labels of the pool with Adam at a constant learning rate and no augmentation; the
  GWA rule in ``finetune`` mode.

Each training run uses the loop in :func:`train_run` (AlignmentRecorder in a user's own
loop) and evaluates the clean test set, and the validation part in the split runs, after
every epoch. Runs go to a temporary directory that is removed when the script ends, also
on an error or Ctrl-C. Jobs run in ``--workers`` processes of one thread each (on a
shared 2-core machine one thread per process was about 3x faster than two threads in one
process).

Output: the markdown tables on stdout (header: hardware, data sizes, recipes, the command)
and, under ``--out`` (default ``bench_out/early_stopping``), a JSON file with every
per-epoch curve (test acc, val acc, train loss/acc, mean alignment, kurtosis, GWA,
prediction changes) and the tables as markdown.

Measured wall times on 2 shared CPU cores (2 workers, one thread each): ``--quick``
(memorise regime, pool 2,000, 3 label sets, 2 seeds, 30 epochs: 18 runs) 7.7 min. The full
default (pool 3,000, 3 seeds, 3 regimes: 82 runs) about 42 min, measured in two parts:
``--regime memorise`` (27 runs, 40 epochs) 18.0 min and ``--regime decay finetune``
(55 runs) 24.1 min. No number of the tables is hard-coded here: the run measures them all.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cifar_bench import DEFAULT_DATA, REPO, data_files, hardware, worker_pool
from gwa_diag.early_stopping import assess_choice, labelwave_epoch, rank_correlation, select_epoch
from gwa_diag.recorder import AlignmentRecorder
from gwa_diag.store import open_run
from gwa_diag.training.batches import Batches, augment, channel_stats
from gwa_diag.training.config import TrainConfig
from gwa_diag.training.data import ArrayDataset, load_cifar10n, load_npz
from gwa_diag.training.data.cifar10n import CIFAR10N_LABEL_SETS
from gwa_diag.training.engine import lr_factor
from gwa_diag.training.models import tiny_cnn

TUNING_SETS = ("aggre", "random1", "worst")
HELD_OUT_SETS = ("random2", "random3")
RULES = ("oracle", "last", "val10", "val1", "gwa", "labelwave")
RULE_NAMES = {"oracle": "oracle (best test)", "last": "last epoch", "val10": "val 10%", "val1": "val 1%",
              "gwa": "GWA", "labelwave": "LabelWave"}
#: A memorising recipe must lose at least this much test accuracy (points) from its best
#: epoch to its last on these label sets, or the script says it did not memorise.
MEMORISE_DROP = 3.0
MEMORISE_SETS = ("worst", "random1")
#: Rows 10,000..14,999: the pretraining part of the finetune regime (clean labels).
PRETRAIN_ROWS = (10_000, 15_000)


def _engine_recipe() -> dict[str, Any]:
    cfg = TrainConfig()  # the engine's defaults, read here so that they are never restated
    return {"optimizer": "sgd", "lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
            "warmup_epochs": cfg.warmup_epochs, "schedule": cfg.schedule, "augment": cfg.augment,
            "batch_size": cfg.batch_size, "epochs": cfg.epochs, "width": 32}


#: Recipe of each regime; ``quick`` holds what --quick changes. ``finetune`` also has the
#: recipe of its pretraining run.
def regimes() -> dict[str, dict[str, Any]]:
    engine = _engine_recipe()
    memorise = {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "warmup_epochs": 0.0,
                "schedule": "constant", "augment": False, "batch_size": 128, "epochs": 40, "width": 32}
    return {
        "memorise": {"recipe": memorise, "quick": {"epochs": 30}, "mode": "scratch"},
        "decay": {"recipe": engine, "quick": {}, "mode": "scratch"},
        "finetune": {
            "recipe": {**memorise, "lr": 3e-4, "epochs": 30},
            "quick": {"epochs": 20},
            "pretrain": {**engine, "epochs": 15},
            "pretrain_quick": {"epochs": 10},
            "mode": "finetune",
        },
    }


def describe(recipe: dict[str, Any]) -> str:
    opt = "Adam" if recipe["optimizer"] == "adam" else f"SGD nesterov (momentum {recipe['momentum']:g})"
    sched = "constant lr" if recipe["schedule"] == "constant" else f"{recipe['schedule']} decay"
    warm = f"{recipe['warmup_epochs']:g} warm-up epochs, " if recipe["warmup_epochs"] else ""
    return (f"tiny_cnn width {recipe['width']}, {opt} lr {recipe['lr']:g}, {warm}{sched}, weight decay "
            f"{recipe['weight_decay']:g}, batch {recipe['batch_size']}, {recipe['epochs']} epochs, "
            + ("crop+flip" if recipe["augment"] else "no augmentation"))


# ---------------------------------------------------------------------------------------
# the training loop (one job = one run, in a worker process)
# ---------------------------------------------------------------------------------------

_DATA: dict[str, Any] = {}


def _init_worker(data_dir: str, threads: int) -> None:
    # The parent owns Ctrl-C: it terminates the workers, then removes the run directories.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    files = data_files(Path(data_dir))
    train, test = load_npz(files.train), load_npz(files.test)
    _DATA.update(images=train.images_nchw, clean=torch.as_tensor(train.labels, dtype=torch.int64),
                 test_images=test.images_nchw, test_labels=torch.as_tensor(test.labels, dtype=torch.int64))


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, mean, std) -> float:
    """Accuracy in eval mode (BatchNorm running statistics), without gradients: the
    recorder ignores these forwards."""
    model.eval()
    correct = 0
    for s in range(0, len(images), 1000):
        x = (images[s : s + 1000].float().div_(255) - mean) / std
        correct += int((model(x).argmax(1) == labels[s : s + 1000]).sum())
    model.train()
    return correct / max(len(images), 1)


def _optimizer(model: torch.nn.Module, r: dict[str, Any]) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    other = [p for p in model.parameters() if p.ndim <= 1]  # no weight decay on biases and norms
    groups = [{"params": decay, "weight_decay": r["weight_decay"]}, {"params": other, "weight_decay": 0.0}]
    if r["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=r["lr"])
    return torch.optim.SGD(groups, lr=r["lr"], momentum=r["momentum"], nesterov=r["momentum"] > 0)


def train_run(job: dict[str, Any]) -> dict[str, Any]:
    """Train one model while an AlignmentRecorder scores every sample; return its curves."""
    t_start = time.perf_counter()
    r, seed = job["recipe"], job["seed"]
    images = _DATA["images"]
    rows = torch.as_tensor(job["train_rows"])
    train_set = ArrayDataset(images[rows], job["train_labels"], sample_ids=job["train_rows"], num_classes=10)
    test_images = torch.cat([_DATA["test_images"], images[torch.as_tensor(job["test_rows"])]])
    test_labels = torch.cat([_DATA["test_labels"], _DATA["clean"][torch.as_tensor(job["test_rows"])]])
    val_rows = torch.as_tensor(job["val_rows"]) if len(job["val_rows"]) else None
    torch.manual_seed(seed)
    model = tiny_cnn(10, width=r["width"])
    if job.get("init"):
        state = torch.load(job["init"], map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        mean, std = state["mean"], state["std"]  # a fine-tuned model keeps its input normalisation
    else:
        mean, std = (s[None, :, None, None] for s in channel_stats(train_set.images_nchw))
    batches = Batches(train_set, torch.device("cpu"), r["batch_size"], num_workers=0)
    opt = _optimizer(model, r)
    total, warmup = len(batches) * r["epochs"], int(round(r["warmup_epochs"] * len(batches)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, r["schedule"]))
    recorder = AlignmentRecorder(model, job["run_dir"], meta={"benchmark": "bench/early_stopping.py"})
    curves: dict[str, list] = {k: [] for k in ("epoch", "test_acc", "val_acc", "train_loss", "train_acc",
                                                "mean", "kurtosis", "gwa", "lr")}
    model.train()
    for epoch in range(r["epochs"]):
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)  # order + augmentation, per seed and epoch
        lr_now = opt.param_groups[0]["lr"]
        for x_u8, labels, ids in batches.epoch(gen):
            if r["augment"]:
                x_u8 = augment(x_u8, gen)  # crop+flip of the uint8 batch
            logits = model((x_u8.float().div_(255) - mean) / std)  # the recorder's hook on model.head
            loss = F.cross_entropy(logits, labels)                 # captures W z of THIS forward here
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()  # per-iteration schedule, as in the engine
            # After the step is fine: the scores use the weights of the forward above. The ids
            # are the CIFAR-10 training indices, so every score joins to its image and label.
            recorder.update(ids, labels)
        test_acc = accuracy(model, test_images, test_labels, mean, std)  # no_grad: not recorded
        val_acc = (accuracy(model, images[val_rows], torch.as_tensor(job["val_labels"]), mean, std)
                   if val_rows is not None else None)
        # One host sync per epoch: the GWA summary comes back at once, the Parquet part is
        # written in the background; the accuracies are stored in the same epoch row.
        row = recorder.end_epoch(epoch, test_acc=test_acc, val_acc=val_acc, lr=lr_now)
        for key in curves:
            curves[key].append(row.get(key))
    recorder.close()
    # Training fit at the end on the un-augmented pool, against the labels it was trained on,
    # and on its mislabeled part only: how much of the noise has been memorised.
    with torch.no_grad():
        model.eval()
        preds = torch.cat([model((train_set.images_nchw[s : s + 1000].float().div_(255) - mean) / std).argmax(1)
                           for s in range(0, len(train_set), 1000)]).numpy()
    given = np.asarray(job["train_labels"])
    wrong = given != np.asarray(job["clean_labels"])
    out = {"key": job["key"], "curves": curves, "n_train": len(given), "n_test": len(test_labels),
           "n_val": 0 if val_rows is None else len(val_rows),
           "fit": float(np.mean(preds == given)),
           "fit_mislabeled": float(np.mean(preds[wrong] == given[wrong])) if wrong.any() else None,
           "noise": float(np.mean(wrong))}
    if job.get("save"):
        torch.save({"model": model.state_dict(), "mean": mean, "std": std}, job["save"])
    else:
        changes = prediction_changes(job["run_dir"])
        out["curves"]["changes"] = [changes.get(e) for e in curves["epoch"]]
    out["seconds"] = time.perf_counter() - t_start
    return out


def prediction_changes(run_dir: str) -> dict[int, float | None]:
    """{epoch: number of training samples whose recorded prediction differs from the
    previous epoch's} (None for the first epoch), from the run's Parquet parts."""
    try:
        from gwa_diag.analysis.stopping import prediction_changes as from_run
    except ImportError:
        from_run = None
    if from_run is not None:
        frame = from_run(run_dir)
        # An epoch with nothing to compare with (the first) has no count, not a count of 0.
        return {int(e): float(c) if n else None for e, c, n in zip(frame["epoch"], frame["changes"], frame["compared"])}
    samples = open_run(run_dir).samples(columns=["sample_id", "step", "pred"])
    # The last presentation of each sample in each epoch (one per epoch here).
    last = samples.sort_values(["epoch", "step"]).groupby(["epoch", "sample_id"])["pred"].last().unstack("sample_id")
    out: dict[int, float | None] = {}
    prev = None
    for epoch, preds in last.iterrows():
        if prev is None:
            out[int(epoch)] = None
        else:
            both = preds.notna() & prev.notna()
            out[int(epoch)] = float((preds[both] != prev[both]).sum())
        prev = preds
    return out


# ---------------------------------------------------------------------------------------
# the jobs and their schedule
# ---------------------------------------------------------------------------------------

def build_jobs(args, regime_specs, label_arrays, tmp: Path):
    """(pretraining jobs, jobs that need them, the rest)."""
    clean = label_arrays["clean_label"]
    n_rows = 20_000
    test_rows = np.arange(n_rows - args.test_block, n_rows)
    pool_rows = np.arange(args.pool)
    pre, after, free = [], [], []
    for regime in args.regime:
        spec = regime_specs[regime]
        recipe = spec["recipe"]
        init = None
        if "pretrain" in spec:
            rows = np.arange(*PRETRAIN_ROWS)
            init = str(tmp / f"pretrained-{regime}.pt")
            pre.append({"key": (regime, "clean", args.seeds[0], "pretrain"), "recipe": spec["pretrain"],
                        "seed": args.seeds[0], "train_rows": rows, "train_labels": clean[rows],
                        "clean_labels": clean[rows], "val_rows": [], "val_labels": [], "test_rows": test_rows,
                        "run_dir": str(tmp / f"run-{regime}-pretrain"), "save": init})
        for name in args.label_sets:
            noisy = label_arrays[CIFAR10N_LABEL_SETS[name]]
            for seed in args.seeds:
                perm = np.random.default_rng(seed).permutation(pool_rows)
                for kind, frac in (("full", 0.0), ("val10", 0.10), ("val1", 0.01)):
                    n_val = int(round(frac * len(perm)))
                    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
                    job = {"key": (regime, name, seed, kind), "recipe": recipe, "seed": seed,
                           "train_rows": train, "train_labels": noisy[train], "clean_labels": clean[train],
                           "val_rows": val, "val_labels": noisy[val], "test_rows": test_rows,
                           "run_dir": str(tmp / f"run-{regime}-{name}-{seed}-{kind}"), "init": init}
                    (after if init else free).append(job)
    return pre, after, free


def run_jobs(pool, pre, after, free, log) -> dict[tuple, dict[str, Any]]:
    results: dict[tuple, dict[str, Any]] = {}
    total = len(pre) + len(after) + len(free)
    t0 = time.perf_counter()

    def done(res: dict[str, Any]) -> None:
        results[res["key"]] = res
        log(f"[{len(results)}/{total}] {' '.join(map(str, res['key']))}: {res['seconds']:.0f} s "
            f"(elapsed {time.perf_counter() - t0:.0f} s)")

    # Pretraining first; the scratch jobs keep the other workers busy meanwhile.
    pending = [pool.apply_async(train_run, (job,)) for job in pre]
    first = pending[:]
    pending += [pool.apply_async(train_run, (job,)) for job in free]
    for handle in first:
        done(handle.get())
    pending += [pool.apply_async(train_run, (job,)) for job in after]
    for handle in pending[len(first):]:
        done(handle.get())
    return results


# ---------------------------------------------------------------------------------------
# the rules and the tables
# ---------------------------------------------------------------------------------------

def _argmax(values: list[float | None]) -> int | None:
    """Index of the highest value (the earliest on ties), None if there is none."""
    best = None
    for i, v in enumerate(values):
        if v is not None and not math.isnan(v) and (best is None or v > values[best]):
            best = i
    return best


def choices(full: dict, val10: dict, val1: dict, mode: str) -> dict[str, Any]:
    """The epoch each rule picks for one seed, and the test accuracy it gets."""
    c = full["curves"]
    epochs, test = c["epoch"], c["test_acc"]
    last = len(epochs) - 1
    out: dict[str, Any] = {"epoch": {}, "acc": {}, "fallback": {}}

    def put(rule: str, index: int | None, acc_curve: list[float] = test) -> None:
        out["fallback"][rule] = index is None
        index = last if index is None else index  # no choice: the user keeps the last model
        out["epoch"][rule], out["acc"][rule] = epochs[index], acc_curve[index]

    put("oracle", _argmax(test))
    put("last", last)
    for rule, run in (("val10", val10), ("val1", val1)):
        put(rule, _argmax(run["curves"]["val_acc"]), run["curves"]["test_acc"])
    gwa = select_epoch(epochs, c["gwa"], mode=mode, total_epochs=len(epochs))
    put("gwa", None if gwa.epoch is None else epochs.index(gwa.epoch))
    wave = labelwave_epoch(epochs, c["changes"])
    put("labelwave", None if wave.epoch is None else epochs.index(wave.epoch))
    out["trust"] = assess_choice(epochs, c["gwa"], gwa).level
    defined = [(g, t) for g, t in zip(c["gwa"], test) if g is not None]
    out["spearman"] = rank_correlation([g for g, _ in defined], [t for _, t in defined])
    out["reasons"] = {"gwa": gwa.reason, "labelwave": wave.reason}
    # What the curves do: where mean alignment and GWA peak, with and without the warm-up.
    cut = max(0, math.ceil(0.1 * len(epochs) - 1e-9))
    means = c["mean"]
    mean_peak = _argmax([None if i < cut else m for i, m in enumerate(means)])
    gwa_all = _argmax(c["gwa"])
    best = _argmax(test)
    out["why"] = {
        "best": epochs[best],
        "mean_peak": None if mean_peak is None else epochs[mean_peak],
        "gwa_peak_all": None if gwa_all is None else epochs[gwa_all],
        "gwa_peak_all_acc": None if gwa_all is None else test[gwa_all],
        "mean_rise": None if means[best] is None or means[last] is None else means[last] - means[best],
        "test_fall": test[last] - test[best],
        "spearman_mean": rank_correlation([m for m in means if m is not None],
                                          [t for m, t in zip(means, test) if m is not None]),
        "fit": full["fit"], "fit_mislabeled": full["fit_mislabeled"],
    }
    return out


def _ms(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    vals = [v * scale for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def regime_tables(regime: str, spec: dict, args, results: dict, noise: dict[str, float]) -> tuple[list[str], dict]:
    lines: list[str] = []
    summary: dict[str, Any] = {}
    head = ["label set (noise)", *(RULE_NAMES[r] for r in RULES), "GWA trust clear/weak/none",
            "Spearman(GWA, test)"]
    t1 = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    t2 = ["| label set | " + " | ".join(RULE_NAMES[r] for r in RULES if r != "last") + " |",
          "|---|" + "---|" * (len(RULES) - 1)]
    why_head = ["label set", "train fit at end (all / mislabeled)", "best test epoch",
                "max mean alignment epoch (after the first 10%)",
                "max GWA epoch (rule)", "max GWA epoch incl. warm-up (test %)", "mean alignment change best->last",
                "test change best->last (points)", "Spearman(mean alignment, test)"]
    t3 = ["| " + " | ".join(why_head) + " |", "|---|" + "---:|" * (len(why_head) - 1)]
    for name in args.label_sets:
        per_seed = []
        for seed in args.seeds:
            key = (regime, name, seed)
            per_seed.append(choices(results[key + ("full",)], results[key + ("val10",)], results[key + ("val1",)],
                                    spec["mode"]))
        summary[name] = per_seed
        cells = []
        for rule in RULES:
            cell = _ms([s["acc"][rule] for s in per_seed])
            n_fb = sum(s["fallback"][rule] for s in per_seed)
            if n_fb and rule in ("gwa", "labelwave"):
                cell += f" ({n_fb} no choice)"
            cells.append(cell)
        trust = [s["trust"] for s in per_seed]
        cells.append("/".join(str(trust.count(level)) for level in ("clear", "weak", "none")))
        cells.append(_ms([s["spearman"] for s in per_seed], scale=1.0, digits=2))
        t1.append(f"| {name} ({noise[name]:.1%}) | " + " | ".join(cells) + " |")
        t2.append(f"| {name} | " + " | ".join(", ".join(str(s["epoch"][r]) for s in per_seed)
                                               for r in RULES if r != "last") + " |")
        w = [s["why"] for s in per_seed]

        def eps(k: str) -> str:
            return ", ".join("-" if x[k] is None else str(x[k]) for x in w)

        t3.append("| " + " | ".join([
            name,
            f"{_ms([x['fit'] for x in w])} / {_ms([x['fit_mislabeled'] for x in w])}",
            eps("best"), eps("mean_peak"), ", ".join(str(s["epoch"]["gwa"]) for s in per_seed),
            f"{eps('gwa_peak_all')} ({_ms([x['gwa_peak_all_acc'] for x in w])})",
            _ms([x["mean_rise"] for x in w], scale=1.0, digits=3),
            _ms([x["test_fall"] for x in w]),
            _ms([x["spearman_mean"] for x in w], scale=1.0, digits=2),
        ]) + " |")
    lines += ["Test accuracy (%) of the chosen epoch, mean ± std over seeds:", "", *t1, "",
              "Chosen epoch per seed (0-based; val columns: epochs of the split runs):", "", *t2, "",
              "What the curves do (per seed unless mean ± std):", "", *t3, ""]
    # Did the regime do what it is named for? Said in the output, never hidden.
    drops = {n: float(np.mean([-s["why"]["test_fall"] for s in summary[n]])) * 100 for n in args.label_sets}
    drop_txt = ", ".join(f"{n} {d:.1f}" for n, d in drops.items())
    lines.append(f"Mean fall of test accuracy from the best epoch to the last (points): {drop_txt}.")
    if regime == "memorise":
        checked = [n for n in MEMORISE_SETS if n in drops]
        failed = [n for n in checked if drops[n] < MEMORISE_DROP]
        if not checked:
            lines.append("Memorisation not checked: neither worst nor random1 was run.")
        elif failed:
            lines.append(f"WARNING: this regime did NOT memorise enough: the last epoch is less than "
                         f"{MEMORISE_DROP:g} points below the best on {', '.join(failed)}; the comparison of the "
                         "rules is then not the one the paper's Table 1 makes.")
        else:
            lines.append(f"Memorisation confirmed: the last epoch is at least {MEMORISE_DROP:g} points below the best "
                         f"on {', '.join(checked)}.")
    return lines, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regime", nargs="+", choices=("memorise", "decay", "finetune"),
                    help="regimes to run (default: all three; with --quick: memorise)")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; with --quick 0 1)")
    ap.add_argument("--quick", action="store_true",
                    help="pool 2000, fewer epochs and seeds, memorise regime only unless --regime (about 8 minutes)")
    ap.add_argument("--held-out", action="store_true",
                    help="add the held-out label sets random2 and random3 (run once, after tuning)")
    ap.add_argument("--label-sets", nargs="+", choices=(*TUNING_SETS, *HELD_OUT_SETS), help=argparse.SUPPRESS)
    ap.add_argument("--pool", type=int, help="training pool: the first N rows (default 3000; --quick 2000)")
    ap.add_argument("--epochs", type=int, help="override the epochs of every regime (not of pretraining)")
    ap.add_argument("--pretrain-epochs", type=int, help="override the epochs of the finetune regime's pretraining")
    ap.add_argument("--test-block", type=int, default=5000,
                    help="last rows of the 20,000 held out with their clean labels as test images (default 5000)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="worker processes, one thread each (default: min(2, CPUs))")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder with cifar10/ and cifar10n/")
    ap.add_argument("--out", default=str(REPO / "bench_out" / "early_stopping"), help="folder for the JSON curves")
    args = ap.parse_args()
    args.regime = args.regime or (["memorise"] if args.quick else ["memorise", "decay", "finetune"])
    args.seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else [0, 1, 2])
    args.pool = args.pool or (2000 if args.quick else 3000)
    args.label_sets = args.label_sets or [*TUNING_SETS, *(HELD_OUT_SETS if args.held_out else ())]
    if not 1000 <= args.test_block <= 20_000 - PRETRAIN_ROWS[1] or args.pool > PRETRAIN_ROWS[0] or args.pool < 200:
        raise SystemExit(f"--pool must lie in [200, {PRETRAIN_ROWS[0]}] and --test-block in [1000, "
                         f"{20_000 - PRETRAIN_ROWS[1]}]: the pool, the pretraining part and the test block "
                         "never overlap")
    data = Path(args.data)
    label_arrays = load_cifar10n(data_files(data).labels)
    clean = label_arrays["clean_label"]
    noise = {n: float(np.mean(label_arrays[CIFAR10N_LABEL_SETS[n]][: args.pool] != clean[: args.pool]))
             for n in args.label_sets}
    specs = regimes()
    for regime in args.regime:
        spec = specs[regime]
        if args.quick:
            spec["recipe"] = {**spec["recipe"], **spec["quick"]}
            if "pretrain" in spec:
                spec["pretrain"] = {**spec["pretrain"], **spec["pretrain_quick"]}
        if args.epochs:
            spec["recipe"] = {**spec["recipe"], "epochs": args.epochs}
        if args.pretrain_epochs and "pretrain" in spec:
            spec["pretrain"] = {**spec["pretrain"], "epochs": args.pretrain_epochs}

    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    n_test = 1000 + args.test_block
    hw = hardware(torch.device("cpu"))
    header = [
        "# Early stopping without a validation set on CIFAR-10-N (protocol of Hölzl et al. 2025, Table 1)",
        "",
        f"Command: `{command}`",
        "",
        f"Hardware: {hw}; {args.workers} worker process(es) of 1 thread each.",
        "",
        (f"Data: training pool = the first {args.pool:,} CIFAR-10 training images with the noisy label set of the row "
         f"(10% / 1% of it held out, with their noisy labels, in the split runs, drawn per seed); test set = "
         f"{n_test:,} clean images: the 1,000 CIFAR-10 test images PLUS training images "
         f"{20_000 - args.test_block:,}..19,999 held out with their CLEAN labels, never trained on. "
         f"Seeds: {' '.join(map(str, args.seeds))}."),
        "",
    ]
    for regime in args.regime:
        spec = specs[regime]
        text = f"Regime {regime}: {describe(spec['recipe'])}; GWA rule mode '{spec['mode']}'"
        if "pretrain" in spec:
            text += (f"; pretrained once (seed {args.seeds[0]}) on the CLEAN labels of training images "
                     f"{PRETRAIN_ROWS[0]:,}..{PRETRAIN_ROWS[1] - 1:,} with {describe(spec['pretrain'])}, "
                     "then fine-tuned with all layers and the pretrained head")
        header += [text + ".", ""]
    print("\n".join(header), flush=True)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gwa-early-stopping-") as tmp:
        pre, after, free = build_jobs(args, specs, label_arrays, Path(tmp))
        with worker_pool(args.workers, _init_worker, (str(data), 1)) as pool:
            results = run_jobs(pool, pre, after, free, log=lambda s: print(s, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0

    body: list[str] = []
    summaries: dict[str, Any] = {}
    for regime in args.regime:
        spec = specs[regime]
        body += [f"## Regime {regime}", ""]
        if "pretrain" in spec:
            pre_res = results[(regime, "clean", args.seeds[0], "pretrain")]
            body += [f"Pretrained model: test accuracy {pre_res['curves']['test_acc'][-1]:.1%} before fine-tuning.", ""]
        lines, summaries[regime] = regime_tables(regime, spec, args, results, noise)
        body += lines + [""]
    job_seconds = sum(r["seconds"] for r in results.values())
    body += [f"Wall time {wall / 60:.1f} min ({len(results)} training runs, {job_seconds / 60:.1f} worker-minutes).",
             "A rule that picks no epoch keeps the last one ('no choice' counts those seeds). GWA trust: "
             "assess_choice levels over the seeds. Spearman: over all epochs with a defined GWA."]
    print("\n".join(body))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = ("quick" if args.quick else "full") + "-" + "-".join(args.regime) + ("-heldout" if args.held_out else "")
    dump = {
        "command": command, "hardware": hw, "wall_seconds": wall, "pool": args.pool, "test_images": n_test,
        "seeds": args.seeds, "noise": noise,
        "regimes": {k: {kk: vv for kk, vv in specs[k].items() if kk not in ("quick", "pretrain_quick")}
                    for k in args.regime},
        "runs": [{"regime": k[0], "label_set": k[1], "seed": k[2], "run": k[3],
                  **{kk: vv for kk, vv in v.items() if kk != "key"}} for k, v in sorted(results.items())],
        "choices": summaries,
    }
    (out / f"curves-{tag}.json").write_text(json.dumps(dump, indent=1, default=float))
    (out / f"table-{tag}.md").write_text("\n".join(header + body) + "\n")
    print(f"\nCurves: {out / f'curves-{tag}.json'}; tables: {out / f'table-{tag}.md'}")


if __name__ == "__main__":
    main()
