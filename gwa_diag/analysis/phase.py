"""Which epochs each score reads: the GWA early-stopping epoch, the averaging window, the
EL2N epoch and the epochs around the selection that ``disagreement`` counts.

One typed object, :class:`EpochChoices`, is made here (:func:`choose_epochs`) from
``run.json`` and ``epochs.parquet`` and the epochs that have sample rows, and travels from
here to the summaries, the pipeline, the report and the app; nobody rebuilds it.

Reads ``epochs.parquet`` only; no torch (the rules themselves live in
:mod:`gwa_diag.early_stopping`, imported lazily because :mod:`gwa_diag.alignment` imports
torch).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gwa_diag.checks import Mode, Window
from gwa_diag.store import Run, open_run

if TYPE_CHECKING:
    from gwa_diag.early_stopping import EarlyStopResult

__all__ = [
    "WINDOWS",
    "EpochChoices",
    "EpochSelection",
    "choose_epochs",
    "disagreement_epochs",
    "el2n_epoch",
    "selected_epoch",
    "window_epochs",
]

#: Averaging windows for the mean-over-epochs scorers (in the reference measurements on
#: CIFAR-10-N, the second half of training beat "all epochs after warm-up" for every signal).
#: The valid names are :data:`gwa_diag.checks.Window`; this dict describes each one.
WINDOWS: dict[str, str] = {
    "second_half": "the last ceil(n/2) of the n complete epochs (default)",
    "after_warmup": "all complete epochs except the first 10% (warm-up), at least one kept",
    "all": "every complete epoch",
}

WARMUP_FRACTION = 0.1


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


@dataclass(frozen=True)
class EpochChoices:
    """Every epoch choice of one analysis (complete epochs with sample rows only).

    Attributes:
        epochs: the complete epochs with data, ascending.
        window_name: the averaging window's name (:data:`WINDOWS`).
        window: the epochs the mean-over-epochs scorers average, ascending.
        selection: the GWA choice and the epoch the flags use.
        el2n_epoch: the early epoch EL2N reads.
        disagreement_epochs: the three epochs around ``selection.used_epoch`` that
            ``disagreement`` counts.
    """

    epochs: tuple[int, ...]
    window_name: str
    window: tuple[int, ...]
    selection: EpochSelection
    el2n_epoch: int
    disagreement_epochs: tuple[int, ...]

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1]

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


def selected_epoch(run_or_path: Run | str | os.PathLike, *, mode: str | None = None) -> "EarlyStopResult":
    """The GWA early-stopping epoch of a run (:func:`gwa_diag.early_stopping.select_epoch` on
    epochs.parquet). ``mode`` defaults to run.json's ``config.mode`` (else ``scratch``);
    the warm-up is measured against the planned ``config.epochs`` when recorded.
    ``epoch`` is None when no defined GWA qualifies (then the reason says why)."""
    from gwa_diag.early_stopping import select_epoch

    run = open_run(run_or_path)
    epochs = run.epochs()
    use_mode = mode if mode is not None else _run_mode(run)
    ep = [int(e) for e in epochs["epoch"].tolist()]
    raw = epochs["gwa"].tolist() if "gwa" in epochs else [None] * len(ep)
    gwa = [None if g is None or (isinstance(g, float) and math.isnan(g)) else float(g) for g in raw]
    planned = planned_epochs(run)
    total = max(planned, max(ep) + 1) if planned is not None and ep else planned
    return select_epoch(ep, gwa, mode=use_mode, total_epochs=total)  # type: ignore[arg-type]


def window_epochs(epochs: list[int], window: Window | str) -> list[int]:
    """The complete epochs averaged by the mean-over-epochs scorers (see :data:`WINDOWS`;
    the name is checked where the user gave it: ``check_options`` or ``summarize``)."""
    n = len(epochs)
    if n == 0:
        return []
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
    window: Window | str = "second_half",
    mode: Mode | str | None = None,
    el2n_at: int | None = None,
) -> EpochChoices:
    """Every epoch choice for the complete ``epochs`` that have sample rows (not empty).

    ``mode`` defaults to run.json's (else ``scratch``); ``el2n_at`` defaults to
    :func:`el2n_epoch` and must be one of ``epochs``. When GWA selects no epoch with data,
    the flags use the last epoch (``selection.fallback``). ``window`` and ``mode`` are
    checked where the user gave them (``check_options`` or ``summarize``)."""
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
    return EpochChoices(
        epochs=tuple(ordered),
        window_name=str(window),
        window=tuple(window_epochs(ordered, str(window))),
        selection=EpochSelection(
            epoch=choice.epoch, used_epoch=used, fallback=sel is None, reason=choice.reason, mode=choice.mode,
            note=note,
        ),
        el2n_epoch=int(early),  # type: ignore[arg-type]
        disagreement_epochs=tuple(disagreement_epochs(ordered, used)),
    )
