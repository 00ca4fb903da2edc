"""Choosing an epoch without a validation set, and how far to trust the choice.

* :func:`select_epoch`: the GWA rules (from scratch: highest GWA after the warm-up;
  fine-tuning: highest GWA after the first local minimum).
* :func:`labelwave_epoch`: LabelWave (Yuan et al. 2024), the first minimum of the number
  of training-set prediction changes between epochs, a peer from the same recording.
* :func:`assess_choice`: whether the GWA curve has a clear peak, is still rising (a
  rising curve marks the wrong labels being fitted, not a peak), is flat, or puts the choice
  at the edge of the run.
* :func:`read_phase`: whether and from which epoch the model memorised its given labels,
  from the per-epoch fit of those labels and the share the model confidently contradicted.
  The analysis reads its default window from it; the engine keeps the checkpoint before it.

Pure Python on per-epoch numbers: no torch, no pandas. Part of the recording core; it
imports only :mod:`gwa_diag.checks`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Sequence

from gwa_diag.checks import InputError

__all__ = [
    "EarlyStopResult",
    "select_epoch",
    "labelwave_epoch",
    "StopTrust",
    "assess_choice",
    "rank_correlation",
    "LABELWAVE_WINDOW",
    "Phase",
    "read_phase",
    "pending_plateaus",
    "memorisation_weight",
    "fit_at_share",
    "MEMORISING_FROM",
    "MEMORISED_AT",
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
    minimum = _first_local_minimum([g for _, g in pairs])
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


def _local_minima(values: Sequence[float], *, first: bool = False) -> list[int]:
    """Index of the last point of every run of equal values that is lower than the run before
    it and the run after it (a flat step inside a fall is not a minimum); with ``first``,
    also the first run when the run after it is higher."""
    runs: list[tuple[int, int]] = []  # (first, last) index of each run of equal values
    for i, v in enumerate(values):
        if runs and values[runs[-1][0]] == v:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    out = [runs[0][1]] if first and len(runs) > 1 and values[runs[0][0]] < values[runs[1][0]] else []
    out += [run[1] for before, run, after in zip(runs, runs[1:], runs[2:])
            if values[before[0]] > values[run[0]] < values[after[0]]]
    return out


def _first_local_minimum(values: Sequence[float]) -> int | None:
    """Index of the first interior local minimum (:func:`_local_minima`), None if none."""
    return next(iter(_local_minima(values)), None)


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
    minimum = _first_local_minimum([c for _, c in smooth])
    if minimum is None:
        return EarlyStopResult(None, "labelwave", "no local minimum of the prediction changes yet", [])
    epoch, value = smooth[minimum]
    return EarlyStopResult(
        epoch, "labelwave",
        f"first minimum of the prediction changes ({window}-epoch average {value:.4g}) at epoch {epoch}",
        [e for e, _ in smooth],
    )


# --------------------------------------------------------------------------------------
# the training phase: when the model starts memorising its given labels
# --------------------------------------------------------------------------------------

#: Fewer complete epochs than this and the phase is not read (the plateau needs a moving
#: average with a neighbour on each side, and a point after it).
MIN_PHASE_EPOCHS = 5
#: A plateau must be followed, within PLATEAU_HORIZON epochs, by a smoothed fitting rate at
#: least PLATEAU_RISE times its own: memorisation speeds the fitting up again. Why: in an
#: ordinary run (SGD, augmentation, decaying rate) the rate drifts flat for tens of epochs
#: and its first dip is noise: read there, the noise estimate comes out far too high and the
#: run is called memorised early. The horizon and the rise are chosen on the recorded runs of
#: ``bench/regimes.py`` (a range of horizons works; the rise's margin is narrow: the README
#: has the table).
PLATEAU_HORIZON = 8
PLATEAU_RISE = 1.75


#: How far a run has memorised is the share of the estimated wrong labels it fitted after the
#: plateau, ``(fit - (1 - noise)) / noise`` at its highest so far. The memorisation weight
#: rises linearly from 0 at ``MEMORISING_FROM`` to 1 at ``MEMORISED_AT`` of that share: the
#: window, the count and the record move with the weight, so a run just short of a threshold
#: reads almost as one just past it. Why not 0 from the crossing on: the noise estimate can be
#: too high (an SGD run with augmentation still contradicts hard correct labels at its
#: plateau), so its fit passes ``1 - noise`` without fitting a wrong label. Why the ramp ends
#: where it does: a slow memoriser that fitted just under half of its estimated wrong labels
#: already ranks far better from its early epochs. Both ends are measured on every tuning cell
#: and every prefix of it (``python bench/regimes.py --quick --prefixes``; the README has the
#: table).
MEMORISING_FROM = 0.25
MEMORISED_AT = 0.5


@dataclass(frozen=True)
class Phase:
    """Whether, how far and from which epoch the model memorised its given labels.

    Read from two per-epoch curves (:func:`read_phase`): ``fit``, the share of samples
    predicted as labelled, and ``disagreement``, the share the model *confidently*
    contradicted (another class predicted with at least that class's mean self-confidence).

    Attributes:
        memorised: the model fitted at least ``MEMORISED_AT`` of the estimated wrong labels
            after the plateau (``weight`` is 1).
        onset: the first memorising epoch (fit > 1 - noise after the plateau), when
            ``weight`` > 0; else None.
        plateau: the epoch where learning the clean patterns levelled off: the first local
            minimum of the smoothed share of still-unfitted samples fitted per epoch (or
            the first epoch, when the share only rises after it) that the share exceeds
            ``PLATEAU_RISE`` times within ``PLATEAU_HORIZON`` epochs; None when the curve
            has none yet.
        noise: the estimated share of wrong labels (``disagreement`` at the plateau).
        crossing: the first epoch after the plateau with fit > 1 - noise, whatever the
            weight.
        confirmed: the first epoch after the plateau at which ``weight`` reached 1; None when none.
        reason: one sentence for people.
        fitted_wrong: the largest share of the estimated wrong labels fitted after the plateau,
            ``(fit - (1 - noise)) / noise`` clipped to [0, 1]; None without a noise estimate.
        weight: how far the phase window, the count and the kept record follow memorisation,
            0 (the run reads as never memorised) to 1 (memorised): ``fitted_wrong`` mapped
            linearly from ``MEMORISING_FROM`` (0) to ``MEMORISED_AT`` (1).
    """

    memorised: bool
    onset: int | None
    plateau: int | None
    noise: float | None
    crossing: int | None
    confirmed: int | None
    reason: str
    fitted_wrong: float | None = None
    weight: float = 0.0

    @property
    def memorising(self) -> bool:
        """The model began memorising: ``weight`` > 0, or ``memorised`` (a phase built by
        hand without a weight)."""
        return self.memorised or self.weight > 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def memorisation_weight(fitted_wrong: float) -> float:
    """The weight of a share of estimated wrong labels fitted: 0 up to ``MEMORISING_FROM``,
    1 from ``MEMORISED_AT``, linear between."""
    span = MEMORISED_AT - MEMORISING_FROM
    return min(1.0, max(0.0, (fitted_wrong - MEMORISING_FROM) / span))


def fit_at_share(noise: float, share: float) -> float:
    """The fit at which a run has fitted ``share`` of the estimated wrong labels (and every
    other label): ``1 - noise + share * noise``."""
    return 1.0 - noise + share * noise


def _unfitted_fitted(fit: Sequence[float]) -> list[float]:
    """Per epoch after the first: the share of the samples unfitted at the previous epoch
    that the model fits now, ``(fit_e - fit_{e-1}) / (1 - fit_{e-1})``; NaN for epoch 0 and
    where nothing was left unfitted."""
    out = [math.nan]
    for before, now in zip(fit, fit[1:]):
        out.append((now - before) / (1.0 - before) if before < 1.0 else math.nan)
    return out


def _warmup_end(lr: Sequence[float | None] | None, n: int) -> int:
    """Position of the first epoch whose recorded learning rate is not above the previous
    epoch's (the engine records the rate of the epoch's first step, so the epoch that starts
    at the peak is left out too); ``n`` while it is still rising; 0 when a rate is unknown.

    Why: during a warm-up the fitting rate follows the learning rate, not the data. On SGD
    runs with a short warm-up the fit fell in the first epoch, the next epoch's fitting rate
    looked like a dip before a rise, and the phase was read there as memorised far too early,
    which cut the ranking's best window (``bench/regimes.py --mode gpu``; the README has the
    runs). The cost: under a long warm-up (a one-cycle schedule that rises for a third of
    training) no plateau is read before the peak, so a run that memorised earlier is read
    late."""
    if lr is None or len(lr) < n:
        return 0
    values = [math.nan if v is None else float(v) for v in lr[:n]]
    if not all(math.isfinite(v) for v in values):
        return 0
    return next((e for e in range(1, n) if values[e] <= values[e - 1]), n)


def _plateau(fit: list[float], start: int = 0) -> tuple[int | None, list[int]]:
    """(position of the plateau or None, positions of candidates still waiting for their rise).

    Candidates are the local minima of the centred 3-epoch average of the fitting rate over
    the epochs from ``start`` on (the end of the learning-rate warm-up; the first average
    counts when the next is higher: a run that memorises fast has no dip before its rise).
    The first candidate whose average rises ``PLATEAU_RISE``-fold within the next
    ``PLATEAU_HORIZON`` averages is the plateau; a candidate whose horizon is not over yet is
    pending, and the candidates after it are not looked at until it is decided (so the
    answer on the first k epochs never changes)."""
    gain = _unfitted_fitted(fit)
    # Centred 3-epoch average where all three values are known (positions 2 .. n-2), of
    # fitting rates after the warm-up only.
    smooth = [(i, (gain[i - 1] + gain[i] + gain[i + 1]) / 3) for i in range(max(2, start + 1), len(fit) - 1)]
    smooth = [(i, v) for i, v in smooth if math.isfinite(v)]
    values = [v for _, v in smooth]
    pending: list[int] = []
    for k in _local_minima(values, first=True):
        ahead = values[k + 1:k + 1 + PLATEAU_HORIZON]
        # From a rate of zero or below (the fit stood still or fell) any fitting is a rise.
        floor = max(values[k], 0.0)
        rises = any(v > floor and v >= PLATEAU_RISE * floor for v in ahead)
        if rises and not pending:
            return smooth[k][0], []
        if rises or len(ahead) < PLATEAU_HORIZON:
            pending.append(smooth[k][0])  # undecided, or decided behind an undecided one
    return None, pending


def pending_plateaus(fit: Sequence[float | None], lr: Sequence[float | None] | None = None) -> list[int]:
    """Positions (0-based, in ``fit``) of the epochs that may still turn out to be the
    plateau once more epochs are known: the engine keeps their weights waiting."""
    return _plateau([math.nan if v is None else float(v) for v in fit], _warmup_end(lr, len(fit)))[1]


def read_phase(epochs: Sequence[int], fit: Sequence[float | None], disagreement: Sequence[float | None],
               lr: Sequence[float | None] | None = None) -> Phase:
    """Read the training phase: whether, and from which epoch, the model memorised its labels.

    How: a model first learns the patterns that most labels agree on, and the share of the
    still-unfitted samples it fits per epoch falls; the first local minimum of that share
    (3-epoch centred average) after which it rises ``PLATEAU_RISE``-fold within
    ``PLATEAU_HORIZON`` epochs (memorising speeds the fitting up again; a run that memorises
    at once has no dip, and its first epoch after the learning-rate warm-up counts) is the
    **plateau**. There, the share of samples whose label the
    model confidently contradicts estimates the share of wrong labels, ``noise``. Fitting
    more than ``1 - noise`` of the labels afterwards means fitting labels the model itself
    contradicted: the first such epoch is the **onset**. How far the run memorised is the
    largest share of the estimated wrong labels it fitted so far, ``(fit - (1 - noise)) /
    noise`` (``fitted_wrong``); its **weight** rises linearly from 0 at ``MEMORISING_FROM`` to 1
    at ``MEMORISED_AT`` (``memorised``), and the phase window, the estimated count and the
    kept checkpoint follow the weight (:mod:`gwa_diag.analysis.phase`,
    :mod:`gwa_diag.analysis.estimate`, :mod:`gwa_diag.training.memorisation`).

    Why a weight and not a threshold: with one threshold, a run just short of it read the
    second half of training, where a memorising run ranks its wrong labels far worse, and a run
    just past it the epochs before the onset. Why the weight starts above 0: the noise
    estimate can be too high (a model trained with augmentation and a decaying rate still
    contradicts hard correct labels at its plateau), so the fit of such a run passes
    ``1 - noise`` late in training without memorising anything. ``bench/regimes.py`` measures
    the rule on every cell and on every prefix of each recording (``--prefixes``).

    Causal: the answer on the first ``k`` epochs never changes once given (the plateau is
    known two to ``PLATEAU_HORIZON + 2`` epochs after it, the onset needs only the epochs up
    to it, and ``fitted_wrong`` and the weight are the highest so far, so later epochs only
    raise them), so the engine can read it while training and keep the plateau's weights
    (:func:`pending_plateaus` names the epochs whose weights must wait).

    Args:
        epochs: complete epochs, ascending.
        fit: per epoch, the share of training samples predicted as labelled (None/NaN: unknown).
        disagreement: per epoch, the share confidently contradicted (None/NaN: unknown).
        lr: per epoch, the recorded learning rate (the engine's: at the epoch's first step),
            or None: the plateau is looked for only after the warm-up (from the first epoch
            whose rate is not above the previous one's); unknown rates leave every epoch in.
    """
    if not len(epochs) == len(fit) == len(disagreement):
        raise InputError(f"{len(epochs)} epochs, {len(fit)} fit values and {len(disagreement)} disagreement values")
    ep = [int(e) for e in epochs]
    f = [math.nan if v is None else float(v) for v in fit]
    if len(ep) < MIN_PHASE_EPOCHS:
        return Phase(False, None, None, None, None, None,
                     f"too few epochs to read the training phase ({len(ep)} < {MIN_PHASE_EPOCHS})")
    p, _ = _plateau(f, _warmup_end(lr, len(f)))
    if p is None:
        return Phase(False, None, None, None, None, None,
                     "the model never memorised its labels: the share of unfitted samples it fits per epoch "
                     f"never levelled off and then rose {PLATEAU_RISE:g}-fold within {PLATEAU_HORIZON} epochs")
    rho = disagreement[p]
    if rho is None or not math.isfinite(float(rho)):
        return Phase(False, None, ep[p], None, None, None,
                     f"the confidently contradicted share is unknown at the plateau (epoch {ep[p]})")
    return _memorisation(ep, f, p, float(rho))


def _memorisation(ep: list[int], f: list[float], p: int, rho: float) -> Phase:
    """The phase after the plateau at position ``p`` with the noise estimate ``rho``: the
    running largest share of the estimated wrong labels fitted, its weight and the epochs
    where the fit crossed ``1 - rho`` and the weight reached 1."""
    later = [i for i in range(p + 1, len(ep)) if math.isfinite(f[i])]
    crossing = next((i for i in later if f[i] > 1.0 - rho), None)
    # A noise estimate of 0 leaves no wrong label to fit.
    share = {i: min(1.0, max(0.0, (f[i] - (1.0 - rho)) / rho)) if rho > 0 else 0.0 for i in later}
    fitted = max(share.values(), default=0.0)
    weight = memorisation_weight(fitted)
    confirmed = next((i for i in later if memorisation_weight(share[i]) >= 1.0), None)
    cross_epoch = ep[crossing] if crossing is not None else None
    top = max((f[i] for i in later), default=math.nan)
    peak = next((i for i in later if share[i] == fitted), None)
    if weight <= 0.0:
        return Phase(False, None, ep[p], rho, cross_epoch, None,
                     f"the model never memorised its labels: it fitted at most {top:.1%} of them after epoch "
                     f"{ep[p]}, {fitted:.0%} of the estimated {rho:.1%} wrong labels (memorising counts from "
                     f"{MEMORISING_FROM:.0%} of them, {fit_at_share(rho, MEMORISING_FROM):.1%} fit)", fitted, 0.0)
    onset = cross_epoch if cross_epoch is not None else ep[peak]
    if weight < 1.0:
        return Phase(False, onset, ep[p], rho, cross_epoch, None,
                     f"the model began memorising its labels at epoch {onset}: it fitted more than the "
                     f"{1 - rho:.1%} it did not confidently contradict at epoch {ep[p]}, up to {top:.1%} by epoch "
                     f"{ep[peak]} ({fitted:.0%} of the estimated wrong labels; memorised from "
                     f"{MEMORISED_AT:.0%} of them, {fit_at_share(rho, MEMORISED_AT):.1%} fit)", fitted, weight)
    return Phase(True, onset, ep[p], rho, cross_epoch, ep[confirmed],
                 f"the model memorised its labels from epoch {onset}: it fitted more than the {1 - rho:.1%} it "
                 f"did not confidently contradict at epoch {ep[p]}, and {f[confirmed]:.1%} by epoch {ep[confirmed]}",
                 fitted, 1.0)


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
      :func:`read_phase`) - GWA rises while the model fits its wrong labels, so a peak there
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
