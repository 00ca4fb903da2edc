"""Training batches on the device: the epoch's order, the per-rank split and augmentation.

Owns how one epoch becomes batches of ``(uint8 images [B, 3, H, W] on the device, labels,
sample ids)``: a seeded permutation (the same on every rank and after a resume), global
batches split across ranks, crop+flip augmentation done batch-wise on the device, and the
per-channel statistics the engine normalises with. Array datasets (``images_nchw``) take
the fast path: the uint8 images move to the device once and batches are gathered there,
with no DataLoader workers or host copies per step. Imports numpy and torch only.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Batches", "augment", "batch_bounds", "channel_stats"]


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std of uint8 NCHW images in [0, 1] (on at most 10,000 images)."""
    sub = images[: min(len(images), 10_000)].float().div_(255)
    return sub.mean(dim=(0, 2, 3)), sub.std(dim=(0, 2, 3)).clamp_min(1e-3)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
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


class Batches:
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
        return len(batch_bounds(len(self.labels), self.batch_size))

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
        chunks = [order[a:b][rank::world] for a, b in batch_bounds(len(order), self.batch_size, world)]
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


def batch_bounds(n: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
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
