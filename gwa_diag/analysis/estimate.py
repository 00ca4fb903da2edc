"""How many labels are wrong: an estimate from the recorded run, in total and per class.

The estimate counts the samples whose given label the model *confidently contradicted* in
most of the epochs around the GWA-selected one: three consecutive epochs, that one and its
neighbours (the summary's ``disagreement`` column, higher = more suspicious). GWA peaks when the model
has learned the correctly labelled samples but not yet memorised the others, so there its
disagreement with the labels says most; later, a memorising model has fitted the wrong
labels and no longer contradicts them. "Confidently" is confident learning's per-class
threshold (Northcutt et al., JAIR 2021): in each epoch, a sample labelled ``y`` but predicted ``j != y`` counts when
``p(j)`` reaches the mean ``p(label)`` of the samples labelled ``j`` in that epoch, so a
class the model is unsure of everywhere needs less confidence than an easy one.

What it measures, and where it errs: it counts labels the model disagrees with, so it is
close to the number of wrong labels once the model fits the correctly labelled samples,
and **too high** while it does not (an under-fitted model contradicts hard but correct
labels too); with very many wrong labels it can fall short, as the model starts to fit
some of them. The README gives the estimate beside the true count for each CIFAR-10-N label
set. A two-component Gaussian mixture over one score (DivideMix's route; rows of the
detection benchmark) counts closer on some label sets and much further off on others (half to
two thirds of CIFAR-10-N worst's wrong labels, twice aggre's), and flagging by it had a lower F1 on
the sets the defaults were chosen on; its posterior is not shown as a probability.

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

__all__ = ["NoiseEstimate", "estimate_wrong_labels", "THRESHOLD"]

#: A sample counts as wrongly labelled when the model confidently contradicted its label in
#: more than this share of the epochs around the GWA-selected one (two of three).
THRESHOLD = 0.5


@dataclass(frozen=True)
class NoiseEstimate:
    """The estimated number of wrong labels.

    Attributes:
        total: estimated wrong labels among ``n`` samples.
        n: samples summarised.
        per_class: given label -> estimated wrong labels among the samples given it (every
            class present in the summary, zeros included).
        threshold: the ``disagreement`` fraction a sample must exceed to count.
    """

    total: int
    n: int
    per_class: dict[int, int] = field(default_factory=dict)
    threshold: float = THRESHOLD

    @property
    def rate(self) -> float:
        """``total / n`` (NaN for an empty summary)."""
        return self.total / self.n if self.n else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "n": self.n, "rate": self.rate, "threshold": self.threshold,
                "per_class": {str(k): v for k, v in self.per_class.items()},
                "method": "samples whose label the model confidently contradicted in most of the epochs around the GWA-selected one"}

    def line(self) -> str:
        """One line for the console and the report."""
        return (f"estimated wrong labels: {self.total} of {self.n} ({self.rate:.1%}), the samples whose label "
                f"the model confidently contradicted in most of the epochs around the GWA-selected one")

    def per_class_text(self, class_names: Sequence[str] | None = None) -> str:
        names = list(class_names or [])
        return ", ".join(f"{names[c] if 0 <= c < len(names) else c} {v}" for c, v in self.per_class.items())


def estimate_wrong_labels(summary: pd.DataFrame) -> NoiseEstimate:
    """Estimate how many labels are wrong, in total and per given class.

    Args:
        summary: the frame of :func:`gwa_diag.analysis.summaries.summarize` (or its
            ranking): needs ``label`` and ``disagreement`` (higher = more suspicious).

    Returns:
        :class:`NoiseEstimate`; the count is of samples with ``disagreement > 0.5``.
    """
    missing = [c for c in ("label", "disagreement") if c not in summary.columns]
    if missing:
        raise InputError(f"the summary lacks {missing}: pass the frame from gwa_diag.analysis.summaries.summarize")
    frac = summary["disagreement"].to_numpy(dtype=np.float64, na_value=np.nan)
    # NaN (no finite value in those epochs) never counts: nothing was observed against the label.
    wrong = np.nan_to_num(frac, nan=0.0) > THRESHOLD
    labels = summary["label"].to_numpy()
    classes = np.unique(labels)
    per_class = {int(c): int(np.count_nonzero(wrong & (labels == c))) for c in classes}
    return NoiseEstimate(total=int(np.count_nonzero(wrong)), n=len(summary), per_class=per_class)
