"""Manifest CSV files: one row per image, ``path,label`` with an optional ``split`` and
``sample_id``.

Owns the reading and checking of the CSV (columns, empty cells, labels as names or
indices, ids, duplicate and missing files, split values), the choice of rows for a split,
and the ids that stay the same whichever split is read. Images are checked and decoded as
in an image folder (:class:`~gwa_diag.training.data.folders.ImageFilesDataset`). Imports
numpy, pandas, :mod:`gwa_diag.checks`, :mod:`.base` and :mod:`.folders`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gwa_diag.checks import InputError, MissingFileError, check_choice
from gwa_diag.training.data.base import format_ids
from gwa_diag.training.data.folders import ImageFilesDataset, check_image_files, check_image_size

__all__ = ["MANIFEST_COLUMNS", "SPLITS", "ManifestDataset", "held_out_split", "load_manifest", "manifest_splits"]

#: Columns a manifest must have; ``split`` and ``sample_id`` are optional.
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label")
#: Valid values of a manifest's ``split`` column.
SPLITS: tuple[str, ...] = ("train", "val", "test")

_WHOLE = re.compile(r"[+-]?\d+")
_SHOWN = 5  # files or values named in a message


def _few(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (", ..." if len(items) > _SHOWN else "")


def _read(csv: Path) -> Any:
    """The CSV as strings (no type guessing: a label ``007`` or a class named ``NA`` stays
    what was written), stripped of surrounding spaces."""
    import pandas as pd

    try:
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True)
    except ValueError as e:  # pandas' EmptyDataError and ParserError, UnicodeDecodeError
        raise InputError(
            f"cannot read {csv} as a CSV file ({type(e).__name__}: {e}): write it as UTF-8 text "
            "with a header line 'path,label' (optional columns: split, sample_id)"
        ) from e
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(
            f"{csv} lacks column(s) {', '.join(missing)}; its columns are "
            f"{', '.join(map(str, frame.columns)) or '(none)'}: a manifest needs a header 'path,label' "
            "(optional columns: split, sample_id)"
        )
    if frame.empty:
        raise InputError(f"{csv} has a header but no rows: list one image per row")
    frame = frame.apply(lambda col: col.str.strip())
    for col in (c for c in ("path", "label", "split", "sample_id") if c in frame.columns):
        empty = np.flatnonzero((frame[col] == "").to_numpy())
        if empty.size:
            # +2: the header is line 1, and people count lines from 1.
            lines = [str(int(r) + 2) for r in empty]
            raise InputError(
                f"{csv} has {empty.size} empty {col!r} cell(s) (line(s) {_few(lines)}): fill them "
                "or drop those rows"
            )
    return frame


def _sample_ids(frame: Any, csv: Path) -> np.ndarray:
    """The ``sample_id`` column, or each row's position among all data rows (every split
    counted, so an id means the same row whichever split is read)."""
    if "sample_id" not in frame.columns:
        return np.arange(len(frame), dtype=np.int64)
    raw = frame["sample_id"].to_numpy(dtype=str)
    bad = [v for v in raw if not _WHOLE.fullmatch(v) or int(v) < 0]
    if bad:
        raise InputError(
            f"{csv} column 'sample_id' must hold whole numbers >= 0, got {_few([repr(v) for v in bad])}: "
            "fix those ids, or drop the column to number the rows 0, 1, 2, ..."
        )
    ids = np.array([int(v) for v in raw], dtype=np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise InputError(
            f"{csv} column 'sample_id' repeats {int((counts > 1).sum())} id(s) (e.g. "
            f"{format_ids(uniq[counts > 1])}): give each row its own id"
        )
    return ids


def _class_labels(
    labels: np.ndarray, csv: Path, class_names: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """(class indices, class names) of the label column: whole numbers are indices, any
    other value makes every label a class name."""
    if all(_WHOLE.fullmatch(v) for v in labels):
        idx = np.array([int(v) for v in labels], dtype=np.int64)
        if (idx < 0).any():
            raise InputError(
                f"{csv} column 'label' has negative values (e.g. {format_ids(idx[idx < 0])}): labels "
                "are class indices 0..K-1 or class names"
            )
        if class_names is not None:
            names = [str(c) for c in class_names]
            if idx.max() >= len(names):
                raise InputError(
                    f"{csv} column 'label' has class indices up to {int(idx.max())} but the training "
                    f"set has {len(names)} classes ({_few(names)}): use indices 0..{len(names) - 1}"
                )
            return idx, names
        return idx, [str(c) for c in range(int(idx.max()) + 1)]
    names = sorted(set(labels.tolist())) if class_names is None else [str(c) for c in class_names]
    position = {name: i for i, name in enumerate(names)}
    unknown = sorted({v for v in labels if v not in position})
    if unknown:
        raise InputError(
            f"{csv} names class(es) {_few([repr(v) for v in unknown])} that the training set lacks "
            f"(its classes: {_few([repr(v) for v in names])}): relabel or drop those rows"
        )
    return np.array([position[v] for v in labels], dtype=np.int64), names


def _files(paths: np.ndarray, base: Path, csv: Path) -> list[Path]:
    """Absolute, normalised file of each path (relative to ``base``, the CSV's folder); a
    file listed twice is refused (also across splits: an image in both the train and the
    val rows would be evaluated on what it trained on)."""
    files = [Path(os.path.normpath(base / p)) for p in paths]  # absolute paths stay as they are
    seen: dict[Path, str] = {}
    dups: list[str] = []
    for f, p in zip(files, paths):
        if f in seen:
            dups.append(p if p == seen[f] else f"{p} (= {seen[f]})")
        else:
            seen[f] = p
    if dups:
        raise InputError(f"{csv} lists {len(dups)} file(s) twice: {_few(dups)}: keep one row per image")
    return files


def _check_exist(files: list[Path], written: np.ndarray, base: Path, csv: Path) -> None:
    missing = [str(p) for f, p in zip(files, written) if not f.is_file()]
    if missing:
        raise MissingFileError(
            f"{len(missing)} of the {len(files)} files {csv} lists do not exist (e.g. {_few(missing)}; "
            f"paths are relative to {base}): fix the paths or drop those rows"
        )


class ManifestDataset(ImageFilesDataset):
    """Images listed in a CSV file, one row per image.

    Columns: ``path`` (the image file, relative to the CSV's folder; an absolute path, or
    one that leads out of that folder with ``..``, is read as long as the file exists) and
    ``label``; optional ``split`` (``train``, ``val`` or ``test``) and ``sample_id`` (whole
    numbers >= 0, unique). Labels are **class indices** 0..K-1 when every label is a whole
    number, else **class names**: the classes are then the sorted unique names over all rows
    (every split, so train and evaluation rows share one class order, as an image folder's
    sorted sub-folders do). Sample id: the ``sample_id`` column, else the row's position
    among all data rows (0-based, other splits' rows counted), so ids stay the same
    whichever split is read. Images are checked and decoded as in an image folder
    (:class:`~gwa_diag.training.data.folders.ImageFilesDataset`: same formats, every file
    opened once before training). :meth:`relative_paths` gives each row's path as written in
    the CSV.

    Refused with :class:`~gwa_diag.checks.InputError`: missing columns, empty cells, a
    ``split`` value other than train/val/test, files listed twice or missing, repeated
    sample ids, and (without ``class_names``) labels of one class only.

    Args:
        path: the CSV file.
        split: read only the rows of this split (needs a ``split`` column); None reads
            every row.
        image_size: resize every image to ``image_size x image_size``; if None all images
            must already share one size.
        class_names: the classes to map the labels onto (an evaluation manifest onto the
            training set's classes): names must be among them, indices below their count.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        split: str | None = None,
        image_size: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        csv = Path(path).expanduser()
        if not csv.is_file():
            raise MissingFileError(f"manifest not found: {csv}: pass a CSV file with columns path,label")
        check_image_size(image_size)
        if split is not None:
            check_choice(split, SPLITS, "manifest split")
        frame = _read(csv)
        splits = _check_splits(frame, csv)
        if split is not None:
            if splits is None:
                raise InputError(f"{csv} has no 'split' column, so it has no {split!r} rows: read every row "
                                 "(split=None), or add a split column")
        ids = _sample_ids(frame, csv)
        label_idx, names = _class_labels(frame["label"].to_numpy(dtype=str), csv, class_names)
        if class_names is None and len(names) < 2:
            raise InputError(
                f"every row of {csv} has class {names[0]!r}: a classifier needs at least two classes; "
                "list the images of the other classes too"
            )
        keep = np.ones(len(frame), dtype=bool) if split is None else splits == split
        if not keep.any():
            raise InputError(f"{csv} has no rows with split {split!r} (its splits: "
                             f"{', '.join(s for s in SPLITS if s in set(splits.tolist()))})")
        base = csv.resolve().parent
        every = frame["path"].to_numpy(dtype=str)
        files = [f for f, k in zip(_files(every, base, csv), keep) if k]
        written = every[keep]
        _check_exist(files, written, base, csv)  # only the rows read: others may live elsewhere
        check_image_files(files, image_size=image_size)
        self.manifest = csv.resolve()
        self.split = split
        self._set_files(files, [p.replace(os.sep, "/") for p in written], image_size)
        super().__init__(
            labels=label_idx[keep],
            sample_ids=ids[keep],
            clean_labels=None,
            num_classes=len(names),
            class_names=names,
            spec={
                "source": "manifest", "path": str(self.manifest), "split": split, "image_size": image_size,
                "class_names": None if class_names is None else names,
            },
        )


def _check_splits(frame: Any, csv: Path) -> np.ndarray | None:
    """The ``split`` column (None without one); any value but train/val/test is refused."""
    if "split" not in frame.columns:
        return None
    splits = frame["split"].to_numpy(dtype=str)
    unknown = sorted(set(splits.tolist()) - set(SPLITS))
    if unknown:
        raise InputError(
            f"{csv} column 'split' has value(s) {_few([repr(v) for v in unknown])}; valid: "
            f"{', '.join(map(repr, SPLITS))}: rename them (e.g. validation -> val)"
        )
    return splits


def manifest_splits(path: str | os.PathLike[str]) -> tuple[str, ...] | None:
    """The ``split`` values a manifest uses, in :data:`SPLITS` order; None when it has no
    ``split`` column. Unknown values are refused, naming the valid ones."""
    csv = Path(path).expanduser()
    if not csv.is_file():
        raise MissingFileError(f"manifest not found: {csv}: pass a CSV file with columns path,label")
    splits = _check_splits(_read(csv), csv)
    return None if splits is None else tuple(s for s in SPLITS if s in set(splits.tolist()))


def held_out_split(splits: Sequence[str]) -> str | None:
    """The split that evaluates: ``val``, else ``test``, else None."""
    return next((s for s in ("val", "test") if s in splits), None)


def load_manifest(
    path: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    with_eval: bool = True,
) -> tuple[ManifestDataset, ManifestDataset | None]:
    """(training set, evaluation set) of a manifest, as ``gwa-diag train --data manifest``
    reads it.

    Without a ``split`` column every row trains and there is no evaluation set. With one,
    the ``train`` rows train, and the ``val`` rows (else the ``test`` rows; None when it has
    neither) are the evaluation set. ``with_eval=False`` skips the evaluation rows (their
    files are then not opened), for an evaluation set given separately.
    """
    splits = manifest_splits(path)
    if splits is None:
        return ManifestDataset(path, image_size=image_size), None
    if "train" not in splits:
        raise InputError(f"{path} has a 'split' column but no 'train' rows (its splits: "
                         f"{', '.join(splits)}): mark the rows to train on with split 'train'")
    train = ManifestDataset(path, split="train", image_size=image_size)
    held_out = held_out_split(splits)
    if not with_eval or held_out is None:
        return train, None
    return train, ManifestDataset(path, split=held_out, image_size=image_size, class_names=train.class_names)
