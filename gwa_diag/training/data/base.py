"""The dataset contract every source follows, and the checks of labels and ids they share.

:class:`SampleDataset` owns what makes a dataset usable here: item ``i`` is an uint8 image
``[3, H, W]`` (RGB, not normalised: the engine normalises and augments whole batches on the
device), its training label and its stable sample id; ``labels``, ``sample_ids``,
``clean_labels``, ``num_classes``, ``class_names``, a ``spec`` that rebuilds it and,
for datasets read from files, :meth:`~SampleDataset.relative_paths`. The
label and id checks below are used by every source module of this package. Imports numpy,
torch and :mod:`gwa_diag.checks` only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gwa_diag.checks import InputError, InputTypeError

__all__ = ["SampleDataset", "as_int_array", "check_label_range", "format_ids"]


def format_ids(ids: np.ndarray, limit: int = 5) -> str:
    """The first ``limit`` ids for a message (``1, 2, 3, ...``)."""
    shown = ", ".join(str(int(v)) for v in ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def as_int_array(values: Any, name: str, fix: str | None = None) -> np.ndarray:
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


def check_label_range(labels: np.ndarray, num_classes: int, name: str) -> None:
    """:class:`InputError` for labels outside ``[0, num_classes)``, with the fix that fits
    (negative labels are no class; too large ones may mean more classes)."""
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
            f"(e.g. {format_ids(labels[bad])}): labels must be class indices 0..{num_classes - 1}; {hint}"
        )


def _infer_num_classes(labels: np.ndarray, clean_labels: np.ndarray | None) -> int:
    top = int(labels.max()) if labels.size else -1
    if clean_labels is not None and clean_labels.size:
        top = max(top, int(clean_labels.max()))
    return top + 1



class SampleDataset(Dataset):
    """Base of all datasets: items are ``(image uint8 [3,H,W], label, sample_id)``.

    Attributes:
        labels: int64 ``[N]``, the labels used for training (possibly noisy).
        sample_ids: int64 ``[N]``, unique and stable across runs.
        clean_labels: int64 ``[N]`` ground truth in the same order, or ``None`` if unknown.
        num_classes: number of classes.
        class_names: one name per class.
        spec: JSON-ready description; ``load_dataset(spec)`` rebuilds this dataset.

    Datasets read from files also give each sample's path: :meth:`relative_paths`.
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
        labels_arr = as_int_array(labels, "labels")
        n = len(labels_arr)
        if sample_ids is None:
            ids = np.arange(n, dtype=np.int64)
        else:
            ids = as_int_array(sample_ids, "sample_ids")
            if len(ids) != n:
                raise InputError(
                    f"sample_ids has {len(ids)} entries but labels has {n}: "
                    "give one sample id per sample"
                )
            uniq, counts = np.unique(ids, return_counts=True)
            if len(uniq) != n:
                raise InputError(
                    f"sample_ids must be unique, but {int((counts > 1).sum())} id(s) repeat "
                    f"(e.g. {format_ids(uniq[counts > 1])}): give each sample its own id"
                )
        clean = None
        if clean_labels is not None:
            clean = as_int_array(clean_labels, "clean_labels")
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
        check_label_range(labels_arr, num_classes, "labels")
        if clean is not None:
            check_label_range(clean, num_classes, "clean_labels")
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

    def relative_paths(self) -> list[str] | None:
        """Each sample's file path relative to the dataset's root, by position (aligned with
        ``sample_ids``), for datasets read from files (image folders, manifests); None for
        the others. Written to labels.parquet's ``path`` column, so a labeling team can find
        each flagged file."""
        return None

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
                f"{format_ids(missing.ravel())}); valid ids are dataset.sample_ids "
                f"({len(sorted_ids)} ids from {int(sorted_ids[0])} to {int(sorted_ids[-1])})"
            )
        return order[at]

    def relabeled(
        self, labels: np.ndarray, clean_labels: np.ndarray | None, step: dict[str, Any]
    ) -> SampleDataset:
        """Shallow copy sharing the images, with new labels and one more spec ``step`` (how
        :func:`~gwa_diag.training.data.load_dataset` redoes the change)."""
        new = copy.copy(self)
        labels = as_int_array(labels, "labels")
        check_label_range(labels, self.num_classes, "labels")
        if clean_labels is not None:
            clean_labels = as_int_array(clean_labels, "clean_labels")
            check_label_range(clean_labels, self.num_classes, "clean_labels")
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

