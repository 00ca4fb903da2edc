"""Keeping the model from before memorisation: while training, the engine reads the training
phase after every epoch (:func:`gwa_diag.early_stopping.read_phase`, the rule the analysis
uses offline, on the same per-epoch ``train_acc`` and ``contradicted``) and keeps the
weights of the last epoch before the model started memorising its labels as
``checkpoints/before_memorisation.pt``. A user who trained too long still has the model
from before it fitted the wrong labels.

The rule is causal, but the onset is known one or two epochs after it happens (the plateau
before it needs two later epochs), so the weights of the last three epochs wait on disk as
``checkpoints/recent-E.pt`` until the onset is known; the one before the onset is kept when
memorisation is confirmed, the others are removed. Every file operation runs on the
recorder's writer thread, in order with ``last.pt``: a resumed run finds exactly the files
an uninterrupted one had at its checkpoint, and reads the same phase from the same rows.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

from gwa_diag.early_stopping import Phase, read_phase

__all__ = ["KEPT_NAME", "MemorisationKeeper"]

KEPT_NAME = "before_memorisation.pt"
# The onset is known at most two epochs after the epoch before it (see the module docstring).
_RECENT = 3


class MemorisationKeeper:
    """Decides, after each epoch, which weights wait and which are kept (see the module doc).

    ``save(obj, path)`` writes a checkpoint atomically; ``submit(fn, *args)`` runs ``fn`` on
    the recorder's writer thread, after what was submitted before."""

    def __init__(self, checkpoints: Path, save: Callable[[Any, Path], None],
                 submit: Callable[..., Any]) -> None:
        self.dir = checkpoints
        self._save = save
        self._submit = submit

    def after_epoch(self, history: list[dict[str, Any]], epoch: int, weights: Any) -> Phase:
        """Read the phase from every epoch so far and queue the file work for ``epoch``
        (``weights``: a snapshot of the model's state dict). Returns the phase."""
        phase = read_phase([r["epoch"] for r in history], [r.get("train_acc") for r in history],
                           [r.get("contradicted") for r in history])
        if phase.crossing is None:
            # The onset may still be this epoch or the next: keep this one's weights waiting.
            self._submit(self._save, {"model": weights, "epoch": epoch}, self.dir / f"recent-{epoch}.pt")
            self._submit(functools.partial(self._prune, keep=set(range(epoch - _RECENT + 1, epoch + 1))))
        elif phase.memorised:
            self._submit(self._keep, phase.crossing - 1)
        else:
            # The fit crossed the estimated clean share but memorisation is not confirmed yet.
            self._submit(functools.partial(self._prune, keep={phase.crossing - 1}))
        return phase

    def finish(self, phase: Phase | None) -> None:
        """At the end of training: a run that never memorised keeps no weights waiting."""
        if phase is None or not phase.memorised:
            self._submit(functools.partial(self._prune, keep=set()))

    def record(self, phase: Phase) -> dict[str, Any]:
        """run.json's ``memorisation`` object."""
        kept = phase.onset - 1 if phase.memorised and phase.onset is not None else None
        return {**phase.as_dict(), "kept_epoch": kept,
                "checkpoint": f"checkpoints/{KEPT_NAME}" if kept is not None else None}

    def _keep(self, epoch: int) -> None:
        waiting = self.dir / f"recent-{epoch}.pt"
        if waiting.exists():
            os.replace(waiting, self.dir / KEPT_NAME)
        self._prune(keep=set())

    def _prune(self, *, keep: set[int]) -> None:
        for f in self.dir.glob("recent-*.pt"):
            if int(f.stem.split("-", 1)[1]) not in keep:
                f.unlink(missing_ok=True)
