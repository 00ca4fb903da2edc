"""How many labels are wrong: an estimate from the recorded run, in total and per class.

Two counts, chosen by the training phase (:mod:`gwa_diag.analysis.phase`, default window):

* **A run that never memorised its labels** (the usual SGD run with augmentation and a
  decaying rate): the samples whose given label the model did not fit in most of the last
  three epochs of the window (the summary's ``unfitted`` column, higher = more suspicious).
  There the model has learned what the correct labels agree on but not fitted the wrong
  ones, so the samples it still predicts as another class are mostly the wrongly labelled.
* **A run that memorised them** (the phase's weight is 1: a constant rate, no augmentation, long training): the
  samples whose label the model *confidently* contradicted (another class predicted with at
  least that class's mean self-confidence, confident learning's per-class threshold) at the
  phase's plateau, the epoch where learning what the labels agree on levelled off (the
  summary's ``contradicted_plateau``, 1.0 = counted): the per-sample form of the phase's own
  noise estimate, so the phase and the count say one number. Why not ``unfitted``: such a
  model fits its wrong labels while it is still learning hard correct ones, so in the epochs
  before the onset it mispredicts many correctly labelled samples too, only less
  confidently.
* **A run that began memorising** (weight between 0 and 1): the two counts mixed by the
  weight, ``(1 - weight) * unfitted count + weight * plateau count`` (in total and per
  class), so the count moves with the window as the fit nears and passes the threshold
  instead of jumping from one count to the other.

How close each count comes on the benchmark runs: ``python bench/regimes.py``
(docs/benchmarks/regimes.md).

Where it errs: ``unfitted`` counts labels the model has not fitted, so it is **too high**
while the model under-fits the correctly labelled samples too (a short run on hard data),
and too low once a run has started to fit wrong labels before the window's end. The plateau
count is too high when the model memorises as fast as it learns, so that at its plateau it
still contradicts hard correct labels. The counts are not probabilities of a wrong label and
are not shown as such.

The default flag rule (``estimate``, :mod:`gwa_diag.analysis.rank`) flags the top of the
ranking down to this count, so the flagged set and the ranking always agree.

Imports numpy and pandas only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gwa_diag.checks import InputError

__all__ = ["NoiseEstimate", "caveat_of", "estimate_wrong_labels", "ESTIMATE_COLUMN", "CONTRADICTED_PLATEAU", "THRESHOLD"]

#: The summary column the estimate counts from in a run that never memorised (higher = more
#: suspicious).
ESTIMATE_COLUMN = "unfitted"
#: The summary column it counts from in a run that memorised (1.0 = confidently contradicted
#: at the plateau epoch of the training phase).
CONTRADICTED_PLATEAU = "contradicted_plateau"
#: A sample counts as wrongly labelled when its column exceeds this: the label was not fitted
#: in two of the three epochs, or was confidently contradicted at the plateau.
THRESHOLD = 0.5


@dataclass(frozen=True)
class NoiseEstimate:
    """The estimated number of wrong labels.

    Attributes:
        total: estimated wrong labels among ``n`` samples.
        n: samples summarised.
        per_class: given label -> estimated wrong labels among the samples given it (every
            class present in the summary, zeros included).
        threshold: the share of its column a sample must exceed to count.
        column: the summary column counted: ``unfitted``, or ``contradicted_plateau`` in a run
            that memorised its labels (the one of larger weight in a run that began to).
        epoch: with a plateau count (``weight`` > 0), the plateau epoch it was read at; else None.
        weight: the share of the plateau count in the total (the training phase's weight):
            0 in a run that never memorised, 1 in one that did.
    """

    total: int
    n: int
    per_class: dict[int, int] = field(default_factory=dict)
    threshold: float = THRESHOLD
    column: str = ESTIMATE_COLUMN
    epoch: int | None = None
    weight: float = 0.0

    @property
    def rate(self) -> float:
        """``total / n`` (NaN for an empty summary)."""
        return self.total / self.n if self.n else float("nan")

    @property
    def method(self) -> str:
        """Which samples were counted, for people."""
        plateau = (f"the samples whose label the model confidently contradicted at epoch {self.epoch}, where its "
                   "learning levelled off before it memorised its labels")
        unfitted = "the samples whose label the model did not fit in most of the last three epochs of the window"
        if self.weight >= 1.0:
            return plateau
        if self.weight > 0.0:
            return (f"two counts mixed as the model began memorising its labels: {self.weight:.0%} of the count of "
                    f"{plateau}, {1 - self.weight:.0%} of the count of {unfitted}")
        return unfitted

    @property
    def caveat(self) -> str:
        """Which way the count errs, for people (the module docstring has the measurements)."""
        return caveat_of(self.column)

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "n": self.n, "rate": self.rate, "threshold": self.threshold,
                "per_class": {str(k): v for k, v in self.per_class.items()},
                "column": self.column, "epoch": self.epoch, "weight": self.weight, "method": self.method,
                "caveat": self.caveat}

    def line(self) -> str:
        """One line for the console and the report."""
        return f"estimated wrong labels: {self.total} of {self.n} ({self.rate:.1%}), {self.method}"

    def per_class_text(self, class_names: Sequence[str] | None = None) -> str:
        names = list(class_names or [])
        return ", ".join(f"{names[c] if 0 <= c < len(names) else c} {v}" for c, v in self.per_class.items())


def caveat_of(column: str | None) -> str:
    """Which way a count from ``column`` errs (a report.json written before the plateau count
    existed has no column: ``unfitted``'s)."""
    if column == CONTRADICTED_PLATEAU:
        return "too high when the model memorised as fast as it learned, still contradicting hard correct labels"
    return "too high while the model has not fitted its correct labels, too low once it fits wrong ones"


def _plateau_and_weight(summary: pd.DataFrame) -> tuple[int | None, float]:
    """(the plateau epoch, the phase's weight) when the summary was read with the ``phase``
    window of a run that began memorising; else (None, 0.0): where the plateau count is read
    and how much of the total it makes. Read from the epoch choices
    :func:`~gwa_diag.analysis.summaries.summarize` leaves in ``attrs``."""
    choices = summary.attrs.get("epochs")
    if choices is None or choices.window_name != "phase" or not choices.phase.memorising:
        return None, 0.0
    return int(choices.phase.plateau), float(choices.phase.weight)


def _flagged(summary: pd.DataFrame, column: str) -> np.ndarray:
    """Samples whose ``column`` exceeds THRESHOLD; NaN (no finite value in those epochs)
    never counts: nothing was observed against the label."""
    share = summary[column].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.nan_to_num(share, nan=0.0) > THRESHOLD


def estimate_wrong_labels(summary: pd.DataFrame) -> NoiseEstimate:
    """Estimate how many labels are wrong, in total and per given class.

    Args:
        summary: the frame of :func:`gwa_diag.analysis.summaries.summarize` (or its
            ranking): needs ``label`` and ``unfitted`` (higher = more suspicious), and
            ``contradicted_plateau`` when its ``attrs`` say the run began memorising its labels.

    Returns:
        :class:`NoiseEstimate`; the count is of samples with ``unfitted > 0.5``, or, when
        the run memorised and the summary reads the ``phase`` window, with
        ``contradicted_plateau > 0.5`` (confidently contradicted at the plateau epoch); in a
        run that began memorising, the two mixed by the phase's weight (rounded).
    """
    epoch, weight = _plateau_and_weight(summary)
    column = CONTRADICTED_PLATEAU if weight >= 0.5 else ESTIMATE_COLUMN
    needed = ("label", ESTIMATE_COLUMN) + ((CONTRADICTED_PLATEAU,) if weight > 0 else ())
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise InputError(f"the summary lacks {sorted(set(missing))}: pass the frame from "
                         "gwa_diag.analysis.summaries.summarize")
    labels = summary["label"].to_numpy()
    classes = np.unique(labels)
    counts = {}
    for name, share in ((ESTIMATE_COLUMN, 1.0 - weight), (CONTRADICTED_PLATEAU, weight)):
        if share > 0:
            wrong = _flagged(summary, name)
            counts[name] = (share, {int(c): share * np.count_nonzero(wrong & (labels == c)) for c in classes})
    # Rounded per class, the total their sum: the per-class counts always add up to it.
    per_class = {int(c): round(sum(pc[int(c)] for _, pc in counts.values())) for c in classes}
    return NoiseEstimate(total=sum(per_class.values()), n=len(summary), per_class=per_class, column=column, epoch=epoch,
                         weight=weight)
