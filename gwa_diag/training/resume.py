"""Continuing a stopped run: what may be resumed, and how a recorder picks up where it was.

Owns the refusals that keep a resumed run one run (another loop's recording, a removed
checkpoint, other settings, another model, other images, other ids or labels: each would
record the remaining epochs against a different problem than the epochs before), the lock
that refuses a second training process on the same run directory, and :func:`continue_run`,
which forgets the epochs trained again and sets the step counter. The engine and the
Lightning callback both resume through it. The data fingerprint those checks compare lives
with the dataset specs (:func:`gwa_diag.training.data.data_fingerprint`, re-exported here:
the app needs it without the training loop). Imports numpy, torch,
:mod:`gwa_diag.training.data` and the recording core (``recorder``, ``store``, ``checks``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from gwa_diag.checks import InputError
from gwa_diag.recorder import AlignmentRecorder
from gwa_diag.store import exclusive_lock, open_run
from gwa_diag.training.data import data_fingerprint

__all__ = ["RESUME_FREE", "check_resume", "continue_run", "data_fingerprint", "lock_run"]

#: Settings that may differ when a run is resumed: where and how fast it runs, not what.
RESUME_FREE = frozenset({"device", "num_workers", "progress"})

@contextlib.contextmanager
def lock_run(out: Path) -> Iterator[None]:
    """Hold the run directory for one training process; a second one (a ``--resume``
    started while the first still runs) is refused instead of interleaving its writes."""
    busy = (f"{out} is being written by another gwa-diag train right now: wait for it to finish, "
            "or stop it before resuming (its recorded epochs are kept)")
    with exclusive_lock(out, busy):
        yield


def check_resume(
    out: Path,
    *,
    config: Mapping[str, Any],
    train_set: Any,
    model: nn.Module,
    meta: Mapping[str, Any],
    fingerprint: str,
) -> dict[str, Any] | None:
    """Refuse to resume the run in ``out`` with another model, other data, labels or
    settings (``config``: the engine's config as a dict), and refuse what a resume would
    wipe: a run recorded by another loop, or one whose checkpoint is gone. Runs before
    anything in the run directory is touched.

    Returns:
        the checkpoint ``checkpoints/last.pt`` (on the CPU), or None when the run has none yet.
    """
    run = open_run(out)
    if "config" not in run.meta:
        raise InputError(
            f"cannot resume {out}: it was recorded by an AlignmentRecorder in another training loop, "
            "not by gwa-diag train, so there is nothing to continue (resuming would replace its "
            "epochs). Start a new run in a new directory"
        )
    stored = run.meta.get("config") or {}
    changed = sorted(k for k, v in config.items() if k not in RESUME_FREE and k in stored and stored[k] != v)
    if changed:
        diffs = ", ".join(f"{k}: {stored[k]!r} -> {config[k]!r}" for k in changed)
        raise InputError(
            f"cannot resume {out} with other settings ({diffs}): resume with the run's own "
            "settings, or start a new run in a new directory"
        )
    stored_name, name = run.meta.get("model_name"), meta.get("model_name")
    if run.meta.get("model") not in (None, type(model).__name__) or (None not in (stored_name, name) and stored_name != name):
        raise InputError(
            f"cannot resume {out}: it trained {stored_name or run.meta['model']}, not {name or type(model).__name__}; "
            "resume with the same --model"
        )
    stored_fp = run.meta.get("data_fingerprint")
    if stored_fp is not None and stored_fp != fingerprint:
        raise InputError(
            f"cannot resume {out}: the training images differ from the ones it was recorded on "
            "(another file, another image folder content or order). Resume with the same data, "
            "or start a new run in a new directory"
        )
    ckpt_path = out / "checkpoints" / "last.pt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False) if ckpt_path.exists() else None  # our own file
    done = run.completed_epochs()
    if ckpt is None and any(e > 0 for e in done):
        # A checkpoint is saved after every epoch, so one missing after epoch 1 was removed:
        # starting over would replace the recorded epochs.
        raise InputError(
            f"cannot resume {out}: it has {len(done)} recorded epochs but no checkpoints/last.pt "
            "(removed?), so training cannot continue where it stopped. Restore the checkpoint, or "
            "start a new run in a new directory; the recorded epochs are left as they are"
        )
    if ckpt is not None:
        # Same class name is not the same network (resnet18 vs resnet34): compare shapes.
        own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if {k: tuple(v.shape) for k, v in ckpt["model"].items()} != own:
            raise InputError(
                f"cannot resume {out}: its checkpoint holds a different network than the model given "
                "(parameter names or shapes differ); resume with the same --model"
            )
    labels = run.labels()
    if labels is not None:
        ids = np.asarray(train_set.sample_ids, dtype=np.int64)
        same = len(labels) == len(ids) and np.array_equal(labels["sample_id"].to_numpy(), ids) and np.array_equal(
            labels["label"].to_numpy(), np.asarray(train_set.labels)
        )
        if not same:
            raise InputError(
                f"cannot resume {out}: the training set's sample ids or labels differ from the run's "
                "labels.parquet (another dataset, label file or noise setting?). Resume with the "
                "same data options, or start a new run in a new directory"
            )
    return ckpt


def continue_run(recorder: AlignmentRecorder, from_epoch: int, *, step: int | None = None) -> list[dict[str, Any]]:
    """Make ``recorder`` go on with epoch ``from_epoch`` of the run it writes.

    Epochs ``from_epoch`` and later are forgotten (rows and parts): they are trained and
    recorded again, and none may be doubled. The recorder's step counter goes on from
    ``step`` when the loop knows it, else from the ``end_step`` of the last kept epoch
    (0 when none is kept).

    Returns:
        the kept epochs' rows, oldest first (the history the early-stopping rule reads).
    """
    recorder.writer.drop_epochs_from(from_epoch)
    kept = open_run(recorder.writer.path).epochs()
    if step is None:
        step = int(kept["end_step"].iloc[-1]) if len(kept) and "end_step" in kept else 0
    recorder.step = int(step)
    return kept.to_dict("records")
