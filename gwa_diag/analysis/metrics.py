"""Detection metrics: how well each scorer finds the truly mislabeled samples.

Inputs are scores oriented **higher = more suspicious** (every column of
:data:`gwa_diag.analysis.scorers.SCORERS`) and a boolean ``is_noisy`` (given label != clean
label, as :func:`gwa_diag.analysis.truth.ground_truth` reads it). Implemented with numpy;
the definitions match scikit-learn's ``roc_auc_score`` and ``average_precision_score`` (ties
included). NaN scores count as least suspicious (-inf).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gwa_diag.analysis.estimate import ESTIMATE_COLUMN, estimate_wrong_labels
from gwa_diag.analysis.rank import estimate_flagged_ids
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.checks import DEFAULT_SCORER, InputError, check_choice

__all__ = [
    "RULE_ROW",
    "ESTIMATE_ROW",
    "auroc",
    "average_precision",
    "precision_recall_at_k",
    "rule_scores",
    "roc_points",
    "pr_points",
    "CURVE_POINTS",
    "curve_points",
    "detection_table",
    "per_class_table",
]

#: Name of the detection-table row for the paper's rule "alignment < 0 at the selected epoch".
RULE_ROW = "rule: alignment < 0 at selected epoch"
#: Name of the row for the default rule: the top of the default ranking down to the estimated
#: number of wrong labels (gwa_diag.analysis.estimate).
ESTIMATE_ROW = f"rule: top of {DEFAULT_SCORER} down to the estimated count"


def _arrays(scores: Any, is_noisy: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(is_noisy).reshape(-1)
    if s.shape != y.shape:
        raise InputError(f"scores ({s.size}) and is_noisy ({y.size}) must have the same length")
    if y.dtype != np.bool_:
        if not np.isin(y, [0, 1]).all():
            raise InputError("is_noisy must be boolean (or 0/1)")
        y = y.astype(bool)
    return np.where(np.isnan(s), -np.inf, s), y


def _both_classes(y: np.ndarray, what: str) -> None:
    if y.all() or not y.any():
        raise InputError(f"{what} needs both noisy and clean samples; got {int(y.sum())} noisy of {y.size}")


def auroc(scores: Any, is_noisy: Any) -> float:
    """Area under the ROC curve: the probability that a random noisy sample scores higher
    than a random clean one, ties counting one half (equals sklearn ``roc_auc_score``)."""
    s, y = _arrays(scores, is_noisy)
    _both_classes(y, "AUROC")
    return _auroc(s, y)


class _Sorted:
    """Scores sorted once, highest first (stable: ties keep their input order), with the
    cumulative true / false positives at each distinct score. Every metric here reads it."""

    def __init__(self, s: np.ndarray, y: np.ndarray) -> None:
        order = np.argsort(-s, kind="stable")
        s_sorted = s[order]
        self.y = y[order]
        # Last position of each run of equal scores: tied samples cross a threshold together.
        last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.size - 1]
        self.tp = np.cumsum(self.y)[last].astype(np.float64)
        self.fp = (last + 1) - self.tp
        self.n_pos = float(y.sum())
        self.n_neg = float(y.size) - self.n_pos

    def auroc(self) -> float:
        # Trapezoids between distinct thresholds: a tie between a noisy and a clean sample
        # counts one half, exactly the Mann-Whitney statistic.
        fpr = np.r_[0.0, self.fp / self.n_neg]
        tpr = np.r_[0.0, self.tp / self.n_pos]
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))

    def average_precision(self) -> float:
        precision = self.tp / (self.tp + self.fp)
        recall = self.tp / self.n_pos
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))

    def at_k(self, k: int) -> tuple[float, float]:
        k = min(k, self.y.size)
        if k == 0:
            return float("nan"), 0.0
        hits = float(self.y[:k].sum())
        return hits / k, hits / self.n_pos


def _auroc(s: np.ndarray, y: np.ndarray) -> float:
    return _Sorted(s, y).auroc()


def _threshold_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true / false positives at each distinct score, highest score first."""
    ranked = _Sorted(s, y)
    return ranked.tp, ranked.fp


def average_precision(scores: Any, is_noisy: Any) -> float:
    """Average precision, scikit-learn's definition: sum over score thresholds (ties
    grouped) of (R_n - R_{n-1}) * P_n, without interpolation."""
    s, y = _arrays(scores, is_noisy)
    if not y.any():
        raise InputError("average precision needs at least one noisy sample")
    return _average_precision(s, y)


def _average_precision(s: np.ndarray, y: np.ndarray) -> float:
    return _Sorted(s, y).average_precision()


def precision_recall_at_k(scores: Any, is_noisy: Any, *, k: int | None = None) -> tuple[float, float]:
    """Precision and recall among the ``k`` highest scores (default k = number of truly
    noisy samples, where precision = recall = 1 - miss rate). Ties at the cut are broken
    by position (stable), as a ranked list would be."""
    s, y = _arrays(scores, is_noisy)
    if k is None:
        k = int(y.sum())
    if int(k) != k or k < 0:
        raise InputError(f"k must be a whole number >= 0, got {k!r}")
    if not y.any():
        raise InputError("recall at k needs at least one noisy sample")
    return _precision_recall_at_k(s, y, int(k))


def _precision_recall_at_k(s: np.ndarray, y: np.ndarray, k: int) -> tuple[float, float]:
    return _Sorted(s, y).at_k(k)


def rule_scores(flags: Any, is_noisy: Any) -> dict[str, float]:
    """Precision, recall and F1 of a boolean rule (``flags`` True = flagged as noisy);
    precision is NaN when nothing is flagged, recall NaN when nothing is noisy."""
    f = np.asarray(flags).reshape(-1)
    y = np.asarray(is_noisy).reshape(-1)
    if f.shape != y.shape:
        raise InputError(f"flags ({f.size}) and is_noisy ({y.size}) must have the same length")
    f, y = f.astype(bool), y.astype(bool)
    tp = float((f & y).sum())
    precision = tp / f.sum() if f.any() else float("nan")
    recall = tp / y.sum() if y.any() else float("nan")
    f1 = (
        2 * precision * recall / (precision + recall)
        if np.isfinite(precision) and np.isfinite(recall) and precision + recall > 0
        else (0.0 if tp == 0 and f.any() and y.any() else float("nan"))
    )
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "n_flagged": int(f.sum())}


def roc_points(scores: Any, is_noisy: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0)."""
    s, y = _arrays(scores, is_noisy)
    _both_classes(y, "a ROC curve")
    tp, fp = _threshold_counts(s, y)
    return np.r_[0.0, fp / (~y).sum()], np.r_[0.0, tp / y.sum()]


def pr_points(scores: Any, is_noisy: Any) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, highest threshold first."""
    s, y = _arrays(scores, is_noisy)
    if not y.any():
        raise InputError("a precision-recall curve needs at least one noisy sample")
    tp, fp = _threshold_counts(s, y)
    return tp / y.sum(), tp / (tp + fp)


#: Points kept per curve by :func:`curve_points`: a plot of 2,000 points looks like one of
#: every threshold (a CIFAR-sized run has ~50,000), and the PNG or chart data stays small.
CURVE_POINTS = 2000


def curve_points(scores: Any, is_noisy: Any, *, kind: str = "roc",
                 points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The points of a ROC (``kind="roc"``: :func:`roc_points`) or precision-recall curve
    (``"pr"``: :func:`pr_points`), thinned for drawing to at most ``points`` points evenly
    spaced along the curve, its first and last included, in the curve's order.

    Raises:
        InputError: an unknown ``kind``, ``points < 2``, or what :func:`roc_points` /
            :func:`pr_points` raise.
    """
    check_choice(kind, ("roc", "pr"), "curve kind")
    if points < 2:
        raise InputError(f"a curve needs at least 2 points, got points={points!r}")
    x, y = (roc_points if kind == "roc" else pr_points)(scores, is_noisy)
    if x.size <= points:
        return x, y
    # linspace ends exactly at the last index: the curve keeps its end ((1, 1) for ROC).
    keep = np.unique(np.linspace(0, x.size - 1, points).astype(np.int64))
    return x[keep], y[keep]


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------


def _align(summary: pd.DataFrame, is_noisy: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
    common = summary.index.intersection(is_noisy.index)
    if len(common) == 0:
        raise InputError("summary and is_noisy share no sample_id")
    return summary.loc[common], is_noisy.loc[common].to_numpy(dtype=bool)


def _score_row(s: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if not y.any():
        return {"auroc": float("nan"), "ap": float("nan"), "p_at_k": float("nan"), "r_at_k": float("nan")}
    ranked = _Sorted(s, y)
    p, r = ranked.at_k(int(y.sum()))
    return {
        "auroc": ranked.auroc() if not y.all() else float("nan"),
        "ap": ranked.average_precision(),
        "p_at_k": p,
        "r_at_k": r,
    }


def detection_table(
    summary: pd.DataFrame, is_noisy: pd.Series, *, scorers: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per scorer (AUROC, AP, precision and recall at k = number of noisy
    samples) and one row each for the flag rules: :data:`ESTIMATE_ROW`, the default (the
    top of the default ranking down to the estimated number of wrong labels), and
    :data:`RULE_ROW`, "alignment < 0 at the selected epoch" (precision, recall, F1, number
    flagged). Samples without ground truth are left out; ``frame.attrs`` holds n, n_noisy,
    k and ``estimated`` (the estimated number of wrong labels among them)."""
    names = list(SCORERS) if scorers is None else [check_choice(s, SCORERS, "scorer") for s in scorers]
    frame, y = _align(summary, is_noisy)
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise InputError(f"the summary has no {missing[0]!r} column")

    def score(name: str) -> dict[str, float]:
        v = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        return _score_row(np.where(np.isnan(v), -np.inf, v), y)

    # One sort per scorer, and numpy sorts without the GIL: the scorers share the cores.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        rows: dict[str, dict[str, float]] = dict(zip(names, pool.map(score, names)))
    estimated = None
    if ESTIMATE_COLUMN in summary.columns and DEFAULT_SCORER in summary.columns:
        # Flagged over every sample (as suspects.csv is), then scored where truth exists.
        flagged = estimate_flagged_ids(summary, scorer=DEFAULT_SCORER)
        rows[ESTIMATE_ROW] = rule_scores(frame.index.isin(flagged), y)
        estimated = estimate_wrong_labels(frame).total
    if "alignment_selected" in frame.columns:
        a = frame["alignment_selected"].to_numpy(dtype=np.float64, na_value=np.nan)
        rows[RULE_ROW] = rule_scores(a < 0, y)
    table = pd.DataFrame.from_dict(rows, orient="index")
    columns = ["auroc", "ap", "p_at_k", "r_at_k", "precision", "recall", "f1", "n_flagged"]
    table = table.reindex(columns=columns)
    table["n_flagged"] = table["n_flagged"].astype("Int64")
    table.index.name = "method"
    table.attrs = {"n": int(y.size), "n_noisy": int(y.sum()), "k": int(y.sum()), "estimated": estimated}
    return table


def per_class_table(summary: pd.DataFrame, is_noisy: pd.Series, *, scorer: str = DEFAULT_SCORER) -> pd.DataFrame:
    """Breakdown by given label: samples, noisy samples, the estimated number of wrong
    labels (``n_estimated``, when the summary has ``disagreement``), noise rate, AUROC and
    AP of ``scorer`` within the class, and precision / recall of the rule "alignment < 0 at
    the selected epoch"."""
    check_choice(scorer, SCORERS, "scorer")
    frame, y = _align(summary, is_noisy)
    labels = frame["label"].to_numpy()
    v = frame[scorer].to_numpy(dtype=np.float64, na_value=np.nan)
    s = np.where(np.isnan(v), -np.inf, v)
    a = frame["alignment_selected"].to_numpy(dtype=np.float64, na_value=np.nan) if "alignment_selected" in frame else None
    estimate = estimate_wrong_labels(frame) if ESTIMATE_COLUMN in frame.columns else None
    rows = []
    for label in np.unique(labels):
        m = labels == label
        ys, ss = y[m], s[m]
        row: dict[str, Any] = {"label": int(label), "n": int(m.sum()), "n_noisy": int(ys.sum())}
        if estimate is not None:
            row["n_estimated"] = estimate.per_class.get(int(label), 0)
        row["noise_rate"] = float(ys.mean())
        row.update({k: row_v for k, row_v in _score_row(ss, ys).items() if k in ("auroc", "ap")})
        if a is not None:
            rule = rule_scores(a[m] < 0, ys)
            row.update({"rule_precision": rule["precision"], "rule_recall": rule["recall"], "n_flagged": rule["n_flagged"]})
        rows.append(row)
    out = pd.DataFrame(rows).set_index("label")
    out.attrs = {"scorer": scorer}
    return out
