"""Choosing an epoch without a validation set, and how far to trust the choice.

* :func:`select_epoch`: the GWA rules (from scratch: highest GWA after the warm-up;
  fine-tuning: highest GWA after the first local minimum).
* :func:`labelwave_epoch`: LabelWave (Yuan et al. 2024), the first minimum of the number
  of training-set prediction changes between epochs, a peer from the same recording.
* :func:`assess_choice`: whether the GWA curve has a clear peak, is still rising (a
  rising curve marks the wrong labels being fitted, not a peak), is flat, or puts the choice
  at the edge of the run.

Whether and from which epoch the model memorised its labels (the training phase, which
:func:`assess_choice` takes into account) is read by :mod:`gwa_diag.phase_rule`.

Pure Python on per-epoch numbers: no torch, no pandas. Part of the recording core; it
imports only :mod:`gwa_diag.checks`, :mod:`gwa_diag.curves` and :mod:`gwa_diag.phase_rule`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Sequence

from gwa_diag.checks import InputError
from gwa_diag.curves import first_local_minimum
from gwa_diag.phase_rule import Phase

__all__ = [
    "EarlyStopResult",
    "select_epoch",
    "labelwave_epoch",
    "StopTrust",
    "assess_choice",
    "rank_correlation",
    "LABELWAVE_WINDOW",
]


@dataclass(frozen=True)
class EarlyStopResult:
    """Which epoch the GWA rule keeps. ``epoch`` is None when no defined epoch qualifies."""

    epoch: int | None
    mode: str
    reason: str
    candidates: list[int]

    def as_dict(self) -> dict:
        return asdict(self)


def select_epoch(
    epochs: Sequence[int],
    gwa: Sequence[float | None],
    *,
    mode: Literal["scratch", "finetune"] = "scratch",
    total_epochs: int | None = None,
    warmup_fraction: float = 0.1,
) -> EarlyStopResult:
    """Pick the early-stopping epoch from the GWA curve (no validation set).

    ``scratch``: ignore epochs inside the first ``warmup_fraction`` of training (by the
    planned ``total_epochs``, default the number of epochs given), then take the highest
    GWA. ``finetune``: GWA of a pre-trained model first falls, then rises: find the first
    local minimum and take the highest GWA after it. Undefined epochs (None/NaN) are
    skipped, never selected.
    """
    if mode not in ("scratch", "finetune"):
        raise InputError(f"unknown mode {mode!r}; valid modes: 'scratch', 'finetune'")
    if len(epochs) != len(gwa):
        raise InputError(f"{len(epochs)} epochs but {len(gwa)} GWA values")
    if not 0.0 <= warmup_fraction < 1.0:
        raise InputError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    pairs = sorted(
        (int(e), float(g))
        for e, g in zip(epochs, gwa)
        if g is not None and not (isinstance(g, float) and math.isnan(g)) and math.isfinite(float(g))
    )
    if mode == "scratch":
        total = total_epochs if total_epochs is not None else (max(epochs) + 1 if len(epochs) else 0)
        # Epoch e (0-based) ends after (e + 1) / total of training; skip those within warm-up.
        cands = [(e, g) for e, g in pairs if (e + 1) > warmup_fraction * total + 1e-9]
        if not cands:
            return EarlyStopResult(None, mode, "no defined GWA after the warm-up fraction", [])
        best = max(cands, key=lambda eg: (eg[1], -eg[0]))
        return EarlyStopResult(best[0], mode, f"highest GWA ({best[1]:.4g}) after warm-up", [e for e, _ in cands])
    minimum = first_local_minimum([g for _, g in pairs])
    if minimum is None:
        rising = len(pairs) > 1 and all(b[1] >= a[1] for a, b in zip(pairs, pairs[1:])) and pairs[-1][1] > pairs[0][1]
        why = "GWA has only risen since the first epoch, no fall seen" if rising else "curve still falling or too short"
        return EarlyStopResult(None, mode, f"no local minimum of GWA yet ({why})", [])
    cands = pairs[minimum + 1 :]
    best = max(cands, key=lambda eg: (eg[1], -eg[0]))
    return EarlyStopResult(
        best[0], mode, f"highest GWA ({best[1]:.4g}) after the first local minimum at epoch {pairs[minimum][0]}",
        [e for e, _ in cands],
    )


# --------------------------------------------------------------------------------------
# LabelWave (a peer rule from the same recording)
# --------------------------------------------------------------------------------------

#: Epochs in LabelWave's trailing moving average of prediction changes. One epoch's count
#: jitters with the data order and augmentation; a short average keeps the first dip from
#: being a single noisy epoch while lagging the true minimum by at most one epoch.
LABELWAVE_WINDOW = 3


def labelwave_epoch(
    epochs: Sequence[int], changes: Sequence[float | None], *, window: int = LABELWAVE_WINDOW
) -> EarlyStopResult:
    """LabelWave (Yuan, Feng, Liu, ICLR 2025, "Early Stopping Against Label Noise Without
    Validation Data"): stop at the first local minimum of the training-set prediction
    changes, smoothed by a trailing moving average of ``window`` epochs.

    ``changes[i]`` is the number (or fraction) of training samples whose prediction at epoch
    ``epochs[i]`` differs from their prediction at the previous epoch; None/NaN where it is
    unknown (the first epoch). Fewer changes = the model has settled on the clean patterns;
    the rise after the minimum is the wrong labels being fitted. ``epoch`` is None when the
    smoothed curve has no local minimum yet (still falling, or too short).
    """
    if len(epochs) != len(changes):
        raise InputError(f"{len(epochs)} epochs but {len(changes)} prediction-change counts")
    if int(window) < 1:
        raise InputError(f"window must be at least 1 epoch, got {window}")
    pairs = sorted((int(e), float(c)) for e, c in zip(epochs, changes) if c is not None and math.isfinite(float(c)))
    smooth = [
        (pairs[i][0], sum(c for _, c in pairs[i - window + 1 : i + 1]) / window) for i in range(window - 1, len(pairs))
    ]
    minimum = first_local_minimum([c for _, c in smooth])
    if minimum is None:
        return EarlyStopResult(None, "labelwave", "no local minimum of the prediction changes yet", [])
    epoch, value = smooth[minimum]
    return EarlyStopResult(
        epoch, "labelwave",
        f"first minimum of the prediction changes ({window}-epoch average {value:.4g}) at epoch {epoch}",
        [e for e, _ in smooth],
    )


# --------------------------------------------------------------------------------------
# how far to trust the GWA choice
# --------------------------------------------------------------------------------------

#: Rank correlation of GWA with the epoch, over the epochs the rule could choose, above
#: which the curve counts as rising throughout: the highest value is then where training
#: stopped, not a peak.
RISING_CORRELATION = 0.8
#: A peak must stand this many typical epoch-to-epoch changes above the median of the
#: candidate epochs; below it the "highest GWA" is within the curve's own jitter.
PEAK_NOISE_FACTOR = 3.0


@dataclass(frozen=True)
class StopTrust:
    """How far to trust the GWA-selected epoch.

    ``level``: ``clear`` (an interior peak well above the curve's jitter), ``weak`` (a
    choice at the edge of the run, or a peak within the jitter) or ``none`` (no choice, or a
    curve that only rises: the highest GWA is the last epoch because fitting the wrong labels
    raises alignment, not because the model generalises best there). ``reasons`` say why.
    """

    level: Literal["clear", "weak", "none"]
    reasons: tuple[str, ...]
    rising_correlation: float | None = None
    peak_margin: float | None = None

    def note(self) -> str:
        return f"trust in the GWA choice: {self.level}" + (f" ({'; '.join(self.reasons)})" if self.reasons else "")

    def as_dict(self) -> dict:
        return asdict(self)


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two equal-length sequences (ties share their mean
    rank); None with fewer than 3 pairs or a constant sequence."""
    if len(x) != len(y):
        raise InputError(f"{len(x)} values against {len(y)}")
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def assess_choice(epochs: Sequence[int], gwa: Sequence[float | None], selected: EarlyStopResult,
                  phase: Phase | None = None) -> StopTrust:
    """How far to trust ``selected`` (the result of :func:`select_epoch` on this curve).

    Looks only at the epochs the rule could choose (``selected.candidates``):

    * rising: GWA's rank correlation with the epoch is at least
      :data:`RISING_CORRELATION` - the curve has no peak, it climbs as training fits
      (memorises) the labels, so the highest value says nothing about generalisation;
    * edge: the choice is the first or last candidate epoch - the curve may still be rising
      past the end of the run, or the peak is cut off by the warm-up;
    * no clear peak: the chosen GWA stands less than :data:`PEAK_NOISE_FACTOR` typical
      epoch-to-epoch changes above the median candidate - any epoch would have done;
    * memorised: the choice lies at or after the onset of a run that began memorising (``phase.memorising``, see
      :func:`gwa_diag.phase_rule.read_phase`) - GWA rises while the model fits its wrong labels, so a peak there
      is no sign of generalisation (on a memorising GPU recording the GWA choice, epoch 30,
      scored 3.4 points below the best epoch with a clear peak).
    """
    if selected.epoch is None:
        return StopTrust("none", (f"no epoch selected: {selected.reason}",))
    by_epoch = {int(e): float(g) for e, g in zip(epochs, gwa) if g is not None and math.isfinite(float(g))}
    cands = [e for e in selected.candidates if e in by_epoch]
    values = [by_epoch[e] for e in cands]
    if len(values) < 3:
        return StopTrust("weak", (f"only {len(values)} epoch(s) to choose from",))
    reasons: list[str] = []
    rising = rank_correlation([float(e) for e in cands], values)
    steps = sorted(abs(b - a) for a, b in zip(values, values[1:]))
    jitter = steps[len(steps) // 2]
    median = sorted(values)[len(values) // 2]
    margin = (by_epoch[selected.epoch] - median) / jitter if jitter > 0 else math.inf
    at_last, at_first = selected.epoch == cands[-1], selected.epoch == cands[0]
    level: Literal["clear", "weak", "none"] = "clear"
    if rising is not None and rising >= RISING_CORRELATION:
        reasons.append(f"GWA rose almost steadily (rank correlation with the epoch {rising:.2f}): "
                       "a rising curve tracks the labels being fitted, not a peak")
        level = "none" if at_last else "weak"
    if at_last:
        reasons.append(f"the choice is the last epoch ({selected.epoch}): the curve may still rise after the run")
        level = "none" if level == "none" else "weak"
    elif at_first:
        reasons.append(f"the choice is the first epoch after the warm-up ({selected.epoch})")
        level = "weak" if level == "clear" else level
    if margin < PEAK_NOISE_FACTOR:
        reasons.append(f"no clear peak: the chosen GWA stands {margin:.1f} typical epoch-to-epoch changes "
                       "above the median epoch")
        level = "weak" if level == "clear" else level
    if phase is not None and phase.memorising and phase.onset is not None and selected.epoch >= phase.onset:
        # No advice to fall back on the weights from before the onset: on most measured
        # memorising runs they scored below the last epoch (gwa_diag.analysis.stopping says so).
        reasons.append(f"the choice is after the model started memorising its labels (epoch {phase.onset}): "
                       "GWA rises while the wrong labels are fitted, so a peak there says nothing of accuracy")
        level = "weak" if level == "clear" else level
    return StopTrust(level, tuple(reasons), rising_correlation=rising, peak_margin=None if math.isinf(margin) else margin)
