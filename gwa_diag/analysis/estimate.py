"""How many labels are wrong: an estimate from the recorded run, in total and per class.

The estimate counts the samples whose given label the model did not fit in most of the
three epochs that carry the signal (the summary's ``unfitted`` column, higher = more
suspicious): with the default ``phase`` window, the last three epochs before the model
started memorising its labels, or the last three of a run that never did. There the model
has learned what the correct labels agree on but not yet fitted the wrong ones, so the
samples it still predicts as another class are mostly the wrongly labelled ones.

Measured (``python bench/regimes.py``; the README has the table): on two GPU recordings
with 8,110 wrong labels among 20,000 it counted 7,915 (a run that never memorised) and
8,788 (one that memorised from epoch 7). The estimate it replaced (the samples the model
*confidently* contradicted around the GWA-selected epoch) counted 4,985 and 0, and a
two-component Gaussian mixture over the mean alignment, fitted to convergence, 4,010 and
1,729 (the distribution is skewed, not bimodal).

Where it errs: it counts labels the model has not fitted, so it is **too high** while the
model under-fits the correctly labelled samples too (a short run on hard data), and too
low once a run has started to fit wrong labels before the window's end. The share is not a
probability of a wrong label and is not shown as one.

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

__all__ = ["NoiseEstimate", "estimate_wrong_labels", "ESTIMATE_COLUMN", "THRESHOLD"]

#: The summary column the estimate counts from (higher = more suspicious).
ESTIMATE_COLUMN = "unfitted"
#: A sample counts as wrongly labelled when the model did not fit its label in more than
#: this share of the three epochs (two of three).
THRESHOLD = 0.5


@dataclass(frozen=True)
class NoiseEstimate:
    """The estimated number of wrong labels.

    Attributes:
        total: estimated wrong labels among ``n`` samples.
        n: samples summarised.
        per_class: given label -> estimated wrong labels among the samples given it (every
            class present in the summary, zeros included).
        threshold: the ``unfitted`` share a sample must exceed to count.
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
                "method": "samples whose label the model did not fit in most of the last three epochs of the window"}

    def line(self) -> str:
        """One line for the console and the report."""
        return (f"estimated wrong labels: {self.total} of {self.n} ({self.rate:.1%}), the samples whose label "
                f"the model did not fit in most of the last three epochs of the window")

    def per_class_text(self, class_names: Sequence[str] | None = None) -> str:
        names = list(class_names or [])
        return ", ".join(f"{names[c] if 0 <= c < len(names) else c} {v}" for c, v in self.per_class.items())


def estimate_wrong_labels(summary: pd.DataFrame) -> NoiseEstimate:
    """Estimate how many labels are wrong, in total and per given class.

    Args:
        summary: the frame of :func:`gwa_diag.analysis.summaries.summarize` (or its
            ranking): needs ``label`` and ``unfitted`` (higher = more suspicious).

    Returns:
        :class:`NoiseEstimate`; the count is of samples with ``unfitted > 0.5``.
    """
    missing = [c for c in ("label", ESTIMATE_COLUMN) if c not in summary.columns]
    if missing:
        raise InputError(f"the summary lacks {missing}: pass the frame from gwa_diag.analysis.summaries.summarize")
    share = summary[ESTIMATE_COLUMN].to_numpy(dtype=np.float64, na_value=np.nan)
    # NaN (no finite value in those epochs) never counts: nothing was observed against the label.
    wrong = np.nan_to_num(share, nan=0.0) > THRESHOLD
    labels = summary["label"].to_numpy()
    classes = np.unique(labels)
    per_class = {int(c): int(np.count_nonzero(wrong & (labels == c))) for c in classes}
    return NoiseEstimate(total=int(np.count_nonzero(wrong)), n=len(summary), per_class=per_class)
