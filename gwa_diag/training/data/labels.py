"""Labels from outside the dataset: user label files (CSV ``sample_id,label`` or ``.npy``)
and any label array, joined onto a dataset by sample id.

Owns the join and its refusals (an uncovered sample id, a label outside the dataset's
classes, a repeated id), so a label file can never silently label the wrong samples.
Imports numpy, pandas (for CSV files), :mod:`gwa_diag.checks` and :mod:`.base`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.training.data.base import SampleDataset, as_int_array, format_ids

__all__ = ["load_label_file", "with_label_file", "with_label_set"]

_DENSE_LABEL_IDS = 50_000_000


@dataclass(frozen=True)
class _LabelMap:
    """Labels of a CSV label file: ``ids`` sorted ascending, ``labels`` in the same order."""

    ids: np.ndarray
    labels: np.ndarray


def _read_label_csv(p: Path) -> _LabelMap:
    import pandas as pd

    try:
        df = pd.read_csv(p)
    except ValueError as e:  # pandas' EmptyDataError and ParserError, UnicodeDecodeError
        raise InputError(
            f"cannot read {p} as a CSV file ({type(e).__name__}: {e}): write it as UTF-8 text "
            "with a header line 'sample_id,label'"
        ) from e
    missing_cols = [c for c in ("sample_id", "label") if c not in df.columns]
    if missing_cols:
        raise InputError(
            f"{p} lacks column(s) {', '.join(missing_cols)}; its columns are "
            f"{', '.join(map(str, df.columns))}: a label CSV needs a header 'sample_id,label'"
        )
    if df[["sample_id", "label"]].isna().any().any():
        raise InputError(f"{p} has empty sample_id or label cells: fill or drop those rows")
    ids = as_int_array(df["sample_id"].to_numpy(), f"{p.name} sample_id column",
                        fix="write each sample id as a whole number")
    labels = as_int_array(df["label"].to_numpy(), f"{p.name} label column",
                           fix="write each label as a class index 0..K-1 (whole numbers, not class names)")
    if ids.size and ids.min() < 0:
        raise InputError(f"{p} has negative sample ids (e.g. {format_ids(ids[ids < 0])})")
    order = np.argsort(ids, kind="stable")
    ids, labels = ids[order], labels[order]
    dup = ids[1:] == ids[:-1]
    if dup.any():
        uniq = np.unique(ids[1:][dup])
        raise InputError(
            f"{p} lists {len(uniq)} sample id(s) more than once (e.g. "
            f"{format_ids(uniq)}): keep one label per sample id"
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
        try:
            stored = np.load(p, allow_pickle=False)
        except (ValueError, EOFError) as e:  # no .npy header, or pickled objects (refused)
            raise InputError(
                f"cannot read {p} as an .npy array ({type(e).__name__}: {e}): save it with "
                "np.save(path, labels.astype(np.int64))"
            ) from e
        return as_int_array(stored, f"label file {p.name}",
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
        arr = as_int_array(values_by_index, name)
        in_range = (ids >= 0) & (ids < len(arr))
        covered = in_range.copy()
        covered[in_range] = arr[ids[in_range]] != -1  # -1 marks an id a CSV did not list
        where = f"has {len(arr)} entries (ids 0..{len(arr) - 1}) but"
    if not covered.all():
        n_missing = int((~covered).sum())
        raise InputError(
            f"{name} {where} {n_missing} of the dataset's {len(ids)} sample ids have no label "
            f"there (e.g. {format_ids(ids[~covered])}; the dataset's ids go up to {int(ids.max())}): "
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
    labels = _gather_by_id(labels_by_index, dataset, f"label set {name!r}")
    clean = dataset.clean_labels
    if clean_labels_by_index is not None:
        clean = _gather_by_id(clean_labels_by_index, dataset, f"clean labels of {name!r}")
    step = dict(origin) if origin is not None else {"op": "labels", "name": str(name)}
    return dataset.relabeled(labels, clean, step)



def with_label_file(dataset: SampleDataset, path: str | os.PathLike[str]) -> SampleDataset:
    """A copy of ``dataset`` trained on the labels of a user label file (see
    :func:`load_label_file`); known clean labels are kept."""
    labels = _read_label_file(path)
    p = Path(path).expanduser().resolve()
    return with_label_set(
        dataset, labels, name=p.name, origin={"op": "label_file", "path": str(p)}
    )
