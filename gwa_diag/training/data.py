"""Datasets that yield ``(image, label, sample_id)`` with stable sample ids.

Every dataset here is a :class:`SampleDataset`: item ``i`` is an uint8 image tensor
``[3, H, W]`` (RGB, not normalised: the training engine normalises and augments whole
batches on the device), the training label, and the sample's stable id. Sample ids are the
dataset's own indices (for CIFAR-10 the training index), so external ground truth such as
CIFAR-10-N joins on them and the app can find each image again.

Sources:

* :class:`ArrayDataset` / :func:`load_npz`: images in memory or in an ``.npz`` file;
* :func:`cifar10`: CIFAR-10 through torchvision;
* :class:`ImageFolderDataset`: one sub-folder per class;
* :func:`sample_data`: the small CIFAR-10-N subset shipped in ``sample_data/``.

Labels can be replaced by a CIFAR-10-N label set (:func:`with_cifar10n`), a user label file
(:func:`with_label_file`), any label array joined by sample id (:func:`with_label_set`), or
corrupted with synthetic noise (:func:`with_noise`). Each dataset's ``spec`` is a JSON-ready
dict from which :func:`load_dataset` rebuilds it, labels and noise included.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from gwa_diag.checks import InputError, InputTypeError, MissingFileError

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10N_LABEL_SETS",
    "IMAGE_EXTENSIONS",
    "NOISE_KINDS",
    "ArrayDataset",
    "ImageFolderDataset",
    "SampleDataset",
    "cifar10",
    "cifar10n_labels",
    "inject_noise",
    "load_cifar10n",
    "load_dataset",
    "load_label_file",
    "load_npz",
    "sample_data",
    "sample_data_path",
    "with_cifar10n",
    "with_label_file",
    "with_label_set",
    "with_noise",
]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

#: CIFAR-10-N label-set names -> keys of the official ``CIFAR-10_human.pt``.
CIFAR10N_LABEL_SETS: dict[str, str] = {
    "clean": "clean_label",
    "aggre": "aggre_label",
    "worst": "worse_label",
    "random1": "random_label1",
    "random2": "random_label2",
    "random3": "random_label3",
}

#: Image file extensions :class:`ImageFolderDataset` reads (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

#: Synthetic noise kinds of :func:`inject_noise`.
NOISE_KINDS: tuple[str, ...] = ("symmetric", "pair")

_SAMPLE_DATA_FILE = "cifar10n_subset.npz"


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------


def _fmt_ids(ids: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(int(v)) for v in ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def _as_int_array(values: Any, name: str, fix: str | None = None) -> np.ndarray:
    """1-D int64 copy of ``values``; TypeError for non-integer input.

    ``fix`` says how to repair non-integer values where they came from (a file); the default
    speaks to a Python caller.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D (one entry per sample), got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        got = f"text (e.g. {str(arr.flat[0])!r})" if arr.dtype.kind in "OSU" else f"dtype {arr.dtype}"
        raise InputTypeError(
            f"{name} must hold integers, got {got}: "
            + (fix or "convert whole-number values with .astype(np.int64); classes are indices 0..K-1, not names")
        )
    return arr.astype(np.int64, copy=True)


def _check_label_range(labels: np.ndarray, num_classes: int, name: str) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        if (labels < 0).any():
            # More classes would not help: a negative value is no class at all.
            hint = "negative values (e.g. -1 for 'unlabelled') are not classes: drop those samples or give them a class"
        else:
            hint = ("if the dataset has more classes, say how many: Python: num_classes= or class_names=; "
                    "an .npz file: a class_names array with one name per class")
        raise InputError(
            f"{name} has {int(bad.sum())} value(s) outside [0, {num_classes}) "
            f"(e.g. {_fmt_ids(labels[bad])}): labels must be class indices 0..{num_classes - 1}; {hint}"
        )


def _infer_num_classes(labels: np.ndarray, clean_labels: np.ndarray | None) -> int:
    top = int(labels.max()) if labels.size else -1
    if clean_labels is not None and clean_labels.size:
        top = max(top, int(clean_labels.max()))
    return top + 1


def _check_options(given: Mapping[str, Any], valid: Sequence[str], what: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise InputError(
            f"unknown {what} key(s) {', '.join(repr(u) for u in unknown)}: "
            f"valid keys are {', '.join(repr(v) for v in valid)}"
        )


def _check_choice(value: Any, valid: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in valid:
        close = difflib.get_close_matches(str(value), list(valid), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(
            f"unknown {what} {value!r}{hint}: valid names are {', '.join(repr(v) for v in valid)}"
        )
    return value


# --------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------


class SampleDataset(Dataset):
    """Base of all datasets: items are ``(image uint8 [3,H,W], label, sample_id)``.

    Attributes:
        labels: int64 ``[N]``, the labels used for training (possibly noisy).
        sample_ids: int64 ``[N]``, unique and stable across runs.
        clean_labels: int64 ``[N]`` ground truth in the same order, or ``None`` if unknown.
        num_classes: number of classes.
        class_names: one name per class.
        spec: JSON-ready description; ``load_dataset(spec)`` rebuilds this dataset.
    """

    labels: np.ndarray
    sample_ids: np.ndarray
    clean_labels: np.ndarray | None
    num_classes: int
    class_names: list[str]
    spec: dict[str, Any]

    def __init__(
        self,
        *,
        labels: Any,
        sample_ids: Any | None,
        clean_labels: Any | None,
        num_classes: int | None,
        class_names: Sequence[str] | None,
        spec: Mapping[str, Any],
    ) -> None:
        labels_arr = _as_int_array(labels, "labels")
        n = len(labels_arr)
        if sample_ids is None:
            ids = np.arange(n, dtype=np.int64)
        else:
            ids = _as_int_array(sample_ids, "sample_ids")
            if len(ids) != n:
                raise InputError(
                    f"sample_ids has {len(ids)} entries but labels has {n}: "
                    "give one sample id per sample"
                )
            uniq, counts = np.unique(ids, return_counts=True)
            if len(uniq) != n:
                raise InputError(
                    f"sample_ids must be unique, but {int((counts > 1).sum())} id(s) repeat "
                    f"(e.g. {_fmt_ids(uniq[counts > 1])}): give each sample its own id"
                )
        clean = None
        if clean_labels is not None:
            clean = _as_int_array(clean_labels, "clean_labels")
            if len(clean) != n:
                raise InputError(
                    f"clean_labels has {len(clean)} entries but labels has {n}: "
                    "give one clean label per sample, in the same order"
                )
        if class_names is not None:
            if isinstance(class_names, str):
                raise InputTypeError("class_names must be a list of names, not a single string")
            names = [str(c) for c in class_names]
            if num_classes is not None and num_classes != len(names):
                raise InputError(
                    f"num_classes={num_classes} but {len(names)} class_names were given: "
                    "pass one name per class"
                )
            num_classes = len(names)
        if num_classes is None:
            num_classes = _infer_num_classes(labels_arr, clean)
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
            raise InputTypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
        num_classes = int(num_classes)
        if num_classes < 1:
            raise InputError(
                f"num_classes must be at least 1, got {num_classes}: the dataset has no samples to "
                "infer classes from; give it samples (an empty dataset built in Python needs "
                "num_classes= or class_names=)"
            )
        if class_names is None:
            names = [str(c) for c in range(num_classes)]
        _check_label_range(labels_arr, num_classes, "labels")
        if clean is not None:
            _check_label_range(clean, num_classes, "clean_labels")
        self.labels = labels_arr
        self.sample_ids = ids
        self.clean_labels = clean
        self.num_classes = num_classes
        self.class_names = names
        self.spec = copy.deepcopy(dict(spec))
        self.spec.setdefault("steps", [])
        self._id_index: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _check_position(self, i: Any) -> int:
        if isinstance(i, torch.Tensor):
            i = i.item()
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"dataset index must be an int position, got {type(i).__name__}")
        n = len(self)
        i = int(i)
        if i < -n or i >= n:
            raise IndexError(f"position {i} out of range for a dataset of {n} samples")
        return i % n

    def image(self, i: int) -> np.ndarray:
        """The raw image at position ``i`` as uint8 ``[H, W, 3]`` (RGB)."""
        raise NotImplementedError(f"{type(self).__name__} must implement image(i)")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        i = self._check_position(i)
        img = torch.from_numpy(np.ascontiguousarray(self.image(i))).permute(2, 0, 1)
        return img.contiguous(), int(self.labels[i]), int(self.sample_ids[i])

    def positions(self, sample_ids: Any) -> np.ndarray:
        """Positions (int64) of the given sample ids, in the order given.

        Raises:
            ValueError: if any id is not in this dataset (the message lists some).
        """
        ids = np.asarray(sample_ids)
        if ids.size and ids.dtype.kind not in "iu":
            raise InputTypeError(f"sample ids must be integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if self._id_index is None:
            # Sorted copy + argsort: lookups are a vectorised searchsorted, no Python dict.
            order = np.argsort(self.sample_ids, kind="stable")
            self._id_index = (self.sample_ids[order], order)
        sorted_ids, order = self._id_index
        if len(sorted_ids) == 0:
            if ids.size:
                raise InputError(f"{ids.size} sample id(s) requested from an empty dataset")
            return np.zeros(ids.shape, dtype=np.int64)
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        found = sorted_ids[at] == ids
        if not found.all():
            missing = ids[~found]
            raise InputError(
                f"{missing.size} sample id(s) are not in this dataset (e.g. "
                f"{_fmt_ids(missing.ravel())}); valid ids are dataset.sample_ids "
                f"({len(sorted_ids)} ids from {int(sorted_ids[0])} to {int(sorted_ids[-1])})"
            )
        return order[at]

    def _relabeled(
        self, labels: np.ndarray, clean_labels: np.ndarray | None, step: dict[str, Any]
    ) -> SampleDataset:
        """Shallow copy sharing the images, with new labels and one more spec step."""
        new = copy.copy(self)
        labels = _as_int_array(labels, "labels")
        _check_label_range(labels, self.num_classes, "labels")
        if clean_labels is not None:
            clean_labels = _as_int_array(clean_labels, "clean_labels")
            _check_label_range(clean_labels, self.num_classes, "clean_labels")
        new.labels = labels
        new.clean_labels = clean_labels
        new.class_names = list(self.class_names)
        new.spec = copy.deepcopy(self.spec)
        new.spec["steps"] = [*new.spec.get("steps", []), step]
        return new

    def __repr__(self) -> str:
        noisy = ""
        if self.clean_labels is not None:
            noisy = f", noise_rate={float(np.mean(self.labels != self.clean_labels)):.4f}"
        return (
            f"{type(self).__name__}(n={len(self)}, num_classes={self.num_classes}, "
            f"source={self.spec.get('source')!r}{noisy})"
        )


# --------------------------------------------------------------------------------------
# arrays and .npz files
# --------------------------------------------------------------------------------------


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


_NPZ_OPTIONS = ("label_key", "image_key", "id_key", "clean_label_key", "class_names", "num_classes")


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
            _as_int_array(labels.reshape(-1), f"{p} array {label_key!r}",
                          fix="save it as integers (numpy: labels.astype(np.int64) for whole numbers); "
                              "classes are indices 0..K-1, not names")
        ids = z[id_key] if id_key in keys else None
        clean = z[clean_label_key] if clean_label_key and clean_label_key in keys else None
        if class_names is None and "class_names" in keys:
            class_names = [str(c) for c in z["class_names"].tolist()]
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


# --------------------------------------------------------------------------------------
# CIFAR-10-N label sets and user label files
# --------------------------------------------------------------------------------------


def _cifar10n_safe_globals() -> list[Any]:
    """The exact numpy callables/types needed to unpickle ``CIFAR-10_human.pt``.

    The file is a pickled dict of int64 numpy arrays. Only these are allowed, so a file that
    pickles anything else fails to load instead of running code.
    """
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    int64_dtype_type = type(np.dtype(np.int64))  # numpy.dtypes.Int64DType on numpy >= 1.25
    return [
        # The official file was written by numpy 1.x and names numpy.core.multiarray.
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        int64_dtype_type,
    ]


def _unpickling_reason(e: Exception) -> str:
    """The informative line of a torch.load error, without its advice to disable the guard."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[1]
        for cut in ("Check the documentation", "Please use"):
            reason = reason.split(cut, 1)[0]
        return " ".join(reason.split())
    first = text.splitlines()[0] if text else ""
    return f"{type(e).__name__}: {first}"


def load_cifar10n(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the official CIFAR-10-N ``CIFAR-10_human.pt`` label file.

    Returns a dict of int64 arrays of length 50,000 indexed by CIFAR-10 training index:
    ``clean_label``, ``aggre_label``, ``worse_label``, ``random_label1..3``.

    Loaded with ``torch.load(weights_only=True)`` and an explicit allow-list of the numpy
    types the file needs, so a tampered file cannot run code while it is read.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(
            f"CIFAR-10-N label file not found: {p}: download CIFAR-10_human.pt from "
            "https://github.com/UCSC-REAL/cifar-10-100n (data/) and pass its path"
        )
    try:
        with torch.serialization.safe_globals(_cifar10n_safe_globals()):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError/RuntimeError/...
        raise InputError(
            f"{p} is not a CIFAR-10-N label file that can be read safely (it must be a "
            "torch-saved dict of int64 numpy arrays; other pickled objects are refused, "
            f"never executed): {_unpickling_reason(e)}"
        ) from e
    if not isinstance(obj, dict):
        raise InputError(f"{p} holds a {type(obj).__name__}, expected a dict of label arrays")
    out: dict[str, np.ndarray] = {}
    lengths = set()
    for key, value in obj.items():
        if isinstance(value, torch.Tensor):
            value = value.numpy()
        if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iu":
            continue  # not a label array (the official file has none of these)
        out[str(key)] = value.astype(np.int64, copy=False)
        lengths.add(len(value))
    missing = [k for k in CIFAR10N_LABEL_SETS.values() if k not in out]
    if len(missing) == len(CIFAR10N_LABEL_SETS):
        raise InputError(
            f"{p} has none of the CIFAR-10-N label arrays ({', '.join(CIFAR10N_LABEL_SETS.values())}); "
            f"its keys are {', '.join(map(str, obj))}: is this CIFAR-10_human.pt?"
        )
    if len(lengths) > 1:
        raise InputError(f"{p}: label arrays have different lengths {sorted(lengths)}")
    return out


def cifar10n_labels(
    path: str | os.PathLike[str], label_set: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, clean_labels)`` of one CIFAR-10-N label set, indexed by training index.

    Args:
        path: the ``CIFAR-10_human.pt`` file.
        label_set: one of ``clean``, ``aggre``, ``worst``, ``random1``, ``random2``,
            ``random3``.
    """
    _check_choice(label_set, list(CIFAR10N_LABEL_SETS), "CIFAR-10-N label set")
    arrays = load_cifar10n(path)
    key = CIFAR10N_LABEL_SETS[label_set]
    for needed in (key, "clean_label"):
        if needed not in arrays:
            raise InputError(f"{path} lacks the {needed!r} array needed for label set {label_set!r}")
    return arrays[key].copy(), arrays["clean_label"].copy()


# A dense array indexed by sample id is built only up to this size; sparser ids (hashes,
# database keys) are joined through a sorted id list instead.
_DENSE_LABEL_IDS = 50_000_000


@dataclass(frozen=True)
class _LabelMap:
    """Labels of a CSV label file: ``ids`` sorted ascending, ``labels`` in the same order."""

    ids: np.ndarray
    labels: np.ndarray


def _read_label_csv(p: Path) -> _LabelMap:
    import pandas as pd

    df = pd.read_csv(p)
    missing_cols = [c for c in ("sample_id", "label") if c not in df.columns]
    if missing_cols:
        raise InputError(
            f"{p} lacks column(s) {', '.join(missing_cols)}; its columns are "
            f"{', '.join(map(str, df.columns))}: a label CSV needs a header 'sample_id,label'"
        )
    if df[["sample_id", "label"]].isna().any().any():
        raise InputError(f"{p} has empty sample_id or label cells: fill or drop those rows")
    ids = _as_int_array(df["sample_id"].to_numpy(), f"{p.name} sample_id column",
                        fix="write each sample id as a whole number")
    labels = _as_int_array(df["label"].to_numpy(), f"{p.name} label column",
                           fix="write each label as a class index 0..K-1 (whole numbers, not class names)")
    if ids.size and ids.min() < 0:
        raise InputError(f"{p} has negative sample ids (e.g. {_fmt_ids(ids[ids < 0])})")
    order = np.argsort(ids, kind="stable")
    ids, labels = ids[order], labels[order]
    dup = ids[1:] == ids[:-1]
    if dup.any():
        uniq = np.unique(ids[1:][dup])
        raise InputError(
            f"{p} lists {len(uniq)} sample id(s) more than once (e.g. "
            f"{_fmt_ids(uniq)}): keep one label per sample id"
        )
    if labels.size and labels.min() < 0:
        raise InputError(f"{p} has negative labels: labels must be class indices >= 0")
    return _LabelMap(ids, labels)


def _read_label_file(path: str | os.PathLike[str]) -> np.ndarray | _LabelMap:
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(f"label file not found: {p}: check the path")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        return _as_int_array(np.load(p, allow_pickle=False), f"label file {p.name}",
                             fix="save it as integers: np.save(path, labels.astype(np.int64))")
    if suffix == ".csv":
        return _read_label_csv(p)
    raise InputError(f"unsupported label file type {suffix!r} ({p}): use .csv or .npy")


def load_label_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a user label file into an int64 array indexed by sample id.

    Formats:
        * ``.csv`` with columns ``sample_id,label`` (any order, extra columns ignored);
          ids not in the file get ``-1`` (missing).
        * ``.npy``: a 1-D integer array of length N, entry ``k`` is the label of sample id
          ``k``.

    Use the result with :func:`with_label_set`, or call :func:`with_label_file`, which
    also takes CSV files whose ids are too large for an array indexed by id.
    """
    labels = _read_label_file(path)
    if isinstance(labels, np.ndarray):
        return labels
    size = int(labels.ids[-1]) + 1 if labels.ids.size else 0
    if size > max(_DENSE_LABEL_IDS, 4 * labels.ids.size):
        raise InputError(
            f"{path} has sample ids up to {size - 1:,} for {labels.ids.size:,} labels: too sparse "
            "for an array indexed by id; use with_label_file(dataset, path), which joins on the ids"
        )
    out = np.full(size, -1, dtype=np.int64)
    out[labels.ids] = labels.labels
    return out


def _gather_by_id(
    values_by_index: Any, dataset: SampleDataset, name: str
) -> np.ndarray:
    """``values_by_index[sample_id]`` for every sample; clear error for uncovered ids."""
    ids = dataset.sample_ids
    if isinstance(values_by_index, _LabelMap):
        known = values_by_index.ids
        pos = np.searchsorted(known, ids).clip(0, max(len(known) - 1, 0))
        covered = known[pos] == ids if len(known) else np.zeros(len(ids), dtype=bool)
        where = f"lists {len(known)} sample ids but"
    else:
        arr = _as_int_array(values_by_index, name)
        in_range = (ids >= 0) & (ids < len(arr))
        covered = in_range.copy()
        covered[in_range] = arr[ids[in_range]] != -1  # -1 marks an id a CSV did not list
        where = f"has {len(arr)} entries (ids 0..{len(arr) - 1}) but"
    if not covered.all():
        n_missing = int((~covered).sum())
        raise InputError(
            f"{name} {where} {n_missing} of the dataset's {len(ids)} sample ids have no label "
            f"there (e.g. {_fmt_ids(ids[~covered])}; the dataset's ids go up to {int(ids.max())}): "
            "a label file must cover every sample id"
        )
    out = values_by_index.labels[pos] if isinstance(values_by_index, _LabelMap) else arr[ids]
    bad = out >= dataset.num_classes
    if bad.any() or (out < 0).any():
        bad = (out < 0) | bad
        raise InputError(
            f"{name} gives {int(bad.sum())} sample(s) a label outside [0, {dataset.num_classes}) "
            f"(e.g. sample id {int(ids[bad][0])} -> {int(out[bad][0])}): labels must be class "
            f"indices of this dataset's {dataset.num_classes} classes"
        )
    return out


def with_label_set(
    dataset: SampleDataset,
    labels_by_index: Any,
    *,
    clean_labels_by_index: Any | None = None,
    name: str = "custom",
    origin: Mapping[str, Any] | None = None,
) -> SampleDataset:
    """A copy of ``dataset`` with labels taken from an array indexed by sample id.

    Args:
        dataset: any :class:`SampleDataset` (images are shared, not copied).
        labels_by_index: ``labels_by_index[k]`` is the new label of sample id ``k``; ``-1``
            marks a missing label. Must cover every sample id of the dataset (it may be
            longer, e.g. the 50,000 CIFAR-10-N labels for a 20,000-image subset).
        clean_labels_by_index: ground truth indexed the same way; if omitted the dataset's
            current ``clean_labels`` are kept.
        name: label-set name recorded in ``spec``.
        origin: how :func:`load_dataset` can reload these labels, e.g.
            ``{"op": "label_set", "name": "worst", "path": "/.../CIFAR-10_human.pt"}``;
            :func:`with_cifar10n` and :func:`with_label_file` fill it in. Without it the
            spec records the name only and cannot be rebuilt.
    """
    if not isinstance(dataset, SampleDataset):
        raise TypeError(f"dataset must be a SampleDataset, got {type(dataset).__name__}")
    labels = _gather_by_id(labels_by_index, dataset, f"label set {name!r}")
    clean = dataset.clean_labels
    if clean_labels_by_index is not None:
        clean = _gather_by_id(clean_labels_by_index, dataset, f"clean labels of {name!r}")
    step = dict(origin) if origin is not None else {"op": "labels", "name": str(name)}
    return dataset._relabeled(labels, clean, step)


def with_cifar10n(
    dataset: SampleDataset, path: str | os.PathLike[str], *, label_set: str = "worst"
) -> SampleDataset:
    """A copy of a CIFAR-10 training dataset with a CIFAR-10-N label set and clean labels.

    Joins on sample id = CIFAR-10 training index, so it works for any subset of the
    50,000 training images.
    """
    labels, clean = cifar10n_labels(path, label_set)
    origin = {"op": "label_set", "name": label_set, "path": str(Path(path).expanduser().resolve())}
    return with_label_set(
        dataset, labels, clean_labels_by_index=clean, name=label_set, origin=origin
    )


def with_label_file(dataset: SampleDataset, path: str | os.PathLike[str]) -> SampleDataset:
    """A copy of ``dataset`` trained on the labels of a user label file (see
    :func:`load_label_file`); known clean labels are kept."""
    labels = _read_label_file(path)
    p = Path(path).expanduser().resolve()
    return with_label_set(
        dataset, labels, name=p.name, origin={"op": "label_file", "path": str(p)}
    )


# --------------------------------------------------------------------------------------
# synthetic noise
# --------------------------------------------------------------------------------------


def inject_noise(
    labels: Any,
    *,
    rate: float,
    num_classes: int,
    kind: str = "symmetric",
    seed: int = 0,
) -> np.ndarray:
    """Flip exactly ``round(rate * N)`` randomly chosen labels; return the new labels.

    Args:
        labels: integer labels ``[N]`` in ``[0, num_classes)``.
        rate: fraction of samples to flip, in ``[0, 1]``.
        num_classes: number of classes (at least 2).
        kind: ``"symmetric"``: each flipped label becomes a uniformly random *different*
            class; ``"pair"``: class ``c`` becomes ``(c + 1) % num_classes``.
        seed: seed of the numpy Generator; the same seed gives the same flips.
    """
    _check_choice(kind, NOISE_KINDS, "noise kind")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise InputTypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise InputError(f"num_classes must be at least 2 to flip labels, got {num_classes}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0.0 <= rate <= 1.0:
        raise InputError(f"noise rate must be a fraction in [0, 1], got {rate!r} (e.g. 0.2 for 20%)")
    arr = _as_int_array(labels, "labels")
    _check_label_range(arr, int(num_classes), "labels")
    rng = np.random.default_rng(seed)
    n = len(arr)
    n_flip = int(round(rate * n))
    flip = rng.choice(n, size=n_flip, replace=False)
    out = arr.copy()
    if kind == "symmetric":
        # An offset in 1..C-1 modulo C reaches every other class with equal probability
        # and never the original one.
        offset = rng.integers(1, num_classes, size=n_flip)
        out[flip] = (arr[flip] + offset) % num_classes
    else:
        out[flip] = (arr[flip] + 1) % num_classes
    return out


def with_noise(
    dataset: SampleDataset, *, rate: float, kind: str = "symmetric", seed: int = 0
) -> SampleDataset:
    """A copy of ``dataset`` with synthetic label noise (see :func:`inject_noise`).

    The new ``clean_labels`` are the dataset's known clean labels, or else its current
    labels; ``spec`` records rate, kind and seed so the same noise can be rebuilt.
    """
    if not isinstance(dataset, SampleDataset):
        raise TypeError(f"dataset must be a SampleDataset, got {type(dataset).__name__}")
    noisy = inject_noise(
        dataset.labels, rate=rate, num_classes=dataset.num_classes, kind=kind, seed=seed
    )
    clean = dataset.clean_labels if dataset.clean_labels is not None else dataset.labels.copy()
    step = {"op": "noise", "rate": float(rate), "kind": kind, "seed": int(seed)}
    return dataset._relabeled(noisy, clean, step)


# --------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


class ImageFolderDataset(SampleDataset):
    """Images in ``root/<class name>/**/<file>``, one sub-folder per class.

    Class order is the sorted sub-folder names. Files (``.png .jpg .jpeg .bmp .webp .tif .tiff``, any
    case; hidden files and folders ignored) are sorted by their path relative to ``root``
    and ``sample_id`` is the position in that list, so ids stay the same whenever the same
    files are listed again. Every file is checked with PIL at construction, so a corrupt
    file is reported before training starts. Images are decoded to 8-bit RGB on access;
    16-bit grey files (PIL modes ``I;16``, ``I;16B``, ``I;16L``, and ``I``, read as holding a
    16-bit range: values clipped to 0..65535) keep their top 8 bits (``value >> 8``), and
    32-bit float files (mode ``F``) are refused, since they have no fixed value range.

    Args:
        root: the folder holding the class sub-folders.
        image_size: resize every image to ``image_size x image_size``; if None all images
            must already share one size.

    Attributes:
        paths: absolute path of each image, by position.
    """

    paths: list[Path]

    def __init__(self, root: str | os.PathLike[str], *, image_size: int | None = None) -> None:
        from PIL import Image

        root_p = Path(root).expanduser()
        if not root_p.is_dir():
            raise MissingFileError(
                f"image folder not found: {root_p}: pass a folder with one sub-folder per class"
            )
        if image_size is not None and (
            isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
        ):
            raise InputError(f"image_size (CLI: --image-size) must be a positive int or None, got {image_size!r}")
        classes = sorted(
            d.name for d in root_p.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        if not classes:
            raise InputError(
                f"{root_p} has no class sub-folders: put each class's images in "
                f"{root_p}/<class name>/"
            )
        entries: list[tuple[str, int]] = []
        for c, name in enumerate(classes):
            for f in (root_p / name).rglob("*"):
                rel = f.relative_to(root_p)
                if f.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(rel) and f.is_file():
                    entries.append((rel.as_posix(), c))
        if not entries:
            raise InputError(
                f"{root_p} has no images with extensions {', '.join(IMAGE_EXTENSIONS)} in its "
                f"class sub-folders ({', '.join(classes)})"
            )
        entries.sort()
        first_size: tuple[int, int] | None = None
        first_rel = ""
        for rel, _ in entries:
            f = root_p / rel
            try:
                with Image.open(f) as im:
                    size = im.size  # from the header; verify() below reads the file through
                    mode = im.mode
                    im.verify()
            except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
                raise InputError(
                    f"cannot read image {f}: {type(e).__name__}: {e}; remove or replace the "
                    "file before training"
                ) from e
            if mode == "F":  # refused here, not in the middle of training
                raise InputError(f"image {f} holds 32-bit floats, which have no fixed value range; "
                                 "save it as an 8- or 16-bit image")
            if image_size is None:
                if first_size is None:
                    first_size, first_rel = size, rel
                elif size != first_size:
                    raise InputError(
                        f"image {f} is {size[0]}x{size[1]} but {root_p / first_rel} is "
                        f"{first_size[0]}x{first_size[1]}: images of one dataset must share a "
                        "size; resize them all to NxN with --image-size N (Python: image_size=N)"
                    )
        self.root = root_p.resolve()
        self.image_size = image_size
        self.paths = [self.root / rel for rel, _ in entries]
        super().__init__(
            labels=np.array([c for _, c in entries], dtype=np.int64),
            sample_ids=np.arange(len(entries), dtype=np.int64),
            clean_labels=None,
            num_classes=len(classes),
            class_names=classes,
            spec={"source": "image_folder", "root": str(self.root), "image_size": image_size},
        )

    def image(self, i: int) -> np.ndarray:
        from PIL import Image

        i = self._check_position(i)
        f = self.paths[i]
        try:
            with Image.open(f) as im:
                im = _as_rgb8(im)
                if self.image_size is not None and im.size != (self.image_size, self.image_size):
                    im = im.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
                return np.array(im, dtype=np.uint8)  # a writable copy, safe for torch
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(
                f"cannot decode image {f} (sample id {int(self.sample_ids[i])}): {e}; it was "
                "readable when the dataset was built, check whether it changed"
            ) from e


def _as_rgb8(im: Any) -> Any:
    """An image as 8-bit RGB. 16-bit grey images (modes I;16*, and I, which PIL uses for
    them too) keep their top 8 bits: PIL's own convert("RGB") clips them to 255, which
    would make almost every pixel white. 32-bit float images have no fixed range to map
    from, so they are refused."""
    from PIL import Image

    if im.mode == "F":
        raise InputError("32-bit float images have no fixed value range; save them as 8- or 16-bit images")
    if im.mode.startswith("I"):
        wide = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        im = Image.fromarray((wide >> 8).astype(np.uint8), mode="L")
    return im.convert("RGB")


# --------------------------------------------------------------------------------------
# shipped sample data
# --------------------------------------------------------------------------------------


def sample_data_path() -> Path:
    """Path of the bundled ``cifar10n_subset.npz``, found through the installed package
    ``gwa_diag.sample_data`` (the top-level ``sample_data/`` folder of a checkout); it may
    not exist in an installation that left it out."""
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("gwa_diag.sample_data") / _SAMPLE_DATA_FILE))
    except ModuleNotFoundError:  # installed without it: name where it belongs
        return Path(__file__).resolve().parents[1] / "sample_data" / _SAMPLE_DATA_FILE


def _load_sample_split(split: str, label_set: str, path: str | None) -> ArrayDataset:
    _check_choice(split, ("train", "test"), "sample_data split")
    _check_choice(label_set, list(CIFAR10N_LABEL_SETS), "CIFAR-10-N label set")
    p = Path(path).expanduser() if path is not None else sample_data_path()
    if not p.is_file():
        raise MissingFileError(
            f"sample data not found at {p}: it ships inside the gwa-diag package "
            "(gwa_diag.sample_data); reinstall gwa-diag, or pass path= another file in its format"
        )
    spec = {"source": "sample_data", "split": split, "label_set": label_set,
            "path": str(p.resolve()) if path is not None else None}
    with np.load(p, allow_pickle=False) as z:
        names = [str(c) for c in z["class_names"].tolist()] if "class_names" in z else list(CIFAR10_CLASSES)
        if split == "train":
            return ArrayDataset(
                z["images"], z[CIFAR10N_LABEL_SETS[label_set]], sample_ids=z["sample_ids"],
                clean_labels=z["clean_label"], class_names=names, spec=spec,
            )
        test_ids = z["test_sample_ids"] if "test_sample_ids" in z else None
        # CIFAR-10 test labels are the ground truth, so they are also the clean labels.
        return ArrayDataset(
            z["test_images"], z["test_labels"], sample_ids=test_ids,
            clean_labels=z["test_labels"], class_names=names, spec=spec,
        )


def sample_data(
    *, label_set: str = "worst", path: str | os.PathLike[str] | None = None
) -> tuple[ArrayDataset, ArrayDataset]:
    """The shipped real CIFAR-10-N subset: ``(train, test)``.

    ``train`` holds 2,500 class-balanced CIFAR-10 training images (sample id = CIFAR-10
    training index) labelled with the chosen CIFAR-10-N label set, with the clean labels
    as ``clean_labels``; ``test`` holds 500 CIFAR-10 test images with their labels.

    Args:
        label_set: ``clean``, ``aggre``, ``worst`` (default, 40% noise in CIFAR-10-N),
            ``random1``, ``random2`` or ``random3``.
        path: another file in the same format (default: ``sample_data/cifar10n_subset.npz``).
    """
    p = None if path is None else str(path)
    return _load_sample_split("train", label_set, p), _load_sample_split("test", label_set, p)


# --------------------------------------------------------------------------------------
# rebuilding from a spec
# --------------------------------------------------------------------------------------

_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "npz": ("path", *_NPZ_OPTIONS),
    "cifar10": ("root", "train"),
    "image_folder": ("root", "image_size"),
    "sample_data": ("split", "label_set", "path"),
    "arrays": (),
}
_STEP_KEYS: dict[str, tuple[str, ...]] = {
    "label_set": ("name", "path"),
    "label_file": ("path",),
    "noise": ("rate", "kind", "seed"),
    "labels": ("name",),
}


def load_dataset(spec: Mapping[str, Any], *, with_labels: bool = True) -> SampleDataset:
    """Rebuild a dataset from its ``spec`` (as saved in a run's ``run.json``).

    A spec names a ``source`` (``npz``, ``cifar10``, ``image_folder``, ``sample_data``) with
    its options, and a list of label ``steps`` applied in order (``label_set``,
    ``label_file``, ``noise``). ``dataset.spec`` of any dataset made by this module has
    this form.

    Args:
        spec: the dataset's ``spec``.
        with_labels: apply the label steps. Pass False when only the images (found by
            sample id) are needed, e.g. to show them next to a run that already stores its
            labels: then label files need not be present and labels set from in-memory
            arrays are no obstacle; the result has the source's own labels.
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a dict (dataset.spec), got {type(spec).__name__}")
    if "source" not in spec:
        raise InputError(
            f"spec has no 'source' key (keys: {', '.join(map(str, spec))}); valid sources are "
            f"{', '.join(repr(s) for s in _SOURCE_KEYS if s != 'arrays')}"
        )
    source = _check_choice(spec["source"], list(_SOURCE_KEYS), "dataset source")
    opts = {k: v for k, v in spec.items() if k not in ("source", "steps")}
    _check_options(opts, _SOURCE_KEYS[source], f"{source!r} spec")
    steps = spec.get("steps") or []
    if not isinstance(steps, Sequence) or isinstance(steps, (str, bytes)):
        raise TypeError("spec['steps'] must be a list of step dicts")

    ds: SampleDataset
    if source == "npz":
        if "path" not in opts:
            raise InputError("an 'npz' spec needs 'path', the .npz file")
        path = opts.pop("path")
        ds = load_npz(path, **{k: v for k, v in opts.items()})
    elif source == "cifar10":
        if "root" not in opts:
            raise InputError("a 'cifar10' spec needs 'root', the folder with cifar-10-batches-py")
        ds = cifar10(opts["root"], train=bool(opts.get("train", True)))
    elif source == "image_folder":
        if "root" not in opts:
            raise InputError("an 'image_folder' spec needs 'root', the folder of class folders")
        ds = ImageFolderDataset(opts["root"], image_size=opts.get("image_size"))
    elif source == "sample_data":
        ds = _load_sample_split(
            opts.get("split", "train"), opts.get("label_set", "worst"), opts.get("path")
        )
    else:  # arrays
        raise InputError(
            "this dataset was built from in-memory arrays, which a spec cannot reload: save "
            "them with np.savez(path, images=..., labels=..., sample_ids=...) and use load_npz"
        )

    for step in steps if with_labels else []:
        if not isinstance(step, Mapping) or "op" not in step:
            raise InputError(f"each spec step must be a dict with an 'op' key, got {step!r}")
        op = _check_choice(step["op"], list(_STEP_KEYS), "spec step op")
        args = {k: v for k, v in step.items() if k != "op"}
        _check_options(args, _STEP_KEYS[op], f"{op!r} step")
        if op == "label_set":
            ds = with_cifar10n(ds, args["path"], label_set=args["name"])
        elif op == "label_file":
            ds = with_label_file(ds, args["path"])
        elif op == "noise":
            ds = with_noise(
                ds, rate=args["rate"], kind=args.get("kind", "symmetric"), seed=args.get("seed", 0)
            )
        else:
            raise InputError(
                f"the labels of this dataset were set from in-memory arrays (label set "
                f"{args.get('name')!r}), which a spec cannot reload: use with_cifar10n or "
                "with_label_file, or pass origin= to with_label_set; to load only the images "
                "pass with_labels=False"
            )
    return ds
