"""Which epochs each score reads: the training phase, the averaging window, the GWA
early-stopping epoch, the EL2N epoch and the epochs ``disagreement`` counts.

The training phase comes first. A model that memorises its labels (a constant rate, no
augmentation, long training) fits the wrong labels too, and then every training-dynamics
score stops telling them apart: its early epochs rank the wrong labels far better than the
second half (``bench/regimes.py``). :func:`training_phase` reads
from the recording whether and from which epoch the model memorised
(:func:`gwa_diag.phase_rule.read_phase`), and the default window, ``phase``, averages
the epochs before that (the second half when it never did).

One typed object, :class:`EpochChoices`, is made here (:func:`choose_epochs`) from
``run.json``, ``epochs.parquet`` and the epochs that have sample rows, and travels from
here to the summaries, the pipeline, the report and the app; nobody rebuilds it.

Reads ``epochs.parquet``, and the sample parts only for runs recorded before the recorder
wrote the per-epoch ``contradicted`` share; no torch (the rules live in
:mod:`gwa_diag.phase_rule` and :mod:`gwa_diag.early_stopping`, which are torch-free).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from gwa_diag.checks import DEFAULT_WINDOW, Mode, Window
from gwa_diag.early_stopping import EarlyStopResult, select_epoch
from gwa_diag.phase_rule import MEMORISED_AT, MEMORISING_FROM, Phase, fit_at_share, read_phase
from gwa_diag.analysis.contradiction import share_sql
from gwa_diag.analysis.parts import read_parquet_sql, vanished_parts_as_file_not_found
from gwa_diag.store import Run, atomic_write_bytes, open_run, read_listed_parts


__all__ = [
    "MEMORISED_AT",
    "MEMORISING_FROM",
    "WINDOWS",
    "EpochChoices",
    "EpochSelection",
    "TrainingPhase",
    "choose_epochs",
    "disagreement_epochs",
    "el2n_epoch",
    "fit_at_share",
    "phase_of_curves",
    "selected_epoch",
    "number_or_none",
    "training_phase",
    "window_epochs",
]

#: Averaging windows for the mean-over-epochs scorers (in the reference measurements on
#: CIFAR-10-N, the second half of training beat "all epochs after warm-up" for every signal).
#: The valid names are :data:`gwa_diag.checks.Window`; this dict describes each one.
WINDOWS: dict[str, str] = {
    "phase": (
        "the epochs the training phase says carry the signal (default): epochs 1 to the one before the model "
        "started memorising its labels, or the second half when it never did"
    ),
    "second_half": "the last ceil(n/2) of the n complete epochs",
    "after_warmup": "all complete epochs except the first 10% (warm-up), at least one kept",
    "all": "every complete epoch",
}

WARMUP_FRACTION = 0.1

#: Where the per-epoch contradicted share of a run recorded without it is kept, once computed.
SHARE_CACHE = ".cache/contradicted.json"


@dataclass(frozen=True)
class EpochSelection:
    """The GWA early-stopping choice (no validation set) and the epoch the flags use."""

    #: The GWA-selected epoch; None when the rule selects none (yet).
    epoch: int | None
    #: The epoch ``alignment_selected``, ``align_selected`` and the ``negative`` rule read:
    #: the selected epoch, else the last complete epoch.
    used_epoch: int
    #: True when GWA selected no epoch with data and ``used_epoch`` is the last epoch.
    fallback: bool
    #: Why GWA selected this epoch, or none.
    reason: str
    #: The stopping rule: ``scratch`` or ``finetune``.
    mode: str
    #: One sentence for people, e.g. "GWA-selected epoch 7: ...".
    note: str

    def as_dict(self) -> dict[str, Any]:
        """report.json's ``early_stopping`` object (schema version 1)."""
        return {
            "gwa_epoch": self.epoch, "mode": self.mode, "reason": self.reason, "fallback": self.fallback,
            "note": self.note, "used_epoch": self.used_epoch,
        }


@dataclass(frozen=True, eq=False)  # eq=False: the curve is a frame
class TrainingPhase:
    """Whether, and from which epoch, the model memorised its given labels: the rule's answer
    with the curve it was read from. The answer's facts are attributes of their own
    (``plateau``, ``onset``, ``weight``, ...), as :class:`gwa_diag.phase_rule.Phase` defines
    them, so callers never reach through ``phase``.

    Attributes:
        phase: the rule's answer (:class:`gwa_diag.phase_rule.Phase`), for what takes one
            whole (:func:`gwa_diag.early_stopping.assess_choice`, report.json).
        curve: per complete epoch, what it was read from: ``epoch``, ``fit`` (share of the
            training rows predicted as labelled: ``epochs.parquet``'s ``train_acc``),
            ``contradicted`` (share confidently contradicted), and, once a plateau was found,
            the fit thresholds ``1 - noise`` (``onset_fit``) and the fits at
            ``MEMORISING_FROM`` and ``MEMORISED_AT`` of the estimated wrong labels
            (``memorising_fit``, ``memorised_fit``).
    """

    phase: Phase
    curve: pd.DataFrame

    @property
    def memorised(self) -> bool:
        """The model memorised its labels (the weight is 1)."""
        return self.phase.memorised

    @property
    def memorising(self) -> bool:
        """The model began memorising (the weight is above 0)."""
        return self.phase.memorising

    @property
    def onset(self) -> int | None:
        """The first memorising epoch, when the model began memorising; else None."""
        return self.phase.onset

    @property
    def plateau(self) -> int | None:
        """The epoch where learning what the labels agree on levelled off; None when not read."""
        return self.phase.plateau

    @property
    def noise(self) -> float | None:
        """The estimated share of wrong labels (the contradicted share at the plateau)."""
        return self.phase.noise

    @property
    def crossing(self) -> int | None:
        """The first epoch after the plateau whose fit passed ``1 - noise``."""
        return self.phase.crossing

    @property
    def confirmed(self) -> int | None:
        """The first epoch after the plateau at which the weight reached 1."""
        return self.phase.confirmed

    @property
    def fitted_wrong(self) -> float | None:
        """The largest share of the estimated wrong labels fitted after the plateau."""
        return self.phase.fitted_wrong

    @property
    def weight(self) -> float:
        """How far the window, the count and the kept record follow memorisation, 0 to 1."""
        return self.phase.weight

    @property
    def reason(self) -> str:
        """One sentence for people."""
        return self.phase.reason

    def signal_epochs(self, epochs: list[int]) -> list[int] | None:
        """The epochs before memorisation that carry the signal: from the second epoch (the
        first is the random initialisation) to the one before the onset; None when the model
        never began memorising."""
        if not self.memorising or self.onset is None:
            return None
        before = [e for e in sorted(epochs) if e < self.onset]
        return before[1:] if len(before) > 1 else before or None

    def window(self, epochs: list[int]) -> list[int]:
        """The ``phase`` window over the complete ``epochs``: the second half of training
        moved towards the epochs before the onset by the phase's weight (both ends, by
        position, rounded), so it changes a step at a time as the fit nears and passes the
        memorisation threshold: the second half at weight 0, the epochs before the onset at 1.

        Why not a switch between the two: a run just short of the threshold then reads the
        second half, where a memorising run ranks its wrong labels far worse, and one just
        past it the early epochs."""
        ordered = sorted(epochs)
        late = (len(ordered) // 2, len(ordered) - 1)
        before = self.signal_epochs(ordered)
        if not before:
            return ordered[late[0]:]
        early = (ordered.index(before[0]), ordered.index(before[-1]))
        t = self.weight
        lo, hi = (round((1.0 - t) * l + t * e) for l, e in zip(late, early))
        return ordered[lo:hi + 1]

    def as_dict(self) -> dict[str, Any]:
        """report.json's ``training_phase`` object."""
        return {**self.phase.as_dict(), "curve": self.curve.to_dict(orient="list")}


def training_phase(run: Run | str | os.PathLike) -> TrainingPhase:
    """The training phase of a recorded run (:func:`gwa_diag.phase_rule.read_phase` on the
    per-epoch ``train_acc``, ``contradicted`` and ``lr`` of ``epochs.parquet``; for runs recorded
    before that column existed, the share is computed from the sample parts)."""
    run = open_run(run)
    epochs = run.epochs()
    ep = [int(e) for e in epochs["epoch"]] if len(epochs) else []
    fit = [number_or_none(v) for v in epochs["train_acc"]] if "train_acc" in epochs else [None] * len(ep)
    if "contradicted" in epochs and epochs["contradicted"].notna().all():
        contradicted = [number_or_none(v) for v in epochs["contradicted"]]
    else:
        contradicted = _contradicted_from_parts(run, ep)
    # The engine records each epoch's learning rate; a custom loop's recording may lack it.
    lr = [number_or_none(v) for v in epochs["lr"]] if "lr" in epochs else None
    return phase_of_curves(ep, fit, contradicted, lr)


def phase_of_curves(epochs: list[int], fit: list[float | None], contradicted: list[float | None],
                    lr: list[float | None] | None) -> TrainingPhase:
    """The training phase read from per-epoch curves (those of ``epochs.parquet``: ``fit`` is
    its ``train_acc``; or any prefix of them: a run stopped earlier), with the curve it was
    read from."""
    phase = read_phase(epochs, fit, contradicted, lr)
    curve = pd.DataFrame({"epoch": epochs, "fit": [math.nan if v is None else v for v in fit],
                          "contradicted": [math.nan if v is None else v for v in contradicted]})
    if phase.noise is not None:
        curve["onset_fit"] = 1.0 - phase.noise
        curve["memorising_fit"] = fit_at_share(phase.noise, MEMORISING_FROM)
        curve["memorised_fit"] = fit_at_share(phase.noise, MEMORISED_AT)
    return TrainingPhase(phase, curve)


def _contradicted_from_parts(run: Run, epochs: list[int]) -> list[float | None]:
    """Per epoch: the share of rows whose label the model confidently contradicted, as the
    recorder records it (:func:`gwa_diag.analysis.contradiction.share_sql`), for runs recorded
    before it did.

    Why a cache: the share needs every row of every epoch, twice (the thresholds, then the
    count), which costs more than the rest of the analysis. It is computed once per epoch and
    kept in ``RUN/.cache/contradicted.json``, keyed by the name, size and modification time
    of the epoch's parts (a resume that records an epoch again changes them). A run directory
    that cannot be written is read again each time."""
    cache_path = run.path / SHARE_CACHE

    def read() -> dict[int, float]:
        parts: dict[int, list[Path]] = {}
        for f in run.sample_files(epochs):
            parts.setdefault(int(f.parent.name.split("=", 1)[1]), []).append(f)
        keys = {e: [[f.name, st.st_size, st.st_mtime_ns] for f in fs for st in [f.stat()]] for e, fs in parts.items()}
        cached = _read_share_cache(cache_path)
        found = {e: cached[e]["share"] for e in keys if e in cached and cached[e].get("parts") == keys[e]}
        missing = [e for e in keys if e not in found]
        if not missing:
            return found
        files = [str(f) for e in missing for f in parts[e]]
        con = duckdb.connect(":memory:")
        try:
            with vanished_parts_as_file_not_found(files):
                out = con.sql(share_sql(read_parquet_sql(files))).fetchnumpy()
        finally:
            con.close()
        fresh = {int(e): float(v) for e, v in zip(out["epoch"], out["contradicted"])}
        found.update(fresh)
        entries = {**{e: v for e, v in cached.items() if e in keys and e not in fresh},
                   **{e: {"share": v, "parts": keys[e]} for e, v in fresh.items()}}
        try:
            atomic_write_bytes(cache_path, json.dumps(
                {"what": "per-epoch confidently contradicted share, computed from the sample parts",
                 "epochs": {str(e): entries[e] for e in sorted(entries)}}, indent=1).encode())
        except OSError:
            pass  # a read-only run directory: computed again next time
        return found

    found = read_listed_parts(read)
    return [found.get(e) for e in epochs]


def _read_share_cache(path: Path) -> dict[int, dict[str, Any]]:
    """The cached shares by epoch; {} when there is no cache or it cannot be read."""
    try:
        raw = json.loads(path.read_text())
        return {int(e): v for e, v in raw["epochs"].items()
                if isinstance(v, dict) and isinstance(v.get("share"), (int, float))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def number_or_none(value: Any) -> float | None:
    """``value`` as a finite float, else None (NaN, inf, None, text)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class EpochChoices:
    """Every epoch choice of one analysis (complete epochs with sample rows only).

    Attributes:
        epochs: the complete epochs with data, ascending.
        window_name: the averaging window's name (:data:`WINDOWS`).
        window: the epochs the mean-over-epochs scorers average, ascending.
        selection: the GWA choice and the epoch the flags use.
        el2n_epoch: the early epoch EL2N reads.
        disagreement_epochs: the three epochs ``disagreement`` and ``unfitted`` count: the
            last three of the ``phase`` window, else around ``selection.used_epoch``.
        phase: the training phase the ``phase`` window follows.
    """

    epochs: tuple[int, ...]
    window_name: str
    window: tuple[int, ...]
    selection: EpochSelection
    el2n_epoch: int
    disagreement_epochs: tuple[int, ...]
    phase: TrainingPhase

    @property
    def note(self) -> str:
        """Which epochs the scores read and why, for people: e.g. "the model memorised its
        labels from epoch 7: scores are read from epochs 1-6"."""
        span = f"epochs {self.window[0]}-{self.window[-1]}" if len(self.window) > 1 else f"epoch {self.window[0]}"
        if self.window_name == "phase":
            if self.phase.memorised:
                return f"the model memorised its labels from epoch {self.phase.onset}: scores are read from {span}"
            if self.phase.memorising:
                phase = self.phase
                return (f"the model began memorising its labels at epoch {phase.onset} ({phase.fitted_wrong:.0%} of "
                        f"the estimated wrong labels fitted): scores are read from {span}, the second half moved "
                        f"{phase.weight:.0%} of the way towards the epochs before epoch {phase.onset}")
            if self.phase.reason.startswith("the model never memorised"):
                return f"the model never memorised its labels: scores are read from the second half, {span}"
            return f"the training phase could not be read ({self.phase.reason}): scores are read from " \
                   f"the second half, {span}"
        return f"scores are read from {span} (window {self.window_name}); {self.phase.reason}"

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1]

    def __deepcopy__(self, memo: dict[int, Any]) -> "EpochChoices":
        # pandas deep-copies a frame's attrs on every operation, and this object rides in
        # the summary's attrs; it is never changed after choose_epochs, so one copy is shared.
        return self

    def point_epochs(self) -> list[int]:
        """The single epochs read in full: the selected, the last and EL2N's."""
        return sorted({self.selection.used_epoch, self.last_epoch, self.el2n_epoch})


def _config(run: Run) -> dict[str, Any]:
    config = run.meta.get("config")
    return config if isinstance(config, dict) else {}


def planned_epochs(run: Run) -> int | None:
    """The number of epochs the run was started for (run.json), when recorded."""
    value = _config(run).get("epochs", run.meta.get("epochs"))
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _run_mode(run: Run) -> str:
    mode = _config(run).get("mode", run.meta.get("mode")) or "scratch"
    return str(mode)


def selected_epoch(run_or_path: Run | str | os.PathLike, *, mode: str | None = None) -> EarlyStopResult:
    """The GWA early-stopping epoch of a run (:func:`gwa_diag.early_stopping.select_epoch` on
    epochs.parquet). ``mode`` defaults to run.json's ``config.mode`` (else ``scratch``);
    the warm-up is measured against the planned ``config.epochs`` when recorded.
    ``epoch`` is None when no defined GWA qualifies (then the reason says why)."""
    run = open_run(run_or_path)
    epochs = run.epochs()
    use_mode = mode if mode is not None else _run_mode(run)
    ep = [int(e) for e in epochs["epoch"].tolist()]
    raw = epochs["gwa"].tolist() if "gwa" in epochs else [None] * len(ep)
    gwa = [None if g is None or (isinstance(g, float) and math.isnan(g)) else float(g) for g in raw]
    planned = planned_epochs(run)
    total = max(planned, max(ep) + 1) if planned is not None and ep else planned
    return select_epoch(ep, gwa, mode=use_mode, total_epochs=total)  # type: ignore[arg-type]


def window_epochs(epochs: list[int], window: Window | str, *, phase: TrainingPhase | None = None) -> list[int]:
    """The complete epochs averaged by the mean-over-epochs scorers (see :data:`WINDOWS`;
    the name is checked where the user gave it: ``AnalysisOptions`` or ``summarize``).
    ``phase`` is the run's training phase, which the ``phase`` window follows (without it,
    or when the model never memorised, ``phase`` is the second half)."""
    n = len(epochs)
    if n == 0:
        return []
    if window == "phase":
        return phase.window(epochs) if phase is not None else window_epochs(epochs, "second_half")
    if window == "all":
        start = 0
    elif window == "second_half":
        start = n // 2
    elif window == "after_warmup":
        # Skip the first 10% of the epochs trained so far, but always keep the last one.
        start = min(math.ceil(WARMUP_FRACTION * n), n - 1)
    else:
        raise AssertionError(f"unchecked window {window!r}")
    return sorted(epochs)[start:]


def el2n_epoch(epochs: list[int], *, planned: int | None = None) -> int | None:
    """The early epoch EL2N is read at: the complete epoch at 10% of the (planned) training,
    but never the first epoch when a later one exists (Paul et al. score after a few epochs,
    not at initialisation)."""
    if not epochs:
        return None
    ordered = sorted(epochs)
    total = planned if planned else len(ordered)
    index = min(len(ordered) - 1, max(1, round(WARMUP_FRACTION * total)))
    return ordered[index]


def disagreement_epochs(epochs: list[int], used: int) -> list[int]:
    """The epochs ``disagreement`` reads: three consecutive epochs with data around the epoch
    the flags use (GWA-selected, else the last): its neighbour on each side, or the two
    before (after) it when it is the last (first); fewer only when fewer exist.

    Why around the GWA-selected epoch: GWA peaks when the model has learned the correctly
    labelled samples but not yet memorised the others, so its disagreement with the labels
    says most there. A window late in a memorising run sees the wrong labels already fitted
    (``python bench/why_defaults.py --part window`` measures both)."""
    ordered = sorted(epochs)
    i = ordered.index(used)
    lo = max(0, min(i - 1, len(ordered) - 3))
    return ordered[lo : lo + 3]


def choose_epochs(
    run: Run,
    epochs: list[int],
    *,
    window: Window | str = DEFAULT_WINDOW,
    mode: Mode | str | None = None,
    el2n_at: int | None = None,
) -> EpochChoices:
    """Every epoch choice for the complete ``epochs`` that have sample rows (not empty).

    ``mode`` defaults to run.json's (else ``scratch``); ``el2n_at`` defaults to
    :func:`el2n_epoch` and must be one of ``epochs``. When GWA selects no epoch with data,
    the flags use the last epoch (``selection.fallback``). ``window`` and ``mode`` are
    checked where the user gave them (``AnalysisOptions`` or ``summarize``)."""
    ordered = sorted(int(e) for e in epochs)
    choice = selected_epoch(run, mode=mode)
    sel = choice.epoch if choice.epoch is not None and choice.epoch in ordered else None
    used = sel if sel is not None else ordered[-1]
    note = (
        f"GWA selected no epoch ({choice.reason}); using the last epoch {used} instead"
        if sel is None
        else f"GWA-selected epoch {sel}: {choice.reason}"
    )
    early = int(el2n_at) if el2n_at is not None else el2n_epoch(ordered, planned=planned_epochs(run))
    phase = training_phase(run)
    averaged = window_epochs(ordered, str(window), phase=phase)
    # The model's disagreement with the labels says most at the end of the phase window: the
    # last epochs before memorisation (a memorised epoch has the wrong labels fitted and
    # contradicts none), or the end of a run that never memorised.
    before = str(window) == "phase"
    return EpochChoices(
        epochs=tuple(ordered),
        window_name=str(window),
        window=tuple(averaged),
        selection=EpochSelection(
            epoch=choice.epoch, used_epoch=used, fallback=sel is None, reason=choice.reason, mode=choice.mode,
            note=note,
        ),
        el2n_epoch=int(early),  # type: ignore[arg-type]
        disagreement_epochs=tuple(averaged[-3:] if before else disagreement_epochs(ordered, used)),
        phase=phase,
    )
