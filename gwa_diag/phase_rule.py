"""The training phase: whether, how far and from which epoch the model memorised its given
labels, read from per-epoch curves of one training run (:func:`read_phase`).

A model first learns the patterns most labels agree on, then fits the labels that disagree
with them, the wrong ones among them; every training-dynamics score stops telling the wrong
labels apart once they are fitted. The rule reads where that happens from three per-epoch
numbers the recorder writes to ``epochs.parquet``: the fit of the given labels
(``train_acc``), the share of samples whose label the model confidently contradicted
(``contradicted``) and the learning rate (``lr``).

Who reads it: the analysis chooses its default window and its count of wrong labels by it
(:mod:`gwa_diag.analysis.phase`, :mod:`gwa_diag.analysis.estimate`); the engine reads it
after every epoch and keeps the weights from before memorisation
(:mod:`gwa_diag.training.memorisation`); :func:`gwa_diag.early_stopping.assess_choice`
distrusts a GWA choice made after the onset.

Pure Python on per-epoch numbers: no torch, no pandas. Part of the recording core; it
imports only :mod:`gwa_diag.checks` and :mod:`gwa_diag.curves`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

from gwa_diag.checks import InputError
from gwa_diag.curves import local_minima

__all__ = [
    "MEMORISED_AT",
    "MEMORISING_FROM",
    "MIN_PHASE_EPOCHS",
    "PLATEAU_HORIZON",
    "PLATEAU_RISE",
    "Phase",
    "fit_at_share",
    "memorisation_weight",
    "pending_plateaus",
    "read_phase",
]


#: Fewer complete epochs than this and the phase is not read (the plateau needs a moving
#: average with a neighbour on each side, and a point after it).
MIN_PHASE_EPOCHS = 5
#: A plateau must be followed, within PLATEAU_HORIZON epochs, by a smoothed fitting rate at
#: least PLATEAU_RISE times its own: memorisation speeds the fitting up again. Why: in an
#: ordinary run (SGD, augmentation, decaying rate) the rate drifts flat for tens of epochs
#: and its first dip is noise: read there, the noise estimate comes out far too high and the
#: run is called memorised early. The horizon and the rise are chosen on the recorded runs of
#: ``bench/regimes.py``; its table of the plateau constants reads every prefix with other
#: pairs (``--prefixes``: docs/benchmarks/regimes.md).
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
#: and every prefix of it (``python bench/regimes.py --quick --prefixes``: docs/benchmarks/regimes.md).
MEMORISING_FROM = 0.25
MEMORISED_AT = 0.5


@dataclass(frozen=True)
class Phase:
    """Whether, how far and from which epoch the model memorised its given labels.

    Read from two per-epoch curves (:func:`read_phase`): ``fit``, the share of samples
    predicted as labelled, and ``contradicted``, the share the model *confidently*
    contradicted (another class predicted with at least that class's mean self-confidence).

    Attributes:
        memorised: the model fitted at least ``MEMORISED_AT`` of the estimated wrong labels
            after the plateau (``weight`` is 1).
        onset: the first memorising epoch (fit > 1 - noise after the plateau), when
            ``weight`` > 0; else None.
        plateau: the epoch where learning the clean patterns levelled off: the first local
            minimum of the smoothed fitting rate, the share of still-unfitted samples fitted
            per epoch (or the first epoch, when the rate only rises after it), that the rate
            exceeds ``PLATEAU_RISE`` times within ``PLATEAU_HORIZON`` epochs; None when the
            curve has none yet.
        noise: the estimated share of wrong labels (``contradicted`` at the plateau).
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


def _fitting_rate(fit: Sequence[float]) -> list[float]:
    """The fitting rate, per epoch after the first: the share of the samples unfitted at the
    previous epoch that the model fits now, ``(fit_e - fit_{e-1}) / (1 - fit_{e-1})``; NaN for epoch 0 and
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
    which cut the ranking's best window (``bench/regimes.py --mode gpu``). The cost: under a long warm-up (a one-cycle schedule that rises for a third of
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
    rate = _fitting_rate(fit)
    # Centred 3-epoch average where all three values are known (positions 2 .. n-2), of
    # fitting rates after the warm-up only.
    smooth = [(i, (rate[i - 1] + rate[i] + rate[i + 1]) / 3) for i in range(max(2, start + 1), len(fit) - 1)]
    smooth = [(i, v) for i, v in smooth if math.isfinite(v)]
    values = [v for _, v in smooth]
    pending: list[int] = []
    for k in local_minima(values, first=True):
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


def read_phase(epochs: Sequence[int], fit: Sequence[float | None], contradicted: Sequence[float | None],
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
        fit: per epoch, the share of training samples predicted as labelled (None/NaN: unknown);
            the recorder's ``train_acc``.
        contradicted: per epoch, the share confidently contradicted (None/NaN: unknown); the
            recorder's column of the same name.
        lr: per epoch, the recorded learning rate (the engine's: at the epoch's first step),
            or None: the plateau is looked for only after the warm-up (from the first epoch
            whose rate is not above the previous one's); unknown rates leave every epoch in.
    """
    if not len(epochs) == len(fit) == len(contradicted):
        raise InputError(f"{len(epochs)} epochs, {len(fit)} fit values and {len(contradicted)} contradicted values")
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
    noise = contradicted[p]
    if noise is None or not math.isfinite(float(noise)):
        return Phase(False, None, ep[p], None, None, None,
                     f"the confidently contradicted share is unknown at the plateau (epoch {ep[p]})")
    return _memorisation(ep, f, p, float(noise))


def _memorisation(ep: list[int], f: list[float], p: int, noise: float) -> Phase:
    """The phase after the plateau at position ``p`` with the noise estimate ``noise``: the
    running largest share of the estimated wrong labels fitted, its weight and the epochs
    where the fit crossed ``1 - noise`` and the weight reached 1."""
    later = [i for i in range(p + 1, len(ep)) if math.isfinite(f[i])]
    crossing = next((i for i in later if f[i] > 1.0 - noise), None)
    # A noise estimate of 0 leaves no wrong label to fit.
    fitted_wrong = {i: min(1.0, max(0.0, (f[i] - (1.0 - noise)) / noise)) if noise > 0 else 0.0 for i in later}
    fitted = max(fitted_wrong.values(), default=0.0)
    weight = memorisation_weight(fitted)
    confirmed = next((i for i in later if memorisation_weight(fitted_wrong[i]) >= 1.0), None)
    cross_epoch = ep[crossing] if crossing is not None else None
    top = max((f[i] for i in later), default=math.nan)
    peak = next((i for i in later if fitted_wrong[i] == fitted), None)
    if weight <= 0.0:
        return Phase(False, None, ep[p], noise, cross_epoch, None,
                     f"the model never memorised its labels: it fitted at most {top:.1%} of them after epoch "
                     f"{ep[p]}, {fitted:.0%} of the estimated {noise:.1%} wrong labels (memorising counts from "
                     f"{MEMORISING_FROM:.0%} of them, {fit_at_share(noise, MEMORISING_FROM):.1%} fit)", fitted, 0.0)
    onset = cross_epoch if cross_epoch is not None else ep[peak]
    if weight < 1.0:
        return Phase(False, onset, ep[p], noise, cross_epoch, None,
                     f"the model began memorising its labels at epoch {onset}: it fitted more than the "
                     f"{1 - noise:.1%} it did not confidently contradict at epoch {ep[p]}, up to {top:.1%} by epoch "
                     f"{ep[peak]} ({fitted:.0%} of the estimated wrong labels; memorised from "
                     f"{MEMORISED_AT:.0%} of them, {fit_at_share(noise, MEMORISED_AT):.1%} fit)", fitted, weight)
    return Phase(True, onset, ep[p], noise, cross_epoch, ep[confirmed],
                 f"the model memorised its labels from epoch {onset}: it fitted more than the {1 - noise:.1%} it "
                 f"did not confidently contradict at epoch {ep[p]}, and {f[confirmed]:.1%} by epoch {ep[confirmed]}",
                 fitted, 1.0)


