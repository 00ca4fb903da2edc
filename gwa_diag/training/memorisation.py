"""Keeping the model from before memorisation: while training, the engine reads the training
phase after every epoch (:func:`gwa_diag.phase_rule.read_phase`, the rule the analysis
uses offline, on the same per-epoch ``train_acc`` and ``contradicted``) and, once the model
began memorising its labels (the phase's weight is above 0, :attr:`Phase.memorising`), keeps the weights of the **plateau** epoch, where it had learned what
most labels agree on and before it started fitting the others, as
``checkpoints/before_memorisation.pt``. A user who trained too long still has that model.

Why as soon as it began, not once memorisation is confirmed: a run that stops just short of
the confirmation would otherwise lose the model from before memorisation, and one just past
it keep it; the window and the count move with the weight, and the file is there for both.

Why the plateau and not the epoch just before the onset: the onset (fit above the estimated
clean share) comes after the model has already fitted some wrong labels; the plateau's
weights scored higher on clean test images on the memorising benchmark runs
(``python bench/regimes.py``, the ``kept`` column: docs/benchmarks/regimes.md). They are the
model from before memorisation, usually not the more accurate one: test accuracy often keeps
rising while the wrong labels are fitted, so without held-out data to compare them on the
analysis advises ``last.pt`` (:class:`gwa_diag.analysis.stopping.Stopping`).

The rule is causal, but the plateau is known only later: a dip in the fitting rate is
seen two epochs after it (its smoothing needs the next epochs), and it counts as the
plateau only once the rate has risen after it (up to ``PLATEAU_HORIZON`` epochs later). So
the weights of the last three epochs, and of every dip still waiting for its rise, wait on
disk as ``checkpoints/recent-E.pt``; once the plateau is known only its weights wait, and they are
kept once memorisation begins (removed at the end of a run that never began). Every file operation runs on the
recorder's writer thread, in order with ``last.pt``: a resumed run finds exactly the files
an uninterrupted one had at its checkpoint, and reads the same phase from the same rows.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

from gwa_diag.phase_rule import Phase, pending_plateaus, read_phase

__all__ = ["KEPT_NAME", "MemorisationKeeper"]

KEPT_NAME = "before_memorisation.pt"
# The plateau is known two epochs after it (see the module docstring).
_RECENT = 3


class MemorisationKeeper:
    """Decides, after each epoch, which weights wait and which are kept (see the module doc).

    ``save(obj, path)`` writes a checkpoint atomically; ``submit(fn, *args)`` runs ``fn`` on
    the run's writer thread (the recorder's ``queue``), after what was submitted before."""

    def __init__(self, checkpoints: Path, save: Callable[[Any, Path], None],
                 submit: Callable[..., Any]) -> None:
        self.dir = checkpoints
        self._save = save
        self._submit = submit

    def after_epoch(self, history: list[dict[str, Any]], epoch: int, weights: Any) -> Phase:
        """Read the phase from every epoch so far and queue the file work for ``epoch``
        (``weights``: a snapshot of the model's state dict). Returns the phase."""
        fit = [r.get("train_acc") for r in history]
        lr = [r.get("lr") for r in history]
        phase = read_phase([r["epoch"] for r in history], fit, [r.get("contradicted") for r in history], lr)
        if phase.plateau is None:
            # This epoch, a recent one or a dip waiting for its rise may still turn out to be
            # the plateau: keep their weights waiting.
            self._submit(self._save, {"model": weights, "epoch": epoch}, self.dir / f"recent-{epoch}.pt")
            waiting = {int(history[i]["epoch"]) for i in pending_plateaus(fit, lr)}
            self._submit(functools.partial(self._prune, keep=set(range(epoch - _RECENT + 1, epoch + 1)) | waiting))
        elif phase.memorising:
            self._submit(self._keep, phase.plateau)
        else:
            # The plateau is known, memorisation is not (yet): only its weights wait.
            self._submit(functools.partial(self._prune, keep={phase.plateau}))
        return phase

    def finish(self, phase: Phase | None) -> None:
        """At the end of training: a run that never began memorising keeps no weights waiting."""
        if phase is None or not phase.memorising:
            self._submit(functools.partial(self._prune, keep=set()))

    def record(self, phase: Phase) -> dict[str, Any]:
        """run.json's ``memorisation`` object."""
        kept = phase.plateau if phase.memorising else None
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
