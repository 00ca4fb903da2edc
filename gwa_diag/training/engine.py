"""The training engine: one readable loop with the recorder on the classifier head.

Every epoch: shuffle (seeded per epoch, so a resumed run sees the same order), crop+flip
augmentation batch-wise on the device, forward under autocast on GPU, cross-entropy,
optimizer step, per-iteration LR schedule (linear warm-up, then cosine or linear decay),
``recorder.update``; then ``recorder.end_epoch`` (one Parquet part + the GWA row), optional
evaluation accuracy, a checkpoint, and the GWA early-stopping rule, whose epoch's weights
are kept in ``checkpoints/selected.pt``.

Array datasets (``images_nchw``) take the fast path: the uint8 images move to the device
once and batches are gathered there, so no DataLoader workers or host copies per step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gwa_diag import __version__
from gwa_diag.early_stopping import EarlyStopResult, select_epoch
from gwa_diag.training.models import check_num_classes
from gwa_diag.recorder import AlignmentRecorder, _dist_info
from gwa_diag.store import RunDirError, RunWriter, exclusive_lock, open_run
from gwa_diag.checks import InputError

__all__ = ["TrainConfig", "TrainResult", "train"]


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (saved in run.json)."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 0.1
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 2.0
    schedule: Literal["cosine", "linear", "constant"] = "linear"
    augment: bool = True
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: str = "auto"
    seed: int = 0
    mode: Literal["scratch", "finetune"] = "scratch"  # which GWA early-stopping rule
    num_workers: int = 0  # DataLoader workers for datasets without an in-memory array
    progress: bool = True

    def validate(self) -> None:
        choices = {
            "optimizer": ("sgd", "adamw"),
            "schedule": ("cosine", "linear", "constant"),
            "precision": ("auto", "bf16", "fp16", "fp32"),
            "mode": ("scratch", "finetune"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise InputError(f"unknown {name} {getattr(self, name)!r}; valid: {', '.join(valid)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}")


@dataclass
class TrainResult:
    run_dir: Path
    selected: EarlyStopResult
    history: list[dict[str, Any]] = field(default_factory=list)


# -- data on the device --------------------------------------------------------------------
def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std of uint8 NCHW images in [0, 1] (on at most 10,000 images)."""
    sub = images[: min(len(images), 10_000)].float().div_(255)
    return sub.mean(dim=(0, 2, 3)), sub.std(dim=(0, 2, 3)).clamp_min(1e-3)


def _augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a uint8 batch [B, 3, H, W]."""
    b, _, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device="cpu").to(dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device="cpu").to(dev)
    flip = (torch.rand(b, generator=gen, device="cpu") < 0.5).to(dev)
    rows = oy[:, None] + torch.arange(h, device=dev)[None]  # [B, H]
    cols = ox[:, None] + torch.arange(w, device=dev)[None]  # [B, W]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class _Batches:
    """Yields (uint8 images on device, labels, sample ids) for one epoch."""

    def __init__(self, dataset: Any, device: torch.device, batch_size: int, *, num_workers: int) -> None:
        self.dataset = dataset
        self.device = device
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64)
        self.ids = torch.as_tensor(np.asarray(dataset.sample_ids), dtype=torch.int64)
        images = getattr(dataset, "images_nchw", None)
        # Fast path: the whole uint8 array on the device (CIFAR-10: 150 MB) and gathers there.
        self.images = images.to(device) if images is not None else None
        if self.images is not None:
            self.labels_dev = self.labels.to(device)

    def __len__(self) -> int:
        return len(_batch_bounds(len(self.labels), self.batch_size))

    def epoch(
        self, gen: torch.Generator, rank: int = 0, world: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One epoch of batches. With ``world`` > 1 every rank draws the same permutation
        and takes every world-th sample of each global batch, so the global batch (and the
        averaged gradient) is the one a single process would see. The permutation is
        padded by repeating its first samples up to a multiple of ``world`` (as
        DistributedSampler does): those few samples are recorded twice in that epoch."""
        order = torch.randperm(len(self.labels), generator=gen)
        if world > 1 and len(order) % world:
            order = torch.cat([order, order[: world - len(order) % world]])
        chunks = [order[a:b][rank::world] for a, b in _batch_bounds(len(order), self.batch_size, world)]
        if self.images is not None:
            for idx in chunks:
                idx_dev = idx.to(self.device)
                yield self.images[idx_dev], self.labels_dev[idx_dev], self.ids[idx]
            return
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self.dataset, torch.cat(chunks).tolist()),
            batch_sampler=_Consecutive([len(c) for c in chunks]),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for images, labels, ids in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True), ids


def _batch_bounds(n: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of each global batch over ``n`` samples (padded to a multiple of
    ``world`` first). A last batch too small to give every rank two samples joins the one
    before it: BatchNorm cannot train on a single sample, and a rank with none would stall."""
    if world > 1 and n % world:
        n += world - n % world
    bounds = [(a, min(a + batch_size, n)) for a in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2 * world:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


class _Consecutive:
    """Batch sampler over 0..N-1 in order, with the given batch sizes."""

    def __init__(self, sizes: list[int]) -> None:
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self):
        start = 0
        for n in self.sizes:
            yield list(range(start, start + n))
            start += n


def _check_eval_labels(eval_set: Any, num_classes: int) -> None:
    labels = np.asarray(getattr(eval_set, "labels", []))
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"the evaluation set has labels in [{int(labels.min())}, {int(labels.max())}] but the "
            f"training set has {num_classes} classes: pass an evaluation set with the same classes"
        )


# Settings that may differ when a run is resumed: where and how fast it runs, not what.
_RESUME_FREE = {"device", "num_workers", "progress"}


# Images hashed for the data fingerprint: evenly spaced, so that a changed file, order or
# preprocessing shows up without reading a whole image folder again.
_FINGERPRINT_IMAGES = 32


def data_fingerprint(dataset: Any) -> str:
    """A short hash of the sample ids and of up to ``_FINGERPRINT_IMAGES`` evenly spaced
    images (their pixels and shapes): equal for the same data wherever it is stored."""
    import hashlib

    n = len(dataset)
    h = hashlib.sha256(f"n={n}".encode())
    for pos in np.unique(np.linspace(0, max(n - 1, 0), min(n, _FINGERPRINT_IMAGES)).astype(np.int64)):
        image = dataset.image(int(pos)) if hasattr(dataset, "image") else dataset[int(pos)][0]
        arr = np.ascontiguousarray(np.asarray(image))
        h.update(f"{int(np.asarray(dataset.sample_ids)[pos])}:{arr.shape}:{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def _check_resume(
    out: Path, cfg: "TrainConfig", train_set: Any, model: nn.Module, meta: dict[str, Any], fingerprint: str
) -> dict[str, Any] | None:
    """Refuse to resume a run with another model, other data, labels or settings: its
    remaining epochs would be recorded against a different problem than the ones before
    (and labels.parquet). Also refuse what a resume would wipe: a run recorded by another
    loop, or one whose checkpoint is gone. Runs before anything in the run directory is
    touched. Returns the checkpoint (on the CPU), or None when the run has none yet."""
    run = open_run(out)
    if "config" not in run.meta:
        raise InputError(
            f"cannot resume {out}: it was recorded by an AlignmentRecorder in another training loop, "
            "not by gwa-diag train, so there is nothing to continue (resuming would replace its "
            "epochs). Start a new run in a new directory"
        )
    stored = run.meta.get("config") or {}
    changed = sorted(k for k, v in asdict(cfg).items() if k not in _RESUME_FREE and k in stored and stored[k] != v)
    if changed:
        diffs = ", ".join(f"{k}: {stored[k]!r} -> {getattr(cfg, k)!r}" for k in changed)
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


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, 1.0 - progress)


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


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def _evaluate(model: nn.Module, dataset: Any, device: torch.device, mean, std, dtype, batch_size: int) -> dict[str, float]:
    batches = _Batches(dataset, device, batch_size, num_workers=0)
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
    ``sample_ids`` and ``num_classes`` (see :mod:`gwa_diag.training.data`). ``resume=True`` continues
    a killed run from its last checkpoint without losing or duplicating recorded epochs.
    While it trains, the run directory is locked: a second ``train`` on it (a ``--resume``
    started while the first still runs) is refused instead of interleaving its writes.
    """
    with contextlib.ExitStack() as held:
        return _train(model, train_set, out_dir, config=config, eval_set=eval_set, head=head,
                      resume=resume, meta=meta, held=held)


def _busy(out: Path) -> str:
    return (f"{out} is being written by another gwa-diag train right now: wait for it to finish, "
            "or stop it before resuming (its recorded epochs are kept)")


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
    if eval_set is not None:
        _check_eval_labels(eval_set, num_classes)
    torch.manual_seed(cfg.seed)
    rank, world = _dist_info()
    model.to(device)
    # Under torchrun the forward/backward goes through DDP (gradients averaged across
    # ranks); the recorder hooks the head of the unwrapped model, evaluation uses it too.
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    steps_per_epoch = len(_batch_bounds(len(train_set), cfg.batch_size, world))
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    params_decay = [p for p in model.parameters() if p.ndim > 1]
    params_other = [p for p in model.parameters() if p.ndim <= 1]
    # No weight decay on biases and norm parameters (the usual convention).
    groups = [{"params": params_decay, "weight_decay": cfg.weight_decay}, {"params": params_other, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total_steps, warmup_steps, cfg.schedule))
    dtype = _autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    batches = _Batches(train_set, device, cfg.batch_size, num_workers=cfg.num_workers)
    stats_src = batches.images if batches.images is not None else None
    if stats_src is None:
        sample = torch.stack([train_set[i][0] for i in range(min(len(train_set), 2000))])
        stats_src = sample
    mean, std = _channel_stats(stats_src)
    mean, std = mean.to(device)[None, :, None, None], std.to(device)[None, :, None, None]

    fingerprint = data_fingerprint(train_set)
    run_meta = {
        "config": asdict(cfg),
        "data_fingerprint": fingerprint,
        "num_classes": num_classes,
        "class_names": list(getattr(train_set, "class_names", []) or []),
        "num_samples": len(train_set),
        "dataset": getattr(train_set, "spec", None),
        "eval_dataset": getattr(eval_set, "spec", None) if eval_set is not None else None,
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
        held.enter_context(exclusive_lock(out, _busy(out)))
    if resume and (out / "run.json").exists():
        ckpt = _check_resume(out, cfg, train_set, model, meta or {}, fingerprint)  # every rank: all of them stop on a mismatch
    if rank != 0:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has created (or checked) the run directory
    writer = RunWriter(out, meta=run_meta, rank=rank, world_size=world, resume=resume)
    if rank == 0 and not locked:
        held.enter_context(exclusive_lock(out, _busy(out)))
    if rank == 0 and world > 1:
        import torch.distributed as dist

        dist.barrier()
    start_epoch = 0
    ckpt_path = out / "checkpoints" / "last.pt"
    if resume and ckpt is None:
        # Stopped before its first checkpoint (a crash in epoch 0, or between epoch 0's records
        # and its checkpoint): start over. Same seed, same data: every epoch is recorded again.
        resume = False
        writer.drop_epochs_from(0)
    if resume:
        # load_state_dict copies into the model's and the optimizer's own devices.
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"])
        start_epoch = ckpt["epoch"] + 1
        # Rows of epochs after the checkpoint are re-recorded: drop them so none is doubled.
        writer.drop_epochs_from(start_epoch)
    else:
        writer.write_labels(train_set.sample_ids, train_set.labels, getattr(train_set, "clean_labels", None))
    recorder = AlignmentRecorder(model, writer, head=head)
    recorder.step = start_epoch * steps_per_epoch

    history = [row for row in open_run(out).epochs().to_dict("records")] if resume else []
    selected = select_epoch([r["epoch"] for r in history], [r.get("gwa") for r in history], mode=cfg.mode, total_epochs=cfg.epochs)
    bar = _progress(cfg.progress and rank == 0, cfg.epochs, start_epoch)
    model.train()
    for epoch in range(start_epoch, cfg.epochs):
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        lr_now = opt.param_groups[0]["lr"]
        for images, labels, ids in batches.epoch(gen, rank, world):
            if cfg.augment:
                images = _augment(images, gen)
            x = (images.float().div_(255) - mean) / std
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), labels)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            recorder.update(ids, labels)
            scaler.step(opt)
            scaler.update()
            sched.step()
        extra: dict[str, Any] = {"lr": lr_now}
        if eval_set is not None and rank == 0:
            extra.update(_evaluate(model, eval_set, device, mean, std, dtype, cfg.batch_size * 2))
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
                recorder.submit(_atomic_save, {"model": state["model"], "epoch": epoch}, out / "checkpoints" / "selected.pt")
            recorder.submit(_atomic_save, state, ckpt_path)
        # run.json is rewritten by the writer thread too: keep its updates on that thread.
        recorder.submit(functools.partial(writer.update_meta, early_stopping=selected.as_dict()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(_postfix(row))
    if bar is not None:
        bar.close()
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
