"""Images held in memory: :class:`ArrayDataset`, ``.npz`` files and CIFAR-10 through
torchvision.

Owns the conversion of user arrays to one contiguous uint8 NCHW block (what the engine's
fast path moves to the device in one copy) and the readers that fill it. Reading errors
of a user's file become :class:`~gwa_diag.checks.InputError` naming the file. Imports
numpy, torch (torchvision when CIFAR-10 is asked for), :mod:`gwa_diag.checks` and
:mod:`.base`.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gwa_diag.checks import InputError, InputTypeError, MissingFileError
from gwa_diag.training.data.base import SampleDataset, as_int_array

__all__ = ["CIFAR10_CLASSES", "NPZ_OPTIONS", "ArrayDataset", "cifar10", "load_npz"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)



def _to_nchw_uint8(images: Any) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise InputTypeError(
                f"images must be uint8, got {images.dtype}: convert 0..1 floats with "
                "(images * 255).round().to(torch.uint8)"
            )
        t = images.detach().cpu()
    else:
        arr = np.asarray(images)
        if arr.dtype != np.uint8:
            raise InputTypeError(
                f"images must be uint8, got {arr.dtype}: convert 0..1 floats with "
                "(images * 255).round().astype(np.uint8)"
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.ndim == 3:  # [N, H, W] grayscale
        t = t.unsqueeze(1)
    elif t.ndim == 4:
        last, second = t.shape[-1], t.shape[1]
        # Prefer NHWC (the numpy/PIL convention) when both axes could be channels.
        if last in (1, 3):
            t = t.permute(0, 3, 1, 2)
        elif second not in (1, 3):
            raise InputError(
                f"cannot find the channel axis of images with shape {tuple(t.shape)}: "
                "give [N, H, W, C] or [N, C, H, W] with C = 1 (grayscale) or 3 (RGB)"
            )
    else:
        raise InputError(
            f"images must be [N, H, W, C], [N, C, H, W] or [N, H, W], got shape {tuple(t.shape)}"
        )
    if t.shape[1] == 1:
        # Grayscale -> 3 identical channels, so every model preset sees RGB-shaped input.
        t = t.expand(-1, 3, -1, -1)
    return t.contiguous()


class ArrayDataset(SampleDataset):
    """Images held in memory as one uint8 tensor ``images_nchw`` ``[N, 3, H, W]``.

    Args:
        images: uint8 array or tensor, NHWC or NCHW (detected by the channel axis of size
            1 or 3; NHWC wins when both fit), or ``[N, H, W]`` grayscale. Grayscale is
            repeated to 3 channels.
        labels: integer labels ``[N]`` in ``[0, num_classes)``.
        sample_ids: unique integer ids ``[N]``; default ``0..N-1``.
        clean_labels: ground-truth labels ``[N]`` when known.
        class_names: one name per class; default ``"0".."C-1"``.
        num_classes: number of classes when ``class_names`` is not given; default
            ``max(label) + 1``.
        spec: how to rebuild this dataset (set by the loaders; in-memory arrays cannot be
            rebuilt by :func:`load_dataset`, save them with ``np.savez`` and use
            :func:`load_npz`).
    """

    images_nchw: torch.Tensor

    def __init__(
        self,
        images: Any,
        labels: Any,
        *,
        sample_ids: Any | None = None,
        clean_labels: Any | None = None,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        spec: Mapping[str, Any] | None = None,
    ) -> None:
        images_nchw = _to_nchw_uint8(images)
        super().__init__(
            labels=labels,
            sample_ids=sample_ids,
            clean_labels=clean_labels,
            num_classes=num_classes,
            class_names=class_names,
            spec=spec if spec is not None else {"source": "arrays"},
        )
        if images_nchw.shape[0] != len(self.labels):
            raise InputError(
                f"images has {images_nchw.shape[0]} samples but labels has {len(self.labels)}: "
                "give one label per image"
            )
        # One contiguous uint8 block: the engine's GPU path moves it to the device in one copy.
        self.images_nchw = images_nchw

    def image(self, i: int) -> np.ndarray:
        i = self._check_position(i)
        return np.ascontiguousarray(self.images_nchw[i].permute(1, 2, 0).numpy())

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        i = self._check_position(i)
        return self.images_nchw[i], int(self.labels[i]), int(self.sample_ids[i])


NPZ_OPTIONS = ("label_key", "image_key", "id_key", "clean_label_key", "class_names", "num_classes")


def load_npz(
    path: str | os.PathLike[str],
    *,
    label_key: str = "labels",
    image_key: str = "images",
    id_key: str = "sample_ids",
    clean_label_key: str | None = "clean_labels",
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> ArrayDataset:
    """Load an :class:`ArrayDataset` from an ``.npz`` file.

    The file needs ``images`` (uint8 NHWC or NCHW) and the labels under ``label_key``.
    Optional keys: ``sample_ids`` (default: row index), ``clean_labels`` (ground truth) and
    ``class_names`` (a string array; used when ``class_names`` is not passed). A missing
    optional key is simply absent. The file is read with ``allow_pickle=False``.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(f"npz file not found: {p}: check the path")
    try:
        images, labels, ids, clean, file_names = _read_npz(
            p, label_key=label_key, image_key=image_key, id_key=id_key, clean_label_key=clean_label_key
        )
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, InputError):
            raise
        # What numpy raises for a file that is no .npz (or holds pickled objects, refused by
        # allow_pickle=False): a problem of the user's file, not of this code.
        raise InputError(
            f"cannot read {p} as an .npz file ({type(e).__name__}: {e}): save it with "
            "np.savez(path, images=..., labels=...) holding numeric arrays only"
        ) from e
    if class_names is None:
        class_names = file_names
    spec = {
        "source": "npz",
        "path": str(p.resolve()),
        "label_key": label_key,
        "image_key": image_key,
        "id_key": id_key,
        "clean_label_key": clean_label_key,
        "class_names": list(class_names) if class_names is not None else None,
        "num_classes": num_classes,
    }
    return ArrayDataset(
        images, labels, sample_ids=ids, clean_labels=clean, class_names=class_names,
        num_classes=num_classes, spec=spec,
    )


def _read_npz(
    p: Path, *, label_key: str, image_key: str, id_key: str, clean_label_key: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, list[str] | None]:
    """``(images, labels, sample ids, clean labels, class names)`` of an .npz file; the
    optional ones None when absent."""
    with np.load(p, allow_pickle=False) as z:
        keys = list(z.keys())
        for key, what in ((image_key, "image_key"), (label_key, "label_key")):
            if key not in keys:
                # The CLI reads the default names only: say how to fix the file, and the
                # keyword for a Python caller.
                raise InputError(
                    f"{p} has no array {key!r}; its arrays are {', '.join(keys) or '(none)'}: "
                    f"save the array under the name {key!r} (Python: load_npz(path, {what}=...))"
                )
        images = z[image_key]
        labels = z[label_key]
        if labels.ndim == 1 and len(labels) == 0:
            raise InputError(f"{p} holds no samples: its {label_key!r} array is empty")
        if labels.size and labels.dtype.kind not in "iu":
            as_int_array(labels.reshape(-1), f"{p} array {label_key!r}",
                         fix="save it as integers (numpy: labels.astype(np.int64) for whole numbers); "
                             "classes are indices 0..K-1, not names")
        ids = z[id_key] if id_key in keys else None
        clean = z[clean_label_key] if clean_label_key and clean_label_key in keys else None
        names = [str(c) for c in z["class_names"].tolist()] if "class_names" in keys else None
    return images, labels, ids, clean, names


# --------------------------------------------------------------------------------------
# CIFAR-10 through torchvision
# --------------------------------------------------------------------------------------


def cifar10(root: str | os.PathLike[str], *, train: bool = True, download: bool = False) -> ArrayDataset:
    """CIFAR-10 via ``torchvision.datasets.CIFAR10``; sample id = CIFAR-10 index.

    Args:
        root: folder that holds (or will hold) ``cifar-10-batches-py``.
        train: the 50,000 training images (True) or the 10,000 test images (False).
        download: download the archive into ``root`` if missing (needs a network).

    Raises:
        FileNotFoundError: if the files are missing and ``download`` is False.
    """
    from torchvision.datasets import CIFAR10

    root_p = Path(root).expanduser()
    try:
        ds = CIFAR10(str(root_p), train=bool(train), download=bool(download))
    except RuntimeError as e:
        # torchvision signals missing/corrupt files with a bare RuntimeError.
        raise MissingFileError(
            f"CIFAR-10 not found under {root_p}: put the extracted 'cifar-10-batches-py' "
            f"folder there ({root_p / 'cifar-10-batches-py'}), or pass download=True on a "
            f"machine with a network ({e})"
        ) from e
    images = np.asarray(ds.data, dtype=np.uint8)  # [N, 32, 32, 3] HWC
    labels = np.asarray(ds.targets, dtype=np.int64)
    spec = {"source": "cifar10", "root": str(root_p.resolve()), "train": bool(train)}
    return ArrayDataset(
        images, labels, sample_ids=np.arange(len(labels)), class_names=list(ds.classes), spec=spec,
    )

