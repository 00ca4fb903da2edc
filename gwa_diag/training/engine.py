"""The training engine: one readable loop with the recorder on the classifier head.

Every epoch: shuffle (seeded per epoch, so a resumed run sees the same order), crop+flip
augmentation batch-wise on the device, forward under autocast on GPU, cross-entropy,
optimizer step, per-iteration LR schedule (linear warm-up, then cosine or linear decay),
``recorder.update``; then ``recorder.end_epoch`` (one Parquet part + the GWA row), optional
evaluation accuracy, a checkpoint, and the GWA early-stopping rule, whose epoch's weights
are kept in ``checkpoints/selected.pt``. Owns the loop; its settings are
:class:`~gwa_diag.training.config.TrainConfig`, batches come from
:mod:`gwa_diag.training.batches`, resuming goes through :mod:`gwa_diag.training.resume`.
Imports torch, the recording core and the training modules, never analysis or cli.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gwa_diag import __version__
from gwa_diag.checks import InputError
from gwa_diag.early_stopping import EarlyStopResult, select_epoch
from gwa_diag.recorder import AlignmentRecorder, dist_info
from gwa_diag.store import RunWriter
from gwa_diag.training.batches import Batches, augment, batch_bounds, channel_stats
from gwa_diag.training.config import TrainConfig
from gwa_diag.training.models import check_num_classes
from gwa_diag.training.data import data_fingerprint
from gwa_diag.training.memorisation import MemorisationKeeper
from gwa_diag.training.resume import check_resume, continue_run, lock_run

__all__ = ["StepRecorder", "TrainConfig", "TrainResult", "autocast_dtype", "build_optimizer", "data_fingerprint",
           "lr_factor", "train", "train_step"]


class StepRecorder(Protocol):
    """What :func:`train_step` calls between backward and the optimizer step:
    :class:`~gwa_diag.recorder.AlignmentRecorder`, or any object with this method (a
    benchmark that records other per-sample numbers of the same step)."""

    def update(self, ids: torch.Tensor, labels: torch.Tensor) -> Any: ...


@dataclass
class TrainResult:
    run_dir: Path
    selected: EarlyStopResult
    history: list[dict[str, Any]] = field(default_factory=list)


def _check_eval_labels(eval_set: Any, num_classes: int) -> None:
    labels = np.asarray(getattr(eval_set, "labels", []))
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"the evaluation set has labels in [{int(labels.min())}, {int(labels.max())}] but the "
            f"training set has {num_classes} classes: pass an evaluation set with the same classes"
        )


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, 1.0 - progress)


def build_optimizer(model: nn.Module, cfg: TrainConfig, total_steps: int,
                    warmup_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The engine's optimizer of ``cfg`` over ``model`` and its per-step schedule (linear
    warm-up over ``warmup_steps``, then ``cfg.schedule`` until ``total_steps``)."""
    params_decay = [p for p in model.parameters() if p.ndim > 1]
    params_other = [p for p in model.parameters() if p.ndim <= 1]
    # No weight decay on biases and norm parameters (the usual convention).
    groups = [{"params": params_decay, "weight_decay": cfg.weight_decay}, {"params": params_other, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, warmup_steps, cfg.schedule))
    return opt, sched


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a ``precision`` setting on ``device`` (None: fp32, autocast off)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def _named_eval_sets(eval_set: Any | None) -> dict[str, Any]:
    """``train``'s ``eval_set`` as {name: dataset}: one dataset is ``{"eval": it}``; a dict
    keeps its names, the first becoming ``eval``."""
    if eval_set is None:
        return {}
    if not isinstance(eval_set, dict):
        return {"eval": eval_set}
    if not eval_set:
        return {}
    names = list(eval_set)
    if "eval" not in eval_set:
        names[0] = "eval"
    for name in names:
        if not isinstance(name, str) or not name.isidentifier():
            raise InputError(f"evaluation set name {name!r} must be a plain identifier (it names the NAME_acc column)")
    return dict(zip(names, eval_set.values()))


def _evaluate(model: nn.Module, dataset: Any, device: torch.device, mean, std, dtype, batch_size: int) -> dict[str, float]:
    batches = Batches(dataset, device, batch_size, num_workers=0)
    model.eval()
    correct, loss_sum, n = 0.0, 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for images, labels, _ in batches.epoch(torch.Generator().manual_seed(0)):
            logits = model((images.float().div_(255) - mean) / std).float()
            correct += (logits.argmax(1) == labels).sum().item()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            n += len(labels)
    model.train()
    return {"eval_acc": correct / max(n, 1), "eval_loss": loss_sum / max(n, 1)}


def train_step(
    net: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler,
    recorder: StepRecorder | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment_with: torch.Generator | None = None,
) -> torch.Tensor:
    """One optimisation step of the engine on ``batch`` = ``(uint8 images [B, 3, H, W],
    labels, sample ids)``, all on the device (as :class:`~gwa_diag.training.batches.Batches`
    yields them).

    Crop+flip from ``augment_with`` (None: no augmentation), normalise by ``mean``/``std``
    ([1, 3, 1, 1] on the device), forward under autocast to ``dtype`` (None: fp32, autocast
    off), cross-entropy in fp32, backward through ``scaler`` (a disabled GradScaler: plain
    backward and step), ``recorder.update`` between backward and the optimizer step, while
    the weights are still those of the forward (None: nothing recorded), then the optimizer, scaler and ``scheduler`` steps. Returns the loss
    as a device tensor: nothing here reads a value back, so the step makes the host wait for
    the device only where the GradScaler itself does (fp16).

    The engine's loop and every benchmark run this, so the benchmarks time and measure the
    step that trains.
    """
    images, labels, ids = batch
    if augment_with is not None:
        images = augment(images, augment_with)
    x = (images.float().div_(255) - mean) / std
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = net(x)
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if recorder is not None:
        # Files what the head's hook captured in the forward under these ids (the forward's
        # own weights, so before or after the optimizer step records the same).
        recorder.update(ids, labels)
    scaler.step(optimizer)
    scaler.update()
    if scheduler is not None:
        scheduler.step()
    return loss


def _snapshot(obj: Any) -> Any:
    """A deep copy of a (nested) state dict whose tensors stay on their device."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    model: nn.Module,
    train_set: Any,
    out_dir: str | os.PathLike,
    *,
    config: TrainConfig | None = None,
    eval_set: Any | None = None,
    head: nn.Linear | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_set`` while recording alignment into ``out_dir``.

    ``train_set`` yields (uint8 image [3,H,W], label, sample_id) and has ``labels``,
    ``sample_ids`` and ``num_classes`` (see :mod:`gwa_diag.training.data`). ``eval_set`` is
    one dataset (accuracy and loss each epoch: ``eval_acc``, ``eval_loss``) or a dict of
    them by name (``eval`` or the first one writes ``eval_*``, any other NAME ``NAME_acc``
    and ``NAME_loss``). ``resume=True`` continues
    a killed run from its last checkpoint without losing or duplicating recorded epochs.
    While it trains, the run directory is locked: a second ``train`` on it (a ``--resume``
    started while the first still runs) is refused instead of interleaving its writes.
    """
    with contextlib.ExitStack() as held:
        return _train(model, train_set, out_dir, config=config, eval_set=eval_set, head=head,
                      resume=resume, meta=meta, held=held)


def _train(
    model: nn.Module,
    train_set: Any,
    out_dir: str | os.PathLike,
    *,
    config: TrainConfig | None,
    eval_set: Any | None,
    head: nn.Linear | None,
    resume: bool,
    meta: dict[str, Any] | None,
    held: contextlib.ExitStack,
) -> TrainResult:
    cfg = config or TrainConfig()
    cfg.validate()
    out = Path(out_dir)
    device = _resolve_device(cfg.device)
    num_classes = int(getattr(train_set, "num_classes"))
    head = check_num_classes(model, num_classes, head=head)
    # Several evaluation sets by name (e.g. a test set and a held-out validation split):
    # "eval" (or the first) writes eval_acc / eval_loss, every other NAME writes NAME_acc /
    # NAME_loss in epochs.parquet.
    evals = _named_eval_sets(eval_set)
    for one in evals.values():
        _check_eval_labels(one, num_classes)
    torch.manual_seed(cfg.seed)
    rank, world = dist_info()
    model.to(device)
    # Under torchrun the forward/backward goes through DDP (gradients averaged across
    # ranks); the recorder hooks the head of the unwrapped model, evaluation uses it too.
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    steps_per_epoch = len(batch_bounds(len(train_set), cfg.batch_size, world))
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    opt, sched = build_optimizer(model, cfg, total_steps, warmup_steps)
    dtype = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    batches = Batches(train_set, device, cfg.batch_size, num_workers=cfg.num_workers)
    stats_src = batches.images if batches.images is not None else None
    if stats_src is None:
        sample = torch.stack([train_set[i][0] for i in range(min(len(train_set), 2000))])
        stats_src = sample
    mean, std = channel_stats(stats_src)
    mean, std = mean.to(device)[None, :, None, None], std.to(device)[None, :, None, None]

    fingerprint = data_fingerprint(train_set)
    run_meta = {
        "config": asdict(cfg),
        "data_fingerprint": fingerprint,
        "num_classes": num_classes,
        "class_names": list(getattr(train_set, "class_names", []) or []),
        "num_samples": len(train_set),
        "dataset": getattr(train_set, "spec", None),
        "eval_dataset": getattr(evals["eval"], "spec", None) if evals else None,
        "model": type(model).__name__,
        "device": str(device),
        "steps_per_epoch": steps_per_epoch,
        "world_size": world,
        "environment": {
            "gwa_diag": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        **(meta or {}),
    }
    ckpt = None
    # Lock before the resume checks read the run; a new run is locked once RunWriter made it.
    locked = rank == 0 and resume and (out / "run.json").exists()
    if locked:
        held.enter_context(lock_run(out))
    if resume and (out / "run.json").exists():
        # Every rank checks: all of them stop on a mismatch.
        ckpt = check_resume(out, config=asdict(cfg), train_set=train_set, model=model, meta=meta or {},
                            fingerprint=fingerprint)
    if rank != 0:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has created (or checked) the run directory
    writer = RunWriter(out, meta=run_meta, rank=rank, world_size=world, resume=resume)
    if rank == 0 and not locked:
        held.enter_context(lock_run(out))
    if rank == 0 and world > 1:
        import torch.distributed as dist

        dist.barrier()
    start_epoch = 0
    ckpt_path = out / "checkpoints" / "last.pt"
    if ckpt is not None:
        # load_state_dict copies into the model's and the optimizer's own devices.
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"])
        start_epoch = ckpt["epoch"] + 1
    else:
        # A new run, or one stopped before its first checkpoint (a crash in epoch 0, or between
        # epoch 0's records and its checkpoint), which starts over: same seed, same data.
        files = getattr(train_set, "relative_paths", None)  # datasets read from files know each one's path
        writer.write_labels(train_set.sample_ids, train_set.labels, getattr(train_set, "clean_labels", None),
                            paths=files() if callable(files) else None)
    recorder = AlignmentRecorder(model, writer, head=head)
    history: list[dict[str, Any]] = []
    if resume:
        # Epochs after the checkpoint (all of them without one) are trained again.
        history = continue_run(recorder, start_epoch, step=start_epoch * steps_per_epoch)
    selected = select_epoch([r["epoch"] for r in history], [r.get("gwa") for r in history], mode=cfg.mode, total_epochs=cfg.epochs)
    keeper = MemorisationKeeper(out / "checkpoints", _atomic_save, recorder.queue.submit)
    phase = None
    bar = _progress(cfg.progress and rank == 0, cfg.epochs, start_epoch)
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        lr_now = opt.param_groups[0]["lr"]
        for batch in batches.epoch(gen, rank, world):
            # The epoch's generator also draws the crops and flips, so a resumed run repeats them.
            train_step(net, batch, opt, mean=mean, std=std, dtype=dtype, scaler=scaler, recorder=recorder,
                       scheduler=sched, augment_with=gen if cfg.augment else None)
        extra: dict[str, Any] = {"lr": lr_now}
        if rank == 0:
            for name, one in evals.items():
                result = _evaluate(model, one, device, mean, std, dtype, cfg.batch_size * 2)
                extra.update({f"{name}_{key.split('_', 1)[1]}": value for key, value in result.items()})
        row = recorder.end_epoch(epoch, **extra)
        history.append(row)
        selected = select_epoch(
            [r["epoch"] for r in history], [r.get("gwa") for r in history], mode=cfg.mode, total_epochs=cfg.epochs
        )
        if rank == 0:
            # Snapshot now (training goes on), save on the recorder's writer thread after the
            # epoch's records are on disk: a checkpoint never claims an unrecorded epoch.
            state = {
                "model": _snapshot(model.state_dict()),
                "optimizer": _snapshot(opt.state_dict()),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "epoch": epoch,
            }
            if selected.epoch == epoch:
                recorder.queue.submit(_atomic_save, {"model": state["model"], "epoch": epoch}, out / "checkpoints" / "selected.pt")
            # The weights from before memorisation, read online as the analysis reads it offline.
            phase = keeper.after_epoch(history, epoch, state["model"])
            recorder.queue.submit(_atomic_save, state, ckpt_path)
        # run.json is rewritten by the writer thread too: keep its updates on that thread.
        memorisation = {"memorisation": keeper.record(phase)} if phase is not None else {}
        recorder.queue.submit(functools.partial(writer.update_meta, early_stopping=selected.as_dict(), **memorisation))
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(_postfix(row))
    if bar is not None:
        bar.close()
    if rank == 0:
        keeper.finish(phase)
    recorder.close(early_stopping=selected.as_dict(), selected_epoch=selected.epoch)
    return TrainResult(out, selected, history)


def _postfix(row: dict[str, Any]) -> str:
    gwa = row.get("gwa")
    parts = [f"loss {row['train_loss']:.3f}", f"acc {row['train_acc']:.3f}", "gwa " + (f"{gwa:.3f}" if gwa is not None else "undef")]
    if "eval_acc" in row:
        parts.append(f"eval {row['eval_acc']:.3f}")
    return ", ".join(parts)


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="epoch", dynamic_ncols=True)
