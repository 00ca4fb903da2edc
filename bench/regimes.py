"""Training regime x label set: how the analysis defaults (the ranking, the training phase,
the count) do, and which epoch to keep, when the model memorises its labels, when it does
not, and when it is fine-tuned. The regimes, the data split and the protocol:
docs/benchmarks/index.md; every setting is printed on the page.

    python bench/regimes.py --quick --prefixes     # tuning sets, and every prefix of every recording
    python bench/regimes.py --quick --held-out     # random2, random3 and pair30: run once, after tuning
    python bench/regimes.py --runs RUN... --verified 100,200   # re-analyse kept runs; a verified sample
    bash bench/regimes_gpu.sh                      # --mode gpu, on a CUDA machine

Each run trains through :func:`gwa_diag.training.engine.train` (eval sets: the clean test
set, a 10% validation split with the noisy labels and its first tenth) into a temporary
folder under --out, removed at the end unless --keep-runs, in --workers processes of one
thread each, and is read with :func:`gwa_diag.analysis.pipeline.analyze`. With --prefixes
the script exits 1 when the default of a prefix ranks more than PREFIX_TARGET below the best
fixed window of that prefix.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # the wall time printed at the end includes imports and data loading

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from gwa_diag import phase_rule  # noqa: E402
from gwa_diag.analysis.audit import DEFAULT_STRATA, MIN_PER_STRATUM, allocate, stratify  # noqa: E402
from gwa_diag.analysis.metrics import ESTIMATE_ROW, auroc  # noqa: E402
from gwa_diag.analysis.phase import TrainingPhase, number_or_none, phase_of_curves, window_epochs  # noqa: E402
from gwa_diag.analysis.pipeline import Analysis, analyze  # noqa: E402
from gwa_diag.checks import DEFAULT_SCORER, DEFAULT_WINDOW  # noqa: E402
from gwa_diag.early_stopping import rank_correlation  # noqa: E402
from gwa_diag.training.config import TrainConfig  # noqa: E402
from gwa_diag.training.data import ArrayDataset  # noqa: E402
from gwa_diag.training.engine import train  # noqa: E402
from harness import (  # noqa: E402
    HELD_OUT_SETS, MACHINES, MODEL_NAMES, REPO, TUNING_SETS, add_common_args, clean_test_set, data_files, describe,
    earliest_best, label_set_names, labelled, load_cifar, markdown_table, mixture_row, new_model, pair_rate,
    per_epoch_means, recipe, run_jobs, subset, validation_split, write_page,
)
from harness import fmt as _f  # noqa: E402

#: The harness' held-out CIFAR-10-N sets, plus 30% synthetic pair noise.
HELD_OUT = (*HELD_OUT_SETS, "pair30")
GPU_RUNS = ("dec_worst", "mem_worst")
FIXED_WINDOWS = ("second_half", "after_warmup", "all")
#: Rows of the first 20,000 training images: the pool is below TEST_ROWS_START, the extra
#: clean test images start there, the pretraining images are PRETRAIN_ROWS.
TEST_ROWS_START = 10_000
PRETRAIN_ROWS = (15_000, 20_000)
VAL_FRACTION = 0.1
#: The small validation split ("val 1%"): this share of the validation split, its first rows.
SMALL_VAL_SHARE = 0.1
#: The memorise regime must fit at least this share of its given labels (train_acc of an epoch);
#: the table shows the first epoch that did and the fit of the last.
MEMORISE_FIT = 0.95
#: A GWA choice rated "clear" this far (accuracy points) below the best epoch is counted.
CLEAR_BUT_WORSE = 2.0

#: Epochs of each regime (``quick`` under --quick, ``gpu`` under --mode gpu); ``--epochs`` overrides them.
REGIMES: dict[str, dict[str, Any]] = {
    "default": {"epochs": 15, "quick": 12, "gpu": 40},
    # Measured on 2,700 training images: 95% of the labels first fitted at epochs 28-31 (worst,
    # aggre, random1), but at a constant rate the fit dips by up to 8 points now and then.
    "memorise": {"epochs": 50, "quick": 45, "gpu": 40},
    "finetune": {"epochs": 30, "quick": 20, "pretrain": 10, "pretrain_quick": 5},
    # Slow memorisers: AdamW at a constant rate without augmentation, as ``memorise``, but
    # slowed down by a lower rate, weight decay or a larger batch, so the fit of the given
    # labels climbs for tens of epochs and may stop short of the memorisation threshold.
    "slow_lr": {"epochs": 50, "quick": 45},
    "slow_wd": {"epochs": 50, "quick": 45},
    "slow_batch": {"epochs": 50, "quick": 45},
}
#: The regimes run unless ``--regimes`` names others (the slow memorisers run only on the CPU).
SLOW_REGIMES = ("slow_lr", "slow_wd", "slow_batch")
#: --mode: the sizes of each machine (its model, precision and device: harness.MACHINES). ``gpu``
#: is the setting of the two recordings under gpu_runs/, on the first 15,000 images a lent GPU
#: machine carries, so it has no finetune regime (its pretraining rows are not there).
MODES: dict[str, dict[str, Any]] = {
    "cpu": {"n": 10_000, "quick_n": 3000, "test_extra": 5000, "quick_test_extra": 2000},
    "gpu": {"n": 10_000, "test_extra": 5000},
}


# -- recipes ----------------------------------------------------------------------------------
def regime_config(regime: str, epochs: int, seed: int, hw: str = "cpu", device: str | None = None) -> TrainConfig:
    """The harness recipe of a regime (``default`` is the recipe ``decay``)."""
    return recipe("decay" if regime == "default" else regime, epochs=epochs, seed=seed, hw=hw, device=device)


# -- data -------------------------------------------------------------------------------------
class Data:
    """Everything read once: the pool, the clean test set, the pretraining set, the label file."""

    def __init__(self, data: Path, n: int, test_extra: int, *, pretraining: bool = True) -> None:
        cifar = load_cifar(data, n, first15000=True)
        full, clean, self.label_path = cifar.full, cifar.clean, cifar.labels
        need = PRETRAIN_ROWS[1] if pretraining else TEST_ROWS_START + test_extra
        if len(full) < need:
            raise SystemExit(f"{len(full):,} training images under --data; this table needs the first {need:,} "
                             "(finetune's pretraining uses rows 15,000..19,999: leave it out with --regimes)")
        self.pool = cifar.pool
        rows = np.arange(TEST_ROWS_START, TEST_ROWS_START + test_extra)
        self.test = clean_test_set(cifar.test, full, rows, clean)
        self.pretrain = None
        if pretraining:
            pre = np.arange(*PRETRAIN_ROWS)
            self.pretrain = ArrayDataset(full.images_nchw[torch.as_tensor(pre)], clean[pre], sample_ids=pre,
                                         class_names=full.class_names,
                                         spec={"source": "arrays", "rows": list(PRETRAIN_ROWS), "labels": "clean"})


def test_note(test_extra: int) -> str:
    """What the test set holds, for people."""
    extra = (f" + training images {TEST_ROWS_START:,}..{TEST_ROWS_START + test_extra - 1:,} with their CLEAN labels, "
             "never trained on" if test_extra else "")
    return f"{1000 + test_extra:,} clean images: the first 1,000 CIFAR-10 test images{extra}"


def label_set_splits(data: Data, name: str, seed: int):
    """(train set, validation split, its first tenth, noise rate of the training part) of one
    label set: the pool with its labels, split 90/10 with ``seed`` (the validation splits keep
    the noisy labels)."""
    ds = labelled(name, data.pool, data.label_path)
    fit_pos, val_pos = validation_split(len(ds), VAL_FRACTION, seed)
    train_set = subset(ds, fit_pos, {"split": "train", "val_fraction": VAL_FRACTION, "seed": seed})
    val_set = subset(ds, val_pos, {"split": "val", "val_fraction": VAL_FRACTION, "seed": seed})
    small = val_pos[:max(1, round(SMALL_VAL_SHARE * len(val_pos)))]
    small_set = subset(ds, small, {"split": "val1", "val_fraction": VAL_FRACTION * SMALL_VAL_SHARE, "seed": seed})
    noise = float(np.mean(train_set.labels != train_set.clean_labels))
    return train_set, val_set, small_set, noise


# -- analysis of one run ----------------------------------------------------------------------
def per_epoch_margins(a: Analysis, ids: pd.Index) -> tuple[np.ndarray, list[int]]:
    """Mean margin per (sample in ``ids``, complete epoch) [len(ids), epochs], NaN where a
    sample has no finite margin that epoch; presentations within an epoch averaged."""
    return per_epoch_means(a.run, "margin", ids)


def window_aurocs(margins: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of aum (the negated mean margin, epochs weighted alike) over every contiguous
    window of epoch positions [i, j]: a [epochs, epochs] matrix, NaN below the diagonal."""
    finite = np.isfinite(margins)
    sums = np.concatenate([np.zeros((len(margins), 1)), np.cumsum(np.where(finite, margins, 0.0), axis=1)], axis=1)
    counts = np.concatenate([np.zeros((len(margins), 1)), np.cumsum(finite, axis=1)], axis=1)
    n_epochs = margins.shape[1]
    out = np.full((n_epochs, n_epochs), np.nan)
    for i in range(n_epochs):
        for j in range(i, n_epochs):
            n = counts[:, j + 1] - counts[:, i]
            with np.errstate(invalid="ignore", divide="ignore"):
                score = -(sums[:, j + 1] - sums[:, i]) / n  # aum: -(mean margin), higher = more suspicious
            out[i, j] = auroc(np.where(n > 0, score, np.nan), y)
    return out


def best_window(matrix: np.ndarray, epochs: list[int], k: int | None = None) -> dict[str, Any]:
    """The best window (highest AUROC, the earliest on ties) among those inside the first
    ``k`` epochs (every epoch when None)."""
    k = matrix.shape[0] if k is None else k
    sub = np.where(np.isnan(matrix[:k, :k]), -np.inf, matrix[:k, :k])
    i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
    return {"auroc": float(sub[i, j]), "window": [epochs[i], epochs[j]], "windows_tried": k * (k + 1) // 2}


def oracle_window(a: Analysis, matrix: np.ndarray | None = None, epochs: list[int] | None = None) -> dict[str, Any]:
    """The contiguous window [a, b] of epochs whose mean margin (aum) ranks the wrong labels
    best (highest AUROC), over every window."""
    if matrix is None or epochs is None:
        margins, epochs = per_epoch_margins(a, a.truth.index)
        matrix = window_aurocs(margins, a.truth.to_numpy())
    return best_window(matrix, epochs)


# -- a verified sample chooses the window ----------------------------------------------------
#: --verified: draws per cell and sample size (seeds 0..R-1), unless --verified-repeats says otherwise.
VERIFIED_REPEATS = 200


def window_pairs(n_epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) epoch positions of every contiguous window, in np.triu_indices order."""
    return np.triu_indices(n_epochs)


def window_scores(margins: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """aum (the negated mean margin, epochs weighted alike) of every sample (rows of
    ``margins`` [samples, epochs]) over every window [first[k], last[k]]: [windows, samples],
    NaN where a sample has no finite margin inside the window (as :func:`window_aurocs`)."""
    finite = np.isfinite(margins)
    zero = np.zeros((len(margins), 1))
    sums = np.concatenate([zero, np.cumsum(np.where(finite, margins, 0.0), axis=1)], axis=1)
    counts = np.concatenate([zero, np.cumsum(finite, axis=1)], axis=1)
    n = counts[:, last + 1] - counts[:, first]
    with np.errstate(invalid="ignore", divide="ignore"):
        score = -(sums[:, last + 1] - sums[:, first]) / n
    return np.where(n > 0, score, np.nan).T


def weighted_aurocs(scores: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted AUROC of each row of ``scores`` [rows, samples] (higher = more suspicious)
    for the labels ``y`` (True = wrong) and the sample weights ``w``: the weighted
    Mann-Whitney statistic sum_{i wrong, j right} w_i w_j [s_i > s_j, ties 1/2] / (W+ W-),
    as sklearn's ``roc_auc_score(..., sample_weight=w)``. NaN scores count as the lowest (as
    :func:`gwa_diag.analysis.metrics.auroc`); NaN for a row without a positive or a negative
    weight. One sort per row, no pairs: rows x samples memory."""
    s = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    y = np.asarray(y, dtype=bool)
    w = np.asarray(w, dtype=np.float64)
    rows, m = s.shape
    order = np.argsort(s, axis=1, kind="stable")
    ss = np.take_along_axis(s, order, axis=1)
    wpos, wneg = np.where(y, w, 0.0)[order], np.where(y, 0.0, w)[order]
    # Runs of equal scores (ties) as groups, numbered across the flattened rows: every row
    # starts a group, so no group spans two rows.
    new = np.ones((rows, m), dtype=bool)
    new[:, 1:] = ss[:, 1:] != ss[:, :-1]
    group = np.cumsum(new.ravel()) - 1
    neg_in_group = np.bincount(group, weights=wneg.ravel())
    neg_before = np.cumsum(neg_in_group) - neg_in_group  # right weight in the groups before, all rows
    group = group.reshape(rows, m)
    below = neg_before[group] - neg_before[group[:, :1]]  # right weight scored strictly lower, this row
    num = np.sum(wpos * (below + 0.5 * neg_in_group[group]), axis=1)
    den = wpos.sum(axis=1) * wneg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def choose_window(aurocs: np.ndarray, first: np.ndarray, last: np.ndarray) -> int | None:
    """The window with the highest AUROC on the verified sample (NaN windows skipped); among
    ties (within 1e-12) the one ending latest, then the shortest. None when every one is NaN."""
    ok = np.isfinite(aurocs)
    if not ok.any():
        return None
    top = ok & (aurocs >= np.max(aurocs[ok]) - 1e-12)
    candidates = np.flatnonzero(top)
    return int(candidates[np.lexsort((-first[candidates], -last[candidates]))[0]])


def auroc_se(a: float, n_pos: int, n_neg: int) -> float:
    """Hanley-McNeil standard error of an AUROC ``a`` from ``n_pos`` wrong and ``n_neg`` right labels."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return math.sqrt(max(a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a), 0.0) / (n_pos * n_neg))


def verified_design(ranking: pd.DataFrame, n: int, seed: int) -> tuple[pd.Index, np.ndarray]:
    """(sample ids, design weights N_h / n_h) of the verified sample a user drawing ``n``
    with ``seed`` gets: the design of :func:`gwa_diag.analysis.audit.draw_sample` (strata
    of equal size by rank, Neyman allocation, the same floor) without writing the run's audit folder."""
    frame, guess = stratify(ranking, DEFAULT_STRATA, seed)
    sizes = np.bincount(frame["stratum"].to_numpy(), minlength=DEFAULT_STRATA)
    sampled = allocate(n, sizes, guess, np.minimum(sizes, MIN_PER_STRATUM))
    stratum = frame["stratum"].to_numpy()
    drawn = frame["order"].to_numpy() < sampled[stratum]
    return frame.index[drawn], (sizes / np.maximum(sampled, 1))[stratum[drawn]]


def verified_rows(a: Analysis, margins: np.ndarray, matrix: np.ndarray, epochs: list[int], ns: list[int],
                  repeats: int) -> dict[str, Any]:
    """Per verified-sample size n: ``repeats`` draws (seeds 0..repeats-1) of the verified
    sample, answered with the truth; each chooses the window with the highest design-weighted
    AUROC on it (``plain``), or only when that beats the default window's AUROC on the sample
    by more than its standard error (``guarded``, else the default window). Each choice's
    AUROC on ALL samples from ``matrix``: mean, 10th percentile, share of draws above the default's."""
    truth = a.truth
    y_all = truth.to_numpy(dtype=bool)
    index = {e: i for i, e in enumerate(epochs)}
    window = a.epoch_choices.window
    first, last = window_pairs(len(epochs))
    d = int(np.flatnonzero((first == index[window[0]]) & (last == index[window[-1]]))[0])
    full = matrix[first, last]
    default = float(full[d])
    out: dict[str, Any] = {"default": default, "default_window": [window[0], window[-1]], "repeats": repeats, "n": {}}
    for n in ns:
        if n > len(a.ranking):
            continue
        got: dict[str, list[float]] = {"plain": [], "guarded": []}
        switched = skipped = 0
        for r in range(repeats):
            ids, w = verified_design(a.ranking, n, r)
            pos = truth.index.get_indexer(ids)
            keep = pos >= 0
            pos, w = pos[keep], w[keep]
            y = y_all[pos]
            av = weighted_aurocs(window_scores(margins[pos], first, last), y, w)
            c = choose_window(av, first, last)
            if c is None:  # no wrong or no right label in the sample: the default stays
                skipped += 1
                c = d
            got["plain"].append(float(full[c]))
            se = auroc_se(float(av[c]), int(y.sum()), int((~y).sum())) if c != d else math.inf
            guard = bool(np.isfinite(av[d]) and av[c] - av[d] > se)
            switched += guard
            got["guarded"].append(float(full[c if guard else d]))
        row: dict[str, Any] = {"switched": switched / repeats, "no_choice": skipped}
        for k, v in got.items():
            v_ = np.asarray(v)
            row[k] = {"mean": float(v_.mean()), "p10": float(np.percentile(v_, 10)),
                      "beats": float(np.mean(v_ > default + 1e-12)), "loses": float(np.mean(v_ < default - 1e-12))}
        out["n"][str(n)] = row
    return out


def _curves(a: Analysis, epochs: list[int]) -> tuple[list[float | None] | None, list[float | None], list[float | None] | None]:
    """(fit, contradicted share, learning rate) of ``epochs``, as the phase rule reads them."""
    ep = a.run.epochs()
    by_epoch = {int(e): i for i, e in enumerate(ep["epoch"])}
    pos = [by_epoch[e] for e in epochs]

    def column(name: str) -> list[float | None] | None:
        return [number_or_none(ep[name].iloc[i]) for i in pos] if name in ep else None

    fit, share, lr = column("train_acc"), column("contradicted"), column("lr")
    if share is None or any(v is None for v in share):
        share = a.epoch_choices.phase.curve.set_index("epoch").loc[epochs, "contradicted"].tolist()
    return fit, share, lr


def _prefixes(epochs: list[int], curves: tuple) -> Iterator[tuple[int, TrainingPhase, list[int]]]:
    """(k, phase, default window) of every prefix of ``k`` epochs from a quarter of the run on."""
    fit, share, lr = curves
    for k in range(math.ceil(len(epochs) / 4), len(epochs) + 1):
        tp = phase_of_curves(epochs[:k], fit[:k] if fit else [None] * k, share[:k], None if lr is None else lr[:k])
        yield k, tp, window_epochs(epochs[:k], "phase", phase=tp)


def prefix_rows(matrix: np.ndarray, epochs: list[int], curves: tuple) -> list[dict[str, Any]]:
    """Per prefix of the recording (cut after each epoch from a quarter of the run to its
    end: a run stopped there), the default window read on that prefix alone and its AUROC,
    against the best fixed window inside the prefix. Nothing is retrained: the phase is read
    from the prefix of epochs.parquet's curves, the AUROCs come from ``matrix``."""
    index = {e: i for i, e in enumerate(epochs)}
    out = []
    for k, tp, window in _prefixes(epochs, curves):
        default = float(matrix[index[window[0]], index[window[-1]]])
        best = best_window(matrix, epochs, k)
        out.append({"epochs": k, "last_epoch": epochs[k - 1], "window": [window[0], window[-1]],
                    "weight": tp.weight, "fitted_wrong": tp.fitted_wrong, "onset": tp.onset,
                    "default": default, "best": best["auroc"], "best_window": best["window"],
                    "gap": best["auroc"] - default})
    return out


#: --prefixes also reads every prefix again with these plateau constants (horizon, rise) in
#: place of phase_rule's: how much margin the shipped pair has, and what the others cost in
#: the noise estimate, which the count reads on a memorised run.
PLATEAU_GRID = tuple((h, r) for h in (6, 8, 10) for r in (1.5, 1.6, 1.75, 2.0))


@contextlib.contextmanager
def plateau_constants(horizon: int, rise: float) -> Iterator[None]:
    """The phase rule reads ``horizon`` and ``rise`` inside the block (module constants, restored after)."""
    saved = phase_rule.PLATEAU_HORIZON, phase_rule.PLATEAU_RISE
    phase_rule.PLATEAU_HORIZON, phase_rule.PLATEAU_RISE = horizon, rise
    try:
        yield
    finally:
        phase_rule.PLATEAU_HORIZON, phase_rule.PLATEAU_RISE = saved


def plateau_sensitivity(matrix: np.ndarray, prefixes: list[dict[str, Any]], epochs: list[int], curves: tuple,
                        noise: float) -> dict[str, dict[str, Any]]:
    """Per pair of :data:`PLATEAU_GRID`: the worst and mean gap of the default window to the
    best fixed window over the prefixes (``prefixes``: their best windows), and the distance
    of the whole run's noise estimate from the true share of wrong labels ``noise``."""
    index = {e: i for i, e in enumerate(epochs)}
    out = {}
    for horizon, rise in PLATEAU_GRID:
        with plateau_constants(horizon, rise):
            read = list(_prefixes(epochs, curves))
        gaps = [p["best"] - float(matrix[index[w[0]], index[w[-1]]]) for p, (_, _, w) in zip(prefixes, read)]
        whole = read[-1][1]  # the whole run
        out[f"{horizon}/{rise:g}"] = {"horizon": horizon, "rise": rise, "worst": max(gaps), "mean": float(np.mean(gaps)),
                                      "noise_error": None if whole.noise is None else abs(whole.noise - noise)}
    return out


def analyse_run(run_dir: Path, verified: list[int] | None = None, repeats: int = VERIFIED_REPEATS) -> dict[str, Any]:
    """Every number of one row of the tables, from one finished run directory (read only);
    with ``verified`` (sample sizes), the window chosen on verified samples (:func:`verified_rows`)."""
    t0 = time.perf_counter()
    a = analyze(run_dir)  # the defaults: aum over the phase window, the estimate rule
    if a.truth is None:
        raise SystemExit(f"{run_dir}: no clean labels to score against ({a.truth_reason})")
    det = a.detection
    truth = a.truth
    true_count = int(truth.sum())
    phase = a.epoch_choices.phase
    cell: dict[str, Any] = {
        "n": int(len(truth)), "true_count": true_count, "noise": true_count / len(truth),
        "default": {"scorer": DEFAULT_SCORER, "window": DEFAULT_WINDOW,
                    "auroc": number_or_none(det.loc[DEFAULT_SCORER, "auroc"]), "ap": number_or_none(det.loc[DEFAULT_SCORER, "ap"]),
                    "align_mean_auroc": number_or_none(det.loc["align_mean", "auroc"])},
        "phase": {"memorised": bool(phase.memorised), "onset": phase.onset, "window": list(a.epoch_choices.window),
                  "reason": phase.reason, "plateau": phase.plateau, "noise": phase.noise,
                  "weight": phase.weight, "fitted_wrong": phase.fitted_wrong},
        "windows": {},
    }
    previous = None
    for w in FIXED_WINDOWS:
        aw = analyze(run_dir, window=w)
        cell["windows"][w] = {"align_mean": number_or_none(aw.detection.loc["align_mean", "auroc"]),
                              "aum": number_or_none(aw.detection.loc["aum", "auroc"]),
                              "epochs": [aw.epoch_choices.window[0], aw.epoch_choices.window[-1]]}
        if w == "second_half":
            # The previous estimate: disagreement over the three epochs around the GWA choice.
            previous = int((aw.summary["disagreement"].to_numpy(dtype=np.float64, na_value=np.nan) > 0.5).sum())
    margins, margin_epochs = per_epoch_margins(a, truth.index)
    matrix = window_aurocs(margins, truth.to_numpy())
    cell["oracle"] = oracle_window(a, matrix, margin_epochs)
    curves = _curves(a, margin_epochs)
    cell["prefixes"] = prefix_rows(matrix, margin_epochs, curves)
    cell["plateau_grid"] = plateau_sensitivity(matrix, cell["prefixes"], margin_epochs, curves, cell["noise"])
    if verified:
        cell["verified"] = verified_rows(a, margins, matrix, margin_epochs, verified, repeats)
    score = a.summary.loc[truth.index, DEFAULT_SCORER].to_numpy(dtype=np.float64)
    try:
        gmm = mixture_row(score, truth.to_numpy())["n_flagged"]
    except ImportError:
        gmm = None  # scikit-learn missing: pip install -r bench/requirements.txt
    flags = det.loc[ESTIMATE_ROW]
    cell["count"] = {"true": true_count, "estimate": a.estimate.total, "previous": previous, "gmm": gmm}
    cell["flags"] = {"precision": number_or_none(flags["precision"]), "recall": number_or_none(flags["recall"]), "f1": number_or_none(flags["f1"]),
                     "n_flagged": int(flags["n_flagged"])}

    # Stopping: test accuracy (eval_acc) at each rule's epoch.
    ep = a.run.epochs()
    epochs = [int(e) for e in ep["epoch"]]
    acc = {e: number_or_none(v) for e, v in zip(epochs, ep["eval_acc"])} if "eval_acc" in ep else {}
    val = {e: number_or_none(v) for e, v in zip(epochs, ep["val_acc"])} if "val_acc" in ep else None
    val1 = {e: number_or_none(v) for e, v in zip(epochs, ep["val1_acc"])} if "val1_acc" in ep else None
    last = epochs[-1]
    kept = phase.plateau if phase.memorising and phase.plateau is not None else last
    st = a.stopping
    # The epoch whose weights the engine kept online (run.json "memorisation"), beside the
    # offline read above: they should agree (None: nothing kept, the run did not memorise).
    cell["kept_online"] = (a.run.meta.get("memorisation") or {}).get("kept_epoch")
    choice = {"kept": kept, "best": earliest_best(acc), "last": last, "val": earliest_best(val) if val is not None else None,
              "val1": earliest_best(val1) if val1 is not None else None, "gwa": st.gwa.epoch,
              "labelwave": st.labelwave.epoch}
    gwa = [number_or_none(v) for v in ep["gwa"]] if "gwa" in ep else [None] * len(epochs)
    pairs = [(g, acc.get(e)) for e, g in zip(epochs, gwa) if g is not None and acc.get(e) is not None]
    cell["stopping"] = {
        "epoch": choice, "acc": {k: (acc.get(e) if e is not None else None) for k, e in choice.items()},
        "has_val": val is not None, "has_val1": val1 is not None, "trust": st.trust.level,
        "trust_reasons": list(st.trust.reasons), "gwa_reason": st.gwa.reason, "labelwave_reason": st.labelwave.reason,
        # Does the GWA curve follow the test accuracy over the epochs (the premise of the GWA choice)?
        "spearman_gwa_test": rank_correlation(*zip(*pairs)) if pairs else None,
    }
    fit = [number_or_none(v) for v in ep["train_acc"]] if "train_acc" in ep else []
    cell["fit_last"] = fit[-1] if fit else None
    cell["fit_max"] = max((v for v in fit if v is not None), default=None)
    cell["fit_reached"] = next((e for e, v in zip(epochs, fit) if v is not None and v >= MEMORISE_FIT), None)
    cell["curves"] = {"epoch": epochs, "eval_acc": [acc.get(e) for e in epochs], "train_acc": fit,
                      "val_acc": [val.get(e) for e in epochs] if val is not None else None,
                      "val1_acc": [val1.get(e) for e in epochs] if val1 is not None else None,
                      "gwa": gwa if "gwa" in ep else None}
    cell["t_analysis"] = time.perf_counter() - t0
    return cell


# -- training ---------------------------------------------------------------------------------
def pretrain(data: Data, epochs: int, seed: int, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """Train the tiny CNN on the clean pretraining images (CPU mode only); its state dict's file and a note."""
    assert data.pretrain is not None
    t0 = time.perf_counter()
    model = new_model("tiny", data.pretrain.num_classes, seed)
    cfg = recipe("decay", epochs=epochs, seed=seed)
    result = train(model, data.pretrain, tmp / "pretrain", config=cfg, eval_set=data.test,
                   meta={"benchmark": "bench/regimes.py", "part": "pretraining (clean labels)"})
    path = tmp / "pretrained.pt"
    torch.save(model.state_dict(), path)
    acc = result.history[-1].get("eval_acc") if result.history else None
    return path, {"epochs": epochs, "seed": seed, "images": len(data.pretrain), "test_acc": acc,
                  "recipe": describe(cfg), "seconds": time.perf_counter() - t0}


def train_cell(regime: str, name: str, seed: int, epochs: int, data: Data, tmp: Path,
               pretrained: Path | None, hw: str = "cpu", device: str | None = None) -> tuple[Path, dict[str, Any]]:
    train_set, val_set, small_set, noise = label_set_splits(data, name, seed)
    cfg = regime_config(regime, epochs, seed, hw, device)
    model = new_model(MACHINES[hw]["model"], train_set.num_classes, seed)
    if regime == "finetune":
        assert pretrained is not None
        model.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
    run_dir = tmp / f"{regime}-{name}-seed{seed}"
    t0 = time.perf_counter()
    train(model, train_set, run_dir, config=cfg, eval_set={"eval": data.test, "val": val_set, "val1": small_set},
          meta={"benchmark": "bench/regimes.py", "regime": regime, "label_set": name, "seed": seed})
    return run_dir, {"t_train": time.perf_counter() - t0, "n_train": len(train_set), "n_val": len(val_set),
                     "noise": noise, "recipe": describe(cfg)}


# -- jobs: one training each, in worker processes of one thread -----------------------------
_DATA: dict[str, Data] = {}


def _init_worker(data_dir: str, n: int, test_extra: int, pretraining: bool, threads: int | None) -> None:
    """Load the data once per worker. In a pool the parent owns Ctrl-C: it terminates the
    workers, then removes the run directories."""
    if threads is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        torch.set_num_threads(threads)
    _DATA["data"] = Data(Path(data_dir), n, test_extra, pretraining=pretraining)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    data = _DATA["data"]
    if job["kind"] == "pretrain":
        path, note = pretrain(data, job["epochs"], job["seed"], Path(job["tmp"]))
        return {"job": job, "note": note}
    pretrained = Path(job["pretrained"]) if job.get("pretrained") else None
    run_dir, info = train_cell(job["regime"], job["name"], job["seed"], job["epochs"], data, Path(job["tmp"]), pretrained,
                               job["hw"], job["device"])
    return {"job": job, "run_dir": str(run_dir), "info": info}


def build_jobs(args: argparse.Namespace, tmp: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """(pretraining, the jobs that need it, the rest)."""
    pre, after, free = [], [], []
    pretrained = str(tmp / "pretrained.pt")
    if "finetune" in args.regimes and args.label_sets:
        pre.append({"kind": "pretrain", "epochs": args.pretrain_epochs, "seed": 0, "tmp": str(tmp)})
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in args.label_sets:
            for regime in args.regimes:
                job = {"kind": "cell", "regime": regime, "name": name, "seed": seed, "epochs": epochs_of(regime, args),
                       "tmp": str(tmp), "pretrained": pretrained if regime == "finetune" else None, "hw": args.mode,
                       "device": args.device}
                (after if regime == "finetune" else free).append(job)
    return pre, after, free


# -- tables -----------------------------------------------------------------------------------
def _err(count: int | None, true: int) -> str:
    if count is None:
        return "-"
    rel = f"{(count - true) / true:+.0%}" if true else "n/a"
    return f"{count:,} ({rel})"


def _span(epochs: list[int]) -> str:
    return f"{epochs[0]}-{epochs[-1]}" if len(epochs) > 1 else str(epochs[0])


def row_name(r: dict[str, Any], seeds: int) -> str:
    seed = f" s{r['seed']}" if seeds > 1 and r["seed"] is not None else ""
    return f"{r['regime']}{seed}"


def ranking_table(rows: list[dict[str, Any]], seeds: int) -> list[str]:
    head = ["regime", "label set (noise)", f"fit at end (first >= {MEMORISE_FIT:.0%})", "phase: window", "default AUROC / AP",
            "align_mean AUROC sh / aw / all", "aum AUROC sh / aw / all", "oracle aum AUROC [a, b]", "true count",
            "estimate (err)", "previous (err)", "GMM (err)", "default P / R / F1"]
    out = ["| " + " | ".join(head) + " |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = r["cell"]
        fit = _f(c["fit_last"])
        if c["fit_reached"] is not None:
            fit += f" (@{c['fit_reached']})"
        elif r["regime"] == "memorise":
            fit += f" (never {MEMORISE_FIT:.0%}!)"
        ph = c["phase"]
        if ph["memorised"]:
            phase = f"memorised @{ph['onset']}: {_span(ph['window'])}"
        elif ph.get("weight"):
            phase = f"memorising @{ph['onset']} (weight {ph['weight']:.2f}): {_span(ph['window'])}"
        else:
            phase = f"not memorised: {_span(ph['window'])}"
        d = c["default"]
        w = c["windows"]
        o = c["oracle"]
        cnt, fl = c["count"], c["flags"]
        out.append("| " + " | ".join([
            row_name(r, seeds), f"{r['label_set']} ({c['noise']:.1%})", fit, phase,
            f"{_f(d['auroc'])} / {_f(d['ap'])}",
            " / ".join(_f(w[k]["align_mean"]) for k in FIXED_WINDOWS),
            " / ".join(_f(w[k]["aum"]) for k in FIXED_WINDOWS),
            f"{_f(o['auroc'])} [{o['window'][0]}, {o['window'][1]}]",
            f"{cnt['true']:,}", _err(cnt["estimate"], cnt["true"]), _err(cnt["previous"], cnt["true"]),
            _err(cnt["gmm"], cnt["true"]),
            f"{_f(fl['precision'], 2)} / {_f(fl['recall'], 2)} / {_f(fl['f1'], 2)}",
        ]) + " |")
    return out


#: --prefixes: the default must rank within this AUROC of the best fixed window of every prefix.
PREFIX_TARGET = 0.02


def prefix_table(rows: list[dict[str, Any]], seeds: int) -> tuple[list[str], list[str]]:
    """(the markdown lines, the cells with a prefix whose default ranks more than
    PREFIX_TARGET below the best fixed window of that prefix). One line per cell: the
    prefixes read, the default's worst gap and the prefix where it happened."""
    head = ["regime", "label set", "prefixes (epochs)", "default AUROC at end [window]", "best at end [window]",
            "worst gap: prefix, default [window] vs best [window]", "mean gap", f"prefixes > {PREFIX_TARGET:g}"]
    out = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---:|---|---:|---:|"]
    missed = []
    for r in rows:
        pre = r["cell"]["prefixes"]
        end, worst = pre[-1], max(pre, key=lambda p: (p["gap"], -p["epochs"]))
        over = sum(1 for p in pre if p["gap"] > PREFIX_TARGET)
        if over:
            missed.append(f"{row_name(r, seeds)} / {r['label_set']}")
        out.append("| " + " | ".join([
            row_name(r, seeds), r["label_set"], f"{pre[0]['epochs']}-{end['epochs']}",
            f"{_f(end['default'])} [{_span(end['window'])}]", f"{_f(end['best'])} [{_span(end['best_window'])}]",
            f"{worst['gap']:+.3f}: {worst['epochs']}, {_f(worst['default'])} [{_span(worst['window'])}] vs "
            f"{_f(worst['best'])} [{_span(worst['best_window'])}]",
            f"{np.mean([p['gap'] for p in pre]):+.3f}", f"{over} of {len(pre)}" + (" !" if over else ""),
        ]) + " |")
    return out, missed


def plateau_table(rows: list[dict[str, Any]]) -> list[str]:
    """The prefix gaps and the noise estimate's error of every pair of :data:`PLATEAU_GRID`,
    over the cells (the shipped pair marked)."""
    head = ["horizon", "rise", f"cells with a prefix > {PREFIX_TARGET:g}", "worst gap", "mean gap",
            "noise estimate: median |error| (cells with a plateau)"]
    out = []
    for key in (f"{h}/{r:g}" for h, r in PLATEAU_GRID):
        got = [r["cell"]["plateau_grid"][key] for r in rows]
        errors = [g["noise_error"] for g in got if g["noise_error"] is not None]
        shipped = (got[0]["horizon"], got[0]["rise"]) == (phase_rule.PLATEAU_HORIZON, phase_rule.PLATEAU_RISE)
        out.append([f"{got[0]['horizon']}" + (" (shipped)" if shipped else ""), f"{got[0]['rise']:g}",
                    f"{sum(g['worst'] > PREFIX_TARGET for g in got)} of {len(got)}", f"{max(g['worst'] for g in got):+.3f}",
                    f"{np.mean([g['mean'] for g in got]):+.4f}",
                    f"{np.median(errors):.3f} ({len(errors)})" if errors else "-"])
    return markdown_table(head, out, "llrrrr")


def verified_table(rows: list[dict[str, Any]], seeds: int, ns: list[int]) -> tuple[list[str], list[str]]:
    """(the markdown lines, one summary line per sample size and variant) of --verified."""
    head = ["regime", "label set", "default AUROC [window]", "oracle [window]"]
    for n in ns:
        head += [f"n={n} plain: mean / p10 / beats", f"n={n} guarded: mean / p10 / beats (switched)"]
    out = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|" + "---:|" * (2 * len(ns))]
    gains: dict[tuple[int, str], list[float]] = {(n, k): [] for n in ns for k in ("plain", "guarded")}
    for r in rows:
        c = r["cell"]
        v = c["verified"]
        cells = [row_name(r, seeds), r["label_set"], f"{_f(v['default'])} [{_span(v['default_window'])}]",
                 f"{_f(c['oracle']['auroc'])} [{_span(c['oracle']['window'])}]"]
        for n in ns:
            got = v["n"].get(str(n))
            if got is None:
                cells += ["-", "-"]
                continue
            for k in ("plain", "guarded"):
                g = got[k]
                gains[(n, k)].append(g["mean"] - v["default"])
                cells.append(f"{_f(g['mean'])} / {_f(g['p10'])} / {g['beats']:.0%}"
                             + (f" ({got['switched']:.0%})" if k == "guarded" else ""))
        out.append("| " + " | ".join(cells) + " |")
    summary = []
    for n in ns:
        parts = []
        for k in ("plain", "guarded"):
            g = gains[(n, k)]
            if g:
                parts.append(f"{k} {np.mean(g):+.4f} (gain in {sum(x > 1e-12 for x in g)} of {len(g)} cells, loss in "
                             f"{sum(x < -1e-12 for x in g)}, worst {min(g):+.4f})")
        summary.append(f"Verified n={n}, mean AUROC gain over the default window, over the {len(rows)} cells: "
                       + "; ".join(parts) + ".")
    return out, summary


RULE_COLUMNS = (("kept", "kept"), ("best", "best"), ("last", "last"), ("val", "val 10%"), ("val1", "val 1%"),
                ("gwa", "GWA"), ("labelwave", "LabelWave"))


def stopping_table(rows: list[dict[str, Any]], seeds: int) -> tuple[list[str], list[str]]:
    """(the markdown lines, the names of the cells whose clear GWA choice is > 2 points below the best)."""
    head = ["regime", "label set", *(h for _, h in RULE_COLUMNS), "GWA trust", "Spearman(GWA, test)"]
    out = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(RULE_COLUMNS) + "---|---:|"]
    flagged = []
    for r in rows:
        s = r["cell"]["stopping"]
        cells = []
        for key, _ in RULE_COLUMNS:
            e, v = s["epoch"][key], s["acc"][key]
            if key in ("val", "val1") and not s.get(f"has_{key}"):
                cells.append("-")
            elif e is None:
                cells.append("no choice")
            else:
                online = r["cell"].get("kept_online")
                differs = key == "kept" and online is not None and online != e
                cells.append(f"{_f(None if v is None else 100 * v, 1)} ({e})" + (f" [engine kept {online}!]" if differs else ""))
        best, gwa = s["acc"]["best"], s["acc"]["gwa"]
        trust = s["trust"]
        if trust == "clear" and best is not None and gwa is not None and 100 * (best - gwa) > CLEAR_BUT_WORSE:
            trust += f" (!{100 * (best - gwa):.1f} below best)"
            flagged.append(f"{row_name(r, seeds)} / {r['label_set']}")
        spearman = s.get("spearman_gwa_test")
        out.append("| " + " | ".join([row_name(r, seeds), r["label_set"], *cells, trust,
                                      "-" if spearman is None else f"{spearman:+.2f}"]) + " |")
    return out, flagged


def against_validation(rows: list[dict[str, Any]]) -> str | None:
    """One line: per rule, the mean test accuracy (points) of its epoch minus that of the
    validation split's choice, over the cells with a split where the rule chose an epoch
    (how close a checkpoint chosen without held-out data comes to one chosen with it)."""
    diffs: dict[str, list[float]] = {key: [] for key, _ in RULE_COLUMNS if key != "val"}
    for r in rows:
        s = r["cell"]["stopping"]
        val = s["acc"]["val"] if s["has_val"] else None
        if val is None:
            continue
        for key in diffs:
            if s["acc"][key] is not None:
                diffs[key].append(100 * (s["acc"][key] - val))
    parts = [f"{h} {np.mean(diffs[k]):+.2f} ({len(diffs[k])})" for k, h in RULE_COLUMNS if k in diffs and diffs[k]]
    if not parts:
        return None
    return ("Test accuracy against the validation split's choice, mean points (cells): " + ", ".join(parts) + ".")


def headline(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The page's headline over the cells: the default ranking's mean AUROC against mean
    alignment's, and the median relative error of the estimated count."""
    cells = [r["cell"] for r in rows if r["cell"]["count"]["true"]]
    if not cells:
        return []
    default = np.mean([c["default"]["auroc"] for c in cells])
    align = np.mean([c["windows"]["second_half"]["align_mean"] for c in cells])
    error = np.median([abs(c["count"]["estimate"] - c["count"]["true"]) / c["count"]["true"] for c in cells])
    return [{"result": f"AUROC of the default ranking vs mean alignment (second half), mean of {len(cells)} cells",
             "value": f"{default:.3f} vs {align:.3f}"},
            {"result": f"estimated count of wrong labels, median relative error, {len(cells)} cells",
             "value": f"{error:.0%}"}]


# -- main -------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="cpu",
                    help="cpu: tiny CNN, fp32 (default); gpu: CIFAR ResNet-18, bf16, batch 512, 40 epochs, regimes "
                         "default and memorise, on a CUDA device, one process")
    ap.add_argument("--device", help="torch device of the trainings (default: cpu, or cuda with --mode gpu)")
    ap.add_argument("--n", type=int, help=f"pool: the first N training images (default 10000; --quick 3000; at most {TEST_ROWS_START})")
    ap.add_argument("--epochs", type=int, help="epochs of every regime (default per regime; pretraining: --pretrain-epochs)")
    ap.add_argument("--pretrain-epochs", type=int, help="epochs of the finetune regime's pretraining (default 10; --quick 5)")
    ap.add_argument("--test-extra", type=int,
                    help=f"clean-labelled training images from row {TEST_ROWS_START:,} added to the 1,000 test images "
                         f"(default 5000; --quick 2000; at most {PRETRAIN_ROWS[0] - TEST_ROWS_START})")
    ap.add_argument("--label-sets",
                    help="comma-separated CIFAR-10-N label sets (default worst,aggre,random1); random2, random3 and "
                         "pairNN only with --held-out")
    ap.add_argument("--regimes", default=",".join(REGIMES), help=f"comma-separated, of {', '.join(REGIMES)} (default all)")
    ap.add_argument("--seeds", type=int, default=1, help="number of seeds (0..N-1; one row each; default 1)")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="the first seed (default 0): --first-seed K --seeds N runs seeds K..K+N-1, fresh runs to check "
                         "a rule tuned on the lower seeds")
    ap.add_argument("--held-out", action="store_true",
                    help=f"run the held-out label sets {', '.join(HELD_OUT)} instead of the tuning sets (run once); "
                         "with --label-sets, those are run too")
    ap.add_argument("--skip-gpu-runs", action="store_true", help="leave out the re-analysed GPU recordings")
    ap.add_argument("--prefixes", action="store_true",
                    help="add the prefix table: per cell, the default cut after every epoch from a quarter of the run "
                         f"on against the best fixed window of that prefix; exit 1 when one is more than "
                         f"{PREFIX_TARGET:g} AUROC below")
    ap.add_argument("--verified", metavar="N[,N...]",
                    help="add the verified-window table: per cell and sample size N, --verified-repeats draws of a "
                         "verified sample (the audit's design), answered with the truth, each choosing the window "
                         "with the best design-weighted AUROC on it (default: off)")
    ap.add_argument("--verified-repeats", type=int, default=VERIFIED_REPEATS,
                    help=f"draws per cell and N for --verified, seeds 0..R-1 (default {VERIFIED_REPEATS})")
    ap.add_argument("--keep-runs", action="store_true", help="keep the trained run directories under OUT")
    ap.add_argument("--runs", nargs="+", metavar="RUN",
                    help="re-analyse these run directories written by this benchmark (e.g. --keep-runs on a GPU machine, "
                         "brought back) instead of training; their rows are named from run.json")
    ap.add_argument("--out", default=str(REPO / "bench_out" / "regimes"),
                    help="folder of the trained runs while they are analysed (kept there with --keep-runs)")
    add_common_args(ap, quick="3,000 images, 2,000 extra test images, fewer epochs for default / finetune", workers=True)
    args = ap.parse_args()
    mode = MODES[args.mode]
    if args.quick and args.mode == "gpu":
        raise SystemExit("--quick is for --mode cpu; --mode gpu runs its full table in a few minutes")
    args.n = args.n if args.n is not None else mode["quick_n" if args.quick else "n"]
    args.test_extra = args.test_extra if args.test_extra is not None else mode["quick_test_extra" if args.quick else "test_extra"]
    if args.mode == "gpu":
        args.workers = 1  # one process drives the one GPU
        if args.regimes == ",".join(REGIMES):
            args.regimes = "default,memorise"
    args.regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    if args.mode == "gpu" and "finetune" in args.regimes:
        raise SystemExit("--mode gpu has no finetune regime: its pretraining rows 15,000..19,999 are not on a GPU "
                         "machine's data pack")
    slow = [r for r in args.regimes if r in SLOW_REGIMES]
    if args.mode == "gpu" and slow:
        raise SystemExit(f"--mode gpu has no {', '.join(slow)} regime yet (no recipe of the GPU recordings to slow "
                         "down): run them with --mode cpu")
    if args.mode == "gpu" and args.device is None and not torch.cuda.is_available():
        raise SystemExit("--mode gpu needs a CUDA device; none is available here (use --mode cpu, or --device cpu "
                         "for a toy check)")
    bad = [r for r in args.regimes if r not in REGIMES]
    if bad:
        raise SystemExit(f"unknown regime(s) {bad}: choose from {', '.join(REGIMES)}")
    if args.label_sets is None:
        names = [] if args.held_out else list(TUNING_SETS)
    else:
        names = label_set_names(args.label_sets)
    held = [s for s in names if s in HELD_OUT or pair_rate(s) is not None]
    if held and not args.held_out:
        raise SystemExit(f"{', '.join(held)}: held-out label sets, run only with --held-out (once, after tuning)")
    if args.held_out:
        names += [s for s in HELD_OUT if s not in names]
    args.label_sets = names
    if not 20 <= args.n <= TEST_ROWS_START:
        raise SystemExit(f"--n must be between 20 and {TEST_ROWS_START} (rows {TEST_ROWS_START:,}.. are test and "
                         "pretraining images)")
    if not 0 <= args.test_extra <= PRETRAIN_ROWS[0] - TEST_ROWS_START:
        raise SystemExit(f"--test-extra must be between 0 and {PRETRAIN_ROWS[0] - TEST_ROWS_START}")
    if args.pretrain_epochs is None:
        args.pretrain_epochs = REGIMES["finetune"]["pretrain_quick" if args.quick else "pretrain"]
    if args.workers < 1:
        raise SystemExit("--workers must be >= 1")
    try:
        args.verified = sorted({int(v) for v in args.verified.split(",") if v.strip()}) if args.verified else []
    except ValueError:
        raise SystemExit(f"--verified takes whole numbers separated by commas, got {args.verified!r}") from None
    if any(v < DEFAULT_STRATA * MIN_PER_STRATUM for v in args.verified):
        raise SystemExit(f"--verified sample sizes must be >= {DEFAULT_STRATA * MIN_PER_STRATUM} ({MIN_PER_STRATUM} per "
                         "stratum at least)")
    if args.verified_repeats < 1:
        raise SystemExit("--verified-repeats must be >= 1")
    if args.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    if args.first_seed < 0:
        raise SystemExit("--first-seed must be >= 0")
    for name in ("epochs", "pretrain_epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    return args


def epochs_of(regime: str, args: argparse.Namespace) -> int:
    if args.epochs is not None:
        return args.epochs
    return REGIMES[regime]["gpu" if args.mode == "gpu" else "quick" if args.quick else "epochs"]


def main() -> None:
    args = parse_args()
    device = torch.device(args.device or MACHINES[args.mode]["device"])
    recorded_on = ""
    data_dir = Path(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_files(data_dir, first15000=True)  # exits with a message when a file is missing, before any worker starts

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - _T0:6.0f} s] {text}", file=sys.stderr, flush=True)

    order = {(seed, name, regime): i for i, (seed, name, regime) in enumerate(
        (s_, n_, r_) for s_ in range(args.first_seed, args.first_seed + args.seeds) for n_ in args.label_sets
        for r_ in args.regimes)}
    rows: list[dict[str, Any]] = []
    recorded: set[str] = set()
    pretrained_note: dict[str, Any] | None = None
    if not args.runs:
        log(f"{args.seeds * len(args.label_sets) * len(args.regimes)} trainings"
            + (" + 1 pretraining" if "finetune" in args.regimes and args.label_sets else "")
            + f" in {args.workers} worker process(es)" + (" of one thread each" if args.workers > 1 else ""))

    def finish(res: dict[str, Any]) -> None:
        nonlocal pretrained_note
        job = res["job"]
        if job["kind"] == "pretrain":
            pretrained_note = res["note"]
            log(f"pretrained {job['epochs']} epochs on {pretrained_note['images']:,} clean images: test acc "
                f"{_f(pretrained_note['test_acc'])} ({pretrained_note['seconds']:.0f} s)")
            return
        info = res["info"]
        cell = analyse_run(Path(res["run_dir"]), args.verified, args.verified_repeats)
        rows.append({"regime": job["regime"], "label_set": job["name"], "seed": job["seed"], **info, "cell": cell})
        log(f"{job['regime']} / {job['name']} / seed {job['seed']}: trained {info['t_train']:.0f} s, analysed "
            f"{cell['t_analysis']:.1f} s; fit at end {_f(cell['fit_last'])}, default AUROC {_f(cell['default']['auroc'])}")

    if args.runs:
        for run_dir in args.runs:
            meta = json.loads((Path(run_dir) / "run.json").read_text())
            if "regime" not in meta:
                raise SystemExit(f"{run_dir}: not a run of bench/regimes.py (run.json has no 'regime')")
            cell = analyse_run(Path(run_dir), args.verified, args.verified_repeats)
            # The engine chose its checkpoint with the code of the recording, maybe not this one.
            cell["kept_online"] = None
            env = meta.get("environment") or {}
            recorded.add(f"{env.get('cuda') or meta.get('device')}, torch {env.get('torch')}")
            rows.append({"regime": meta["regime"], "label_set": meta["label_set"], "seed": meta["seed"], "t_train": None,
                         "n_train": cell["n"], "cell": cell})
            log(f"{run_dir}: analysed {cell['t_analysis']:.1f} s")
        sets = [*TUNING_SETS, *HELD_OUT]
        key = lambda r: (r["seed"], sets.index(r["label_set"]) if r["label_set"] in sets else len(sets),  # noqa: E731
                         r["label_set"], list(REGIMES).index(r["regime"]))
        order = {(r["seed"], r["label_set"], r["regime"]): i for i, r in enumerate(sorted(rows, key=key))}
        args.seeds = max(r["seed"] for r in rows) + 1
        recorded_on = f"recorded on {'; '.join(sorted(recorded))}, re-analysed here"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="runs-", dir=out))
        try:
            run_jobs(args.workers, _init_worker, (args.data, args.n, args.test_extra, "finetune" in args.regimes, 1),
                     run_job, build_jobs(args, tmp), finish)
        finally:
            if args.keep_runs:
                print(f"runs kept in {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    rows.sort(key=lambda r: order[(r["seed"], r["label_set"], r["regime"])])

    gpu_note = None
    if not args.skip_gpu_runs:
        gpu_dir = data_dir / "gpu_runs"
        found = [r for r in GPU_RUNS if (gpu_dir / r / "run.json").is_file()]
        for r in found:
            cell = analyse_run(gpu_dir / r, args.verified, args.verified_repeats)
            rows.append({"regime": f"gpu {r}", "label_set": "worst", "seed": None, "t_train": None, "cell": cell})
            log(f"gpu {r}: analysed {cell['t_analysis']:.1f} s")
        missing = [r for r in GPU_RUNS if r not in found]
        if missing:
            gpu_note = f"GPU recordings not found under {gpu_dir}: {', '.join(missing)} (rows left out)"

    seed_list = sorted({r["seed"] for r in rows if r["seed"] is not None})
    # Row names carry the seed when there are several, or when it is not the usual seed 0.
    named = 2 if len(seed_list) > 1 or seed_list not in ([], [0]) else 1
    rank_lines = ranking_table(rows, named)
    stop_lines, clear_worse = stopping_table(rows, named)
    n_trust = sum(1 for r in rows if r["cell"]["stopping"]["trust"] == "clear")
    memorise_rows = [r for r in rows if r["regime"] == "memorise"]
    low_fit = [f"{row_name(r, named)} / {r['label_set']}" for r in memorise_rows if r["cell"]["fit_reached"] is None]
    low_end = [f"{row_name(r, named)} / {r['label_set']} {_f(r['cell']['fit_last'])}" for r in memorise_rows
               if r["cell"]["fit_last"] is None or r["cell"]["fit_last"] < MEMORISE_FIT]
    n_train = next((r["n_train"] for r in rows if r.get("n_train")), None)
    n_val = next((r["n_val"] for r in rows if r.get("n_val")), None)
    setting = [
        f"Data: pool = the first {args.n:,} CIFAR-10 training images with the row's label set; each run trains on "
        f"{'-' if n_train is None else format(n_train, ',')} of them and holds out {'-' if n_val is None else format(n_val, ',')} "
        f"(10%, drawn per seed, the same for every regime and label set) as a validation split with the NOISY labels "
        f"(val 10%). Test set: {test_note(args.test_extra)}. Seeds: {', '.join(map(str, seed_list))}.",
        *(f"Regime {k}: {MODEL_NAMES[MACHINES[args.mode]['model']]}, {cfg.precision}, {cfg.device}; {describe(cfg)}."
          for k in args.regimes for cfg in [regime_config(k, epochs_of(k, args), 0, args.mode, args.device)]),
    ]
    if pretrained_note is not None:
        setting.append(f"Finetune pretraining: {pretrained_note['images']:,} training images "
                       f"{PRETRAIN_ROWS[0]:,}..{PRETRAIN_ROWS[1] - 1:,} with CLEAN labels, {pretrained_note['recipe']} "
                       f"(seed 0, once): test accuracy {_f(pretrained_note['test_acc'])} before fine-tuning.")
    if any(r["regime"].startswith("gpu") for r in rows):
        setting.append("GPU rows: the recordings under gpu_runs/ (ResNet-18, 20,000 images, worst labels, 40 epochs, "
                       "SGD decay / AdamW constant), re-analysed without training; their test set is the 1,000 test "
                       "images and they have no validation split (val 10% '-').")
    notes = [
        "fit at end: train_acc of the last epoch (share of the given labels predicted as labelled during that epoch, "
        f"as trained); (@e): the first epoch with train_acc >= {MEMORISE_FIT:.0%}. The memorise regime must reach "
        f"{MEMORISE_FIT:.0%}; a memorise row that never did is marked '(never {MEMORISE_FIT:.0%}!)'. At a constant "
        "rate the fit dips by several points now and then, so the last epoch can be below a level reached before.",
        "phase: the training phase read (memorised @onset; memorising @onset with its weight, 0-1, when it began "
        "memorising; or not) and the epochs the default 'phase' window averages. "
        "default: aum over that window. sh / aw / all: windows second_half / after_warmup / all. oracle: the best "
        "AUROC of aum over every contiguous window [a, b] of epochs (not available to a user: it reads the truth).",
        "count: true = wrong labels among the trained samples; estimate = gwa-diag's default (Analysis.estimate: labels "
        "not fitted in most of the last three window epochs, or, when memorised, confidently contradicted at the "
        "plateau, mixed by the phase's weight in between); previous = the estimate before it (disagreement > 0.5 with "
        "window second_half: three epochs around the GWA choice); GMM = 2-component Gaussian mixture over the default "
        "aum score (harness.mixture_row). err = (count - true) / true. P / R / F1: the default flagged set.",
        "stopping: test accuracy (%) and epoch of: kept = the plateau before the phase onset once it began memorising (the "
        "weights gwa-diag train keeps), else the last; best = best test epoch (oracle); last; val 10% = highest val_acc on "
        "the noisy validation split; val 1% = the same on its first tenth (1% of the pool); GWA = the GWA choice; "
        "LabelWave. A rule that chooses no epoch shows 'no choice'. GWA trust = Analysis.stopping.trust. "
        "Spearman(GWA, test) = rank correlation of the per-epoch GWA with the test accuracy, over the epochs with both.",
    ]
    summary = [
        f"GWA choice rated clear but more than {CLEAR_BUT_WORSE:g} points below the best epoch: {len(clear_worse)} of "
        f"{n_trust} cells rated clear ({len(rows)} cells)" + (f": {', '.join(clear_worse)}." if clear_worse else "."),
    ]
    versus_val = against_validation(rows)
    if versus_val:
        summary.append(versus_val)
    if "memorise" in args.regimes and args.label_sets:
        summary.append(f"Memorise runs that never fitted {MEMORISE_FIT:.0%} of their labels: "
                       + (", ".join(low_fit) if low_fit else "none") + f"; below {MEMORISE_FIT:.0%} at the last epoch: "
                       + (", ".join(low_end) if low_end else "none") + ".")
    if gpu_note:
        summary.append(gpu_note)
    # Seconds vary from run to run: they go to the page's run information, not its tables.
    timings = {"training": f"{sum(r.pop('t_train', None) or 0 for r in rows):.0f} s"
               + (" summed over the workers" if args.workers > 1 else ""),
               "analysis": f"{sum(r['cell'].pop('t_analysis') for r in rows):.0f} s", "workers": args.workers}
    if pretrained_note:
        timings["pretraining"] = f"{pretrained_note.pop('seconds'):.0f} s"
    md = ["# Analysis defaults across training regimes", "", *([f"Runs: {recorded_on}.", ""] if recorded_on else []),
          *(line for s in setting for line in (s, "")),
          "## Ranking and count", "", *rank_lines, "", "## Stopping (test accuracy %, epoch in brackets)", "",
          *stop_lines, "", *(line for s in summary for line in (s, "")),
          *(f"* {n}" for n in notes), ""]
    missed: list[str] = []
    if args.prefixes:
        prefix_lines, missed = prefix_table(rows, named)
        verdict = (f"Prefix target (within {PREFIX_TARGET:g} AUROC of the best fixed window of every prefix): "
                   + (f"MISSED in {len(missed)} of {len(rows)} cells: {', '.join(missed)}." if missed
                      else f"met in all {len(rows)} cells."))
        md += ["## Prefixes: the run stopped after each epoch", "", *prefix_lines, "", verdict, "",
               f"* Each prefix is the recording cut after one epoch, from a quarter of the run to its end, read as a "
               f"run that stopped there: its phase and default window (aum over the 'phase' window) from the prefix "
               f"alone, against the best fixed contiguous window inside the prefix (in hindsight, reading the "
               f"truth). AUROCs weigh every epoch alike (a sample's presentations within an epoch averaged first), "
               f"as the oracle column; gap = best - default.", ""]
    if args.prefixes and not args.held_out:
        md += ["## The plateau constants, every prefix again", "", *plateau_table(rows), "",
               f"* The prefix table again with the phase rule's PLATEAU_HORIZON and PLATEAU_RISE set to each pair "
               f"(shipped: {phase_rule.PLATEAU_HORIZON}, {phase_rule.PLATEAU_RISE:g}): how many cells miss the prefix "
               f"target, the worst and mean gap; and how far the whole run's noise estimate (the contradicted share at "
               f"the plateau, which the count reads on a memorised run) lies from the true share of wrong labels.", ""]
    if args.held_out:  # other constants on held-out sets would be tuning material: not shown, not kept
        for r in rows:
            r["cell"].pop("plateau_grid", None)
    if args.verified:
        verified_lines, verified_summary = verified_table(rows, named, args.verified)
        md += ["## A verified sample chooses the window", "", *verified_lines, "",
               *(line for s in verified_summary for line in (s, "")),
               f"* Per cell and sample size n: {args.verified_repeats} draws (seeds 0..{args.verified_repeats - 1}) of "
               f"the verified sample the audit draws (gwa_diag.analysis.audit's design: {DEFAULT_STRATA} strata of equal "
               f"size along the default ranking, Neyman allocation, design weights N_h / n_h; the run directory is "
               f"not written), answered with the truth. plain: the contiguous window [a, b] of epochs whose aum has "
               f"the highest design-weighted AUROC on the verified samples (weighted Mann-Whitney, ties 1/2; ties "
               f"between windows go to the one ending latest, then the shortest); guarded: that window only when its "
               f"AUROC on the sample beats the default window's by more than its Hanley-McNeil standard error "
               f"(switched: the share of draws where it did), else the default window. mean / p10: the chosen "
               f"window's AUROC on ALL samples over the draws (mean, 10th percentile); beats: the share of draws "
               f"above the default window's. default and oracle AUROCs as the prefix table (every epoch alike), so "
               f"the default can differ from the ranking table's in the third decimal.", ""]
    text = "\n".join(md)
    print(text)
    dump = {"n": args.n, "test": test_note(args.test_extra),
            "seeds": seed_list, "quick": args.quick, "label_sets": args.label_sets, "regimes": args.regimes,
            "mode": args.mode,
            "recipes": {k: describe(regime_config(k, epochs_of(k, args), 0, args.mode, args.device)) for k in args.regimes},
            "pretraining": pretrained_note, "clear_but_worse": clear_worse, "memorise_never_fit": low_fit,
            "memorise_below_fit_at_end": low_end, "prefix_target": PREFIX_TARGET if args.prefixes else None,
            "prefix_missed": missed,
            "verified": args.verified, "verified_repeats": args.verified_repeats if args.verified else None, "rows": rows, "headline": headline(rows)}
    # The held-out table is a page of its own: the tuning page never shows what tuning must not see.
    pages = write_page("regimes_heldout" if args.held_out else __file__, text, dump, pages_dir=args.pages_dir, wall_s=time.perf_counter() - _T0, device=device,
                       timings=timings)
    print(f"Written: {pages[0]}, {pages[1]}")
    if missed:
        raise SystemExit(f"prefix target missed in {len(missed)} cell(s): {', '.join(missed)} (see the prefix table)")


if __name__ == "__main__":
    main()
