"""AlignmentRecorder: drops into any PyTorch training loop.

    recorder = AlignmentRecorder(model, "runs/exp1")
    for epoch in range(epochs):
        for x, y, ids in loader:
            logits = model(x)                       # the hook captures what it needs here
            loss = F.cross_entropy(logits, y)
            loss.backward(); optimizer.step(); optimizer.zero_grad()
            recorder.update(ids, y)                 # before or after the step: same result
        recorder.end_epoch(epoch)                   # one host sync + one Parquet part per epoch

A forward hook on the linear head computes ``W z`` with the weights of that forward pass, so
where the user calls ``update`` relative to ``optimizer.step()`` does not matter. Values stay
on the model's device until ``end_epoch``: no per-step host sync, no per-sample Python loop.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import torch
import torch.nn as nn

from gwa_diag.signals import reduce_epoch, sample_signals
from gwa_diag.store import SAMPLE_SCHEMA, RunWriter, WriteQueue
from gwa_diag.checks import InputError

__all__ = ["AlignmentRecorder", "dist_info", "find_linear_head"]


def find_linear_head(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``model`` in module order (its classifier head)."""
    head = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            head = module
    if head is None:
        raise TypeError(
            f"{type(model).__name__} has no nn.Linear layer to use as the classifier head: pass "
            "head=... explicitly (the nn.Linear whose outputs are the class logits)"
        )
    return head


@dataclass
class _Forward:
    scores: torch.Tensor  # W z in float32, [B, C]
    logits: torch.Tensor  # head output as the loss saw it (maybe bf16), [B, C]
    feature_norm: torch.Tensor  # ||z_i||, [B]
    weight_norm: torch.Tensor  # ||W||_F, scalar



class AlignmentRecorder:
    """Records per-sample alignment, margin, loss, p(label) and prediction for every sample
    presentation, and one GWA summary per epoch, into a run directory.

    Direction of every recorded score: alignment, margin and p_label are *lower = more
    suspicious*; loss is *higher = more suspicious*.

    Args:
        model: the classifier; the head is ``head`` or else the last ``nn.Linear``.
        run_dir: output directory (a :class:`RunWriter` is created) or an open RunWriter.
        head: the linear head, when it is not the last ``nn.Linear`` of the model.
        meta: extra keys for run.json (config, dataset spec, class names ...).
        resume: continue the run already in ``run_dir``.
        record_eval_mode: also record forwards made with the head in eval mode (for training
            loops that keep the model in ``eval()``, e.g. fine-tuning with frozen BatchNorm).
            By default only training-mode forwards with gradients on are recorded, so an
            evaluation pass that forgot ``torch.no_grad()`` is never taken for a training batch.

    Exactly one recorded forward of the head belongs to each ``update``: call ``update`` after
    every training forward (two augmented views: two forwards, two updates). A second forward
    before ``update`` replaces the first, with a warning.

    Distributed: when ``torch.distributed`` is initialised, each rank writes its own part
    and the epoch moments are combined with one all-reduce of power sums.
    """

    def __init__(
        self,
        model: nn.Module,
        run_dir: str | os.PathLike | RunWriter,
        *,
        head: nn.Module | None = None,
        meta: dict[str, Any] | None = None,
        resume: bool = False,
        record_eval_mode: bool = False,
    ) -> None:
        if head is None:
            head = find_linear_head(model)
        elif not isinstance(head, nn.Linear):
            raise TypeError(
                f"head must be an nn.Linear (logits = W z + b), got {type(head).__name__}; "
                "pass the final linear layer of the classifier"
            )
        self.head: nn.Linear = head
        self.num_classes = int(head.out_features)
        self.rank, self.world_size = dist_info()
        if self.world_size == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Launched by torchrun, but the process group is not up yet: every process would
            # take itself for rank 0 of 1 and they would fight over the run directory.
            raise RuntimeError(_LATE_GROUP.format(made="no process group yet", now=f"WORLD_SIZE={os.environ['WORLD_SIZE']}"))
        if isinstance(run_dir, RunWriter):
            self.writer = run_dir
        else:
            meta = {"num_classes": self.num_classes, **(meta or {})}
            meta.setdefault("world_size", self.world_size)
            self.writer = RunWriter(run_dir, meta=meta, rank=self.rank, world_size=self.world_size, resume=resume)
        self.step = int(self.writer.meta.get("next_step", 0)) if resume else 0
        self._pending: _Forward | None = None
        self.record_eval_mode = bool(record_eval_mode)
        self._skipped_eval = False  # the last grad-enabled forward was in eval mode (not recorded)
        self._warned_overwrite = False
        # Per batch: ids stay where the caller keeps them (usually the CPU, so no copy per
        # step), steps are plain ints, labels/preds and the float scores stay on the device.
        self._ids: list[torch.Tensor] = []
        self._steps: list[tuple[int, int]] = []  # (step, batch size)
        self._ints: list[torch.Tensor] = []  # per batch [B, 2] int64: label, pred
        self._floats: list[torch.Tensor] = []  # per batch [B, 5] float32: alignment, margin, loss, p_label, p_pred
        self._bad_targets: torch.Tensor | None = None
        self._epoch_start = time.perf_counter()
        #: The run's writer thread (:class:`gwa_diag.store.WriteQueue`): the epochs' parts and
        #: rows, and whatever the training loop writes after them (the engine's checkpoints).
        self.queue = WriteQueue()
        self._last_epoch: int | None = None  # the last epoch this recorder closed
        self._closed = False
        # A model compiled and run before the hook existed keeps calling its compiled graph,
        # which does not call hooks added later; update() then says so.
        self._compiled = hasattr(model, "_orig_mod")
        self._handle = head.register_forward_hook(self._hook)

    # -- the hook --------------------------------------------------------------------------
    def detach(self) -> None:
        """Remove the hook from the head: forwards are no longer recorded (what is buffered
        stays). Calling it twice is harmless."""
        self._handle.remove()

    def attach(self) -> None:
        """Hook the head again after :meth:`detach` (e.g. to time a loop with and without
        recording)."""
        self._handle.remove()  # never two hooks: each forward would be captured twice
        self._handle = self.head.register_forward_hook(self._hook)

    # -- capture ---------------------------------------------------------------------------
    def _hook(self, module: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        # Only training forwards are recorded: gradients on, and the head in training mode
        # (an evaluation pass without no_grad must not pass for the training batch).
        if not torch.is_grad_enabled():
            return
        if not module.training and not self.record_eval_mode:
            self._skipped_eval = True
            return
        self._skipped_eval = False
        if self._pending is not None and not self._warned_overwrite:
            self._warned_overwrite = True
            warnings.warn(
                "two training forwards of the head without update() in between: only the last "
                "is recorded. Call recorder.update(ids, targets) after each forward (with two "
                "augmented views: after each view)",
                RuntimeWarning,
                stacklevel=2,
            )
        z = inputs[0]
        if z.ndim != 2:
            z = z.reshape(-1, z.shape[-1])
            output = output.reshape(-1, output.shape[-1])
        device_type = z.device.type
        with torch.no_grad(), torch.autocast(device_type=device_type, enabled=False):
            zf = z.detach().float()
            w = module.weight.detach().float()
            # W z from the weights of this very forward pass: immune to optimizer.step()
            # happening before update(). float32 even when the forward ran in bf16.
            self._pending = _Forward(zf @ w.T, output.detach(), zf.norm(dim=1), w.norm())

    def update(self, sample_ids: torch.Tensor, targets: torch.Tensor) -> None:
        """Record the last training forward pass of the head for these samples.

        ``sample_ids``: int [B] stable dataset ids. ``targets``: class indices [B] or soft
        targets [B, C] (the label recorded is their argmax).
        """
        fwd = self._pending
        if fwd is None:
            if self._closed:
                raise RuntimeError("update() called on a closed AlignmentRecorder; create a new one (resume=True continues the run)")
            if self._skipped_eval:
                raise RuntimeError(
                    "update() called after a forward with the head in eval mode, which is not "
                    "recorded: call model.train() before training forwards, or create the recorder "
                    "with record_eval_mode=True if you train in eval mode on purpose"
                )
            raise RuntimeError(
                "update() called before a training forward pass of the head; call it after "
                "logits = model(x) (with gradients enabled) for the same batch"
                + (
                    ". The model is compiled (torch.compile): a compiled model that already ran "
                    "does not call hooks added afterwards, so create the recorder before its "
                    "first compiled forward"
                    if self._compiled
                    else ""
                )
            )
        self._pending = None
        batch = fwd.logits.shape[0]
        ids = torch.as_tensor(sample_ids)
        if ids.ndim != 1 or ids.shape[0] != batch:
            raise InputError(
                f"sample_ids has shape {tuple(ids.shape)} but the batch has {batch} samples; "
                "pass one integer id per sample of this forward pass"
            )
        if ids.is_floating_point():
            raise TypeError("sample_ids must be integers (the dataset's stable indices)")
        targets = torch.as_tensor(targets)
        device = fwd.logits.device
        if targets.ndim == 1:
            if targets.shape[0] != batch:
                raise InputError(f"targets has {targets.shape[0]} entries but the batch has {batch}")
            if targets.is_floating_point():
                raise TypeError("class-index targets must be integers (or pass soft targets [B, C])")
            if targets.device.type == "cpu":
                # A range check on CPU costs no device sync; on an accelerator it is deferred
                # to end_epoch so that the training loop never waits on the device.
                if batch and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
                    raise InputError(
                        f"targets must lie in [0, {self.num_classes}) for this head, got "
                        f"min {int(targets.min())}, max {int(targets.max())}; check the labels or the head size"
                    )
                labels = targets.to(device, non_blocking=True)
            else:
                labels = targets.to(device)
                bad = ((labels < 0) | (labels >= self.num_classes)).any()
                self._bad_targets = bad if self._bad_targets is None else (self._bad_targets | bad)
                labels = labels.clamp(0, self.num_classes - 1)
            target_arg = labels
        elif targets.ndim == 2 and targets.shape == fwd.logits.shape:
            target_arg = targets.to(device)
            labels = target_arg.argmax(dim=1)
        else:
            raise InputError(
                f"targets must be class indices [{batch}] or soft targets {tuple(fwd.logits.shape)}, "
                f"got {tuple(targets.shape)}"
            )
        ints, floats = sample_signals(fwd.scores, fwd.logits, target_arg, labels, fwd.feature_norm, fwd.weight_norm)
        # A copy: a loader that refills one id buffer in place (numpy or tensor) would
        # otherwise rewrite the ids of batches already recorded.
        self._ids.append(ids.detach().clone())
        self._steps.append((self.step, batch))
        self._ints.append(ints)
        self._floats.append(floats)
        self.step += 1

    # -- flush -----------------------------------------------------------------------------
    def end_epoch(self, epoch: int, **extra: Any) -> dict[str, Any]:
        """Close the epoch: returns its summary (GWA, moments, loss, accuracy) at once and
        writes the Parquet part, then the epoch row, in the background (``flush`` waits;
        ``close`` flushes). ``extra`` keys (lr, eval_acc, ...) are stored in the epoch row.
        """
        if self._closed:
            raise RuntimeError(f"end_epoch({epoch}) called on a closed AlignmentRecorder; create a new one "
                               "(resume=True continues the run)")
        epoch = _epoch_number(epoch)
        if self._last_epoch is not None and epoch <= self._last_epoch:
            # Writing it again would replace the epoch's part and row with what came after.
            raise InputError(
                f"end_epoch({epoch}) after end_epoch({self._last_epoch}): epochs must increase, and an "
                "epoch already written would be replaced. Call end_epoch once per epoch with that epoch's number"
            )
        extra = _scalar_extras(extra)
        # A failed write of the previous epoch surfaces here, before this epoch's rows are
        # taken out of memory.
        self.flush()
        rank, world = dist_info()
        if (rank, world) != (self.rank, self.world_size):
            self._clear()
            raise RuntimeError(_LATE_GROUP.format(made=f"made as rank {self.rank} of {self.world_size}",
                                                  now=f"now rank {rank} of {world}"))
        if self._bad_targets is not None and bool(self._bad_targets):
            self._clear()
            raise InputError(
                f"targets outside [0, {self.num_classes}) were passed during epoch {epoch}; nothing "
                "was written for this epoch. Check the labels or the head size"
            )
        if self._floats:
            ints = torch.cat(self._ints)
            floats = torch.cat(self._floats)
            ids_h = torch.cat([i.cpu().long() for i in self._ids]).numpy()
            steps_h = np.repeat(
                np.array([s for s, _ in self._steps], dtype=np.int64), [b for _, b in self._steps]
            )
        else:
            device = self.head.weight.device
            ints = torch.zeros((0, 2), dtype=torch.int64, device=device)
            floats = torch.zeros((0, 5), dtype=torch.float32, device=device)
            ids_h = steps_h = np.zeros(0, dtype=np.int64)
        self._clear()
        totals = reduce_epoch(ints, floats, self.num_classes, self.world_size)
        # The one host sync of the epoch is behind us (the totals). Encoding and writing the
        # Parquet part happen on the writer thread, so the next epoch's first steps do not
        # wait for the disk.
        ints_h, floats_h = ints.cpu().numpy(), floats.cpu().numpy()
        del ints, floats
        row: dict[str, Any] = {
            "epoch": int(epoch),
            **totals.as_row(),
            "end_step": self.step,
            "seconds": time.perf_counter() - self._epoch_start,
            **extra,
        }
        # At most one epoch in flight (flushed above): host memory stays bounded.
        self.submit(self._write, int(epoch), ids_h, steps_h, ints_h, floats_h, row, self.step)
        self._last_epoch = epoch
        self._epoch_start = time.perf_counter()
        return row

    def _clear(self) -> None:
        self._ids.clear()
        self._steps.clear()
        self._ints.clear()
        self._floats.clear()
        self._bad_targets = None

    def _write(self, epoch: int, ids_h, steps_h, ints_h, floats_h, row: dict[str, Any], next_step: int) -> None:
        table = pa.Table.from_arrays(
            [
                pa.array(ids_h),
                pa.array(steps_h),
                pa.array(ints_h[:, 0].astype("int32")),
                pa.array(floats_h[:, 0]),
                pa.array(floats_h[:, 1]),
                pa.array(floats_h[:, 2]),
                pa.array(floats_h[:, 3]),
                pa.array(ints_h[:, 1].astype("int32")),
                pa.array(floats_h[:, 4]),
            ],
            schema=SAMPLE_SCHEMA,
        )
        self.writer.write_samples(epoch, table)
        if self.rank == 0:
            # Parts are renamed into place atomically, so their presence means complete:
            # only then is the epoch's row published (readers treat it as the commit mark).
            _wait_for_parts(self.writer.path / "samples" / f"epoch={epoch}", self.world_size)
            self.writer.write_epoch(row)
            self.writer.update_meta(next_step=next_step, last_epoch=epoch)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the writer thread after every epoch submitted so far is on
        disk (``queue.submit``)."""
        self.queue.submit(fn, *args)

    def flush(self) -> None:
        """Wait until everything submitted is written (re-raises a failed write)."""
        self.queue.flush()

    def close(self, **meta: Any) -> None:
        """Write what is pending, detach the hook and mark the run finished (extra keys go
        into run.json)."""
        self.detach()
        self._closed = True
        self.queue.close()
        self.writer.update_meta(status="finished", **meta)

    def __enter__(self) -> "AlignmentRecorder":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        """A clean exit closes the recorder (the run is marked finished); an exception
        writes what was submitted and leaves the run marked running, so that it can be
        resumed."""
        if exc_type is None and not self._closed:
            self.close()
            return
        self.detach()
        self._closed = True
        self.queue.close()


# The columns end_epoch computes itself; extra keys may not replace them.
_EPOCH_KEYS = frozenset(
    {"epoch", "n", "n_nan", "mean", "m2", "m4", "kurtosis", "gwa", "valid", "reason",
     "train_loss", "train_acc", "contradicted", "end_step", "seconds"}
)


def _epoch_number(epoch: Any) -> int:
    if isinstance(epoch, torch.Tensor) and epoch.numel() == 1:
        epoch = epoch.item()
    if isinstance(epoch, (bool, np.bool_)) or not isinstance(epoch, (int, np.integer)) or int(epoch) < 0:
        raise TypeError(f"epoch must be a non-negative int, got {epoch!r}")
    return int(epoch)


def _scalar_extras(extra: dict[str, Any]) -> dict[str, Any]:
    """``end_epoch``'s extra columns as plain Python scalars, checked before anything is
    written (a tensor or array would only fail in the background write, losing the epoch)."""
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if key in _EPOCH_KEYS:
            raise InputError(f"end_epoch extra {key!r} would replace the recorder's own {key!r} column; use another name")
        if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
            size = value.numel() if isinstance(value, torch.Tensor) else np.size(value)
            if size != 1:
                raise TypeError(f"end_epoch extra {key!r} must be a scalar, got shape {tuple(value.shape)}")
            value = value.item()
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise TypeError(
                f"end_epoch extra {key!r} must be a number, bool, string or None, got {type(value).__name__}"
            )
        out[key] = value
    return out


_LATE_GROUP = (
    "the AlignmentRecorder was created before torch.distributed was set up ({made}, {now}): "
    "create it after init_process_group (with Hugging Face's Trainer: after Trainer(...))"
)


def _wait_for_parts(folder: Path, world_size: int, timeout_s: float = 3600.0) -> None:
    """Block until every rank's part of one epoch exists (rank 0's writer thread)."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [r for r in range(world_size) if not (folder / f"part-{r}.parquet").exists()]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"ranks {missing} never wrote their part in {folder}; did a rank die?")
        time.sleep(0.05)


def dist_info() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` unless torch.distributed is up."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
