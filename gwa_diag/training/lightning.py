"""PyTorch Lightning callback: record alignment from a ``Trainer.fit`` run.

    from gwa_diag.training.lightning import GWACallback
    trainer = Trainer(callbacks=[GWACallback("runs/mine")])

The batch must carry stable sample ids. By default a batch is ``(x, y, ids)`` or a mapping
with ``"label"`` and ``"sample_id"`` keys; pass ``ids_targets=fn(batch) -> (ids, targets)``
for anything else. Works with gradient accumulation and DDP (each rank writes its part), and
``trainer.fit(..., ckpt_path=...)`` continues the run in ``run_dir`` from an end-of-epoch
checkpoint (a mid-epoch checkpoint would re-record only the rest of that epoch), through
:func:`gwa_diag.training.resume.continue_run` as the engine does. Imports Lightning, the
recording core and :mod:`gwa_diag.training.resume`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("gwa_diag.training.lightning needs PyTorch Lightning: pip install lightning") from exc

from gwa_diag.recorder import AlignmentRecorder
from gwa_diag.training.resume import continue_run

__all__ = ["GWACallback"]


def _default_ids_targets(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, dict):
        if "sample_id" not in batch or "label" not in batch:
            raise KeyError(
                "the batch mapping needs 'sample_id' and 'label' keys, or pass "
                "GWACallback(..., ids_targets=lambda batch: (ids, targets))"
            )
        return batch["sample_id"], batch["label"]
    if isinstance(batch, (tuple, list)) and len(batch) >= 3:
        return batch[2], batch[1]
    raise TypeError(
        "cannot find sample ids in the batch: yield (x, y, ids) from the dataset, or pass "
        "GWACallback(..., ids_targets=lambda batch: (ids, targets))"
    )


class GWACallback(Callback):
    """Attaches an :class:`AlignmentRecorder` to the LightningModule's linear head.

    Alignment is recorded for every training batch (lower = more suspicious) and one
    Parquet part plus the GWA row is written per epoch into ``run_dir``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        head_name: str | None = None,
        ids_targets: Callable[[Any], tuple[Any, Any]] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.head_name = head_name
        self.ids_targets = ids_targets or _default_ids_targets
        self.meta = meta
        self.recorder: AlignmentRecorder | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # Here, not in on_fit_start: a checkpoint given to fit(ckpt_path=...) is restored by
        # now, so current_epoch says where training resumes.
        head = pl_module.get_submodule(self.head_name) if self.head_name else None
        meta = {"config": {"epochs": trainer.max_epochs}, **(self.meta or {})}
        resume = getattr(trainer, "ckpt_path", None) is not None and (Path(self.run_dir) / "run.json").exists()
        self.recorder = AlignmentRecorder(pl_module, self.run_dir, head=head, meta=meta, resume=resume)
        if resume:
            # Epochs after the checkpoint are trained (and recorded) again: none is doubled,
            # and steps go on from the last kept epoch.
            continue_run(self.recorder, trainer.current_epoch)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.recorder is None:
            return
        ids, targets = self.ids_targets(batch)
        self.recorder.update(ids, targets)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is None:
            return
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        self.recorder.end_epoch(trainer.current_epoch, **({"lr": float(lrs[0])} if lrs else {}))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        # Finished epochs stay on disk; the hook must not outlive the fit.
        if self.recorder is not None:
            self.recorder.detach()
            self.recorder.flush()
