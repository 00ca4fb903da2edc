"""The per-sample scorers: one small numpy function each, arrays in, arrays out, no I/O.

Every scorer is oriented so that **higher = more suspicious** (more likely mislabeled). Its
docstring is its documentation everywhere (``SCORERS``, report.md, ``--scorer`` help): what
it measures, the raw direction it was flipped from, its formula and where it comes from.

A scorer reads :class:`Sums`, the per-sample running sums that
:func:`gwa_diag.analysis.summaries.summarize` accumulates out of core (DuckDB over the
Parquet parts); which epochs those sums cover is decided in :mod:`gwa_diag.analysis.phase`.
Adding a scorer is one function here plus its name in :data:`_FUNCTIONS`;
tests/test_scorers.py checks every registered scorer against the same function applied to
sums computed the slow way.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["SCORERS", "Sums", "score", "scores"]


@dataclass(frozen=True)
class Sums:
    """Per-sample sums over the window epochs (one entry per sample, float64 unless said).

    A sample presented several times in one epoch counts once for that epoch, with its
    numeric values averaged (see :mod:`gwa_diag.analysis.summaries`); rows with non-finite
    values are left out of every sum.

    Attributes:
        num_classes: the number of classes C.
        n: window epochs with finite values.
        alignment, negative, margin, loss, p_label, p_label_sq: sums over those epochs of
            the alignment, of ``alignment < 0``, of the margin (logit[label] - max other
            logit), of the cross-entropy, of p(label) and of p(label)^2.
        forgetting: correct -> incorrect transitions between consecutive presented epochs,
            over all complete epochs (int64).
        alignment_selected, alignment_last: the alignment at the GWA-selected (or fallback)
            epoch and at the last epoch; NaN where absent.
        el2n_p_label, el2n_pred, el2n_label, el2n_p_pred: p(label), the prediction (int64),
            the label (int64) and p(pred) at the EL2N epoch; NaN / -1 where absent.
        contradicted: disagreement epochs in which the model confidently contradicted the
            label: the prediction was another class with p(pred) at least that class's
            confident-learning threshold.
        unfitted: disagreement epochs in which the prediction was another class (confident
            or not).
        n_disagreement: disagreement epochs with a finite row.
    """

    num_classes: int
    n: np.ndarray
    alignment: np.ndarray
    negative: np.ndarray
    margin: np.ndarray
    loss: np.ndarray
    p_label: np.ndarray
    p_label_sq: np.ndarray
    forgetting: np.ndarray
    alignment_selected: np.ndarray
    alignment_last: np.ndarray
    el2n_p_label: np.ndarray
    el2n_pred: np.ndarray
    el2n_label: np.ndarray
    el2n_p_pred: np.ndarray
    contradicted: np.ndarray
    unfitted: np.ndarray
    n_disagreement: np.ndarray


def _mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """total / count, NaN where count is 0 (no finite value in the window)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)


def align_mean(s: Sums) -> np.ndarray:
    """-(mean gradient-weight alignment over the window epochs). Raw alignment: lower = more
    suspicious, so it is negated. Hölzl et al., NeurIPS 2025 (arXiv 2510.25480)."""
    return -_mean(s.alignment, s.n)


def align_selected(s: Sums) -> np.ndarray:
    """-(alignment at the GWA-selected early-stopping epoch; the last epoch when the GWA rule
    selects none). Raw alignment: lower = more suspicious, so it is negated. Hölzl et al.
    2025."""
    return -s.alignment_selected


def align_last(s: Sums) -> np.ndarray:
    """-(alignment at the last complete epoch). Raw alignment: lower = more suspicious, so it
    is negated. Hölzl et al. 2025."""
    return -s.alignment_last


def neg_frac(s: Sums) -> np.ndarray:
    """fraction of window epochs in which the alignment was negative (the sample pulled the
    head against its direction). Already higher = more suspicious. Hölzl et al. 2025."""
    return _mean(s.negative, s.n)


def aum(s: Sums) -> np.ndarray:
    """-(area under the margin): -(mean over the window of logit[label] - max other logit).
    Raw AUM: lower = more suspicious. Pleiss et al., NeurIPS 2020."""
    return -_mean(s.margin, s.n)


def loss_mean(s: Sums) -> np.ndarray:
    """mean cross-entropy over the window. Higher = more suspicious."""
    return _mean(s.loss, s.n)


def confidence(s: Sums) -> np.ndarray:
    """-(mean softmax probability of the given label over the window). Raw confidence: lower
    = more suspicious. Dataset cartography, Swayamdipta et al., EMNLP 2020."""
    return -_mean(s.p_label, s.n)


def variability(s: Sums) -> np.ndarray:
    """population std of p(label) over the window epochs. Higher = more suspicious (ambiguous
    or unstable); weaker for noise than confidence. Swayamdipta et al. 2020."""
    mean = _mean(s.p_label, s.n)
    # E[p^2] - E[p]^2 can come out a rounding error below 0 for a constant p.
    return np.sqrt(np.clip(_mean(s.p_label_sq, s.n) - mean**2, 0.0, None))


def forgetting(s: Sums) -> np.ndarray:
    """number of forgetting events over all complete epochs: correct (pred == label) in one
    presented epoch, incorrect in the next. Higher = more suspicious. Toneva et al., ICLR
    2019."""
    return s.forgetting


def el2n(s: Sums) -> np.ndarray:
    """EL2N ||softmax - onehot(label)||_2 at an early epoch (10% of training, never epoch 0
    when a later one exists). Higher = more suspicious. Paul et al., NeurIPS 2021.
    APPROXIMATION: only p(label), pred and p(pred) are recorded, so this is the smallest
    ||p - y|| consistent with them: sqrt((1-p_y)^2 + p_pred^2 + r^2/(C-2)) with r = 1 - p_y -
    p_pred when pred != label, sqrt((1-p_y)^2 + (1-p_y)^2/(C-1)) when pred == label. Exact
    for C = 2 (and for C = 3 when pred != label)."""
    miss = 1.0 - s.el2n_p_label
    c = max(int(s.num_classes), 2)
    # pred == label: the other C-1 classes share 1 - p_label; their sum of squares is least
    # when they share it evenly.
    same = miss * miss + (miss * miss) / (c - 1)
    # pred != label: p_pred is one of the others; the remaining mass r spreads over C-2.
    rest = np.clip(1.0 - s.el2n_p_label - s.el2n_p_pred, 0.0, None)
    spread = (rest * rest) / (c - 2) if c > 2 else np.zeros_like(rest)
    other = miss * miss + s.el2n_p_pred * s.el2n_p_pred + spread
    return np.sqrt(np.where(s.el2n_pred == s.el2n_label, same, other))


def disagreement(s: Sums) -> np.ndarray:
    """share of the three disagreement epochs (the last three of the default window, else
    around the GWA-selected one) in which the model confidently predicted another class than
    the given label: pred != label and p(pred) >= that class's threshold, the mean p(label)
    of the samples labelled with it in the same epoch (confident learning's per-class
    threshold; Northcutt et al., JAIR 2021). Higher = more suspicious."""
    return _mean(s.contradicted, s.n_disagreement)


def unfitted(s: Sums) -> np.ndarray:
    """share of the three disagreement epochs (the last three of the default window, else
    around the GWA-selected one) in which the model predicted another class than the given
    label. Higher = more suspicious. Samples above 0.5 are the estimated wrong labels of a run
    that never memorised its labels (gwa_diag.analysis.estimate)."""
    return _mean(s.unfitted, s.n_disagreement)


# The registry, in the order tables list the scorers.
_FUNCTIONS: tuple[Callable[[Sums], np.ndarray], ...] = (
    align_mean, align_selected, align_last, neg_frac, aum, loss_mean, confidence, variability, forgetting,
    el2n, disagreement, unfitted,
)


def _describe(function: Callable[..., object]) -> str:
    """A docstring as one line (the description the report, the CLI and the app show)."""
    return " ".join(inspect.cleandoc(function.__doc__ or function.__name__).split())


#: name -> description (each scorer's docstring). Every score: HIGHER = MORE SUSPICIOUS.
SCORERS: dict[str, str] = {f.__name__: _describe(f) for f in _FUNCTIONS}
_BY_NAME: dict[str, Callable[[Sums], np.ndarray]] = {f.__name__: f for f in _FUNCTIONS}


def score(name: str, sums: Sums) -> np.ndarray:
    """The scorer ``name`` (a key of :data:`SCORERS`) on ``sums``: higher = more suspicious."""
    return _BY_NAME[name](sums)


def scores(sums: Sums) -> dict[str, np.ndarray]:
    """Every scorer on ``sums``, in :data:`SCORERS` order."""
    return {name: f(sums) for name, f in _BY_NAME.items()}
