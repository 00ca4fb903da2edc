"""Leaving samples out of training: an exclusion file (CSV with a ``sample_id`` column, or a
``.npy`` of ids) applied to a dataset as one more spec step.

Owns :func:`without_samples`, the subset it makes (:class:`SampleSubset`, which shares the
images of the dataset it narrows) and the refusals of an exclusion that cannot be what was
meant: ids the dataset does not have, or one that leaves no samples or a single class.
The step records the file's path, SHA-256 and count, so :func:`~.spec.load_dataset` rebuilds
the same subset and refuses a file changed since. Imports numpy, pandas (for CSV files),
torch, :mod:`gwa_diag.checks` and :mod:`.base`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.store import file_sha256
from gwa_diag.training.data.base import SampleDataset, as_int_array, format_ids

__all__ = ["SampleSubset", "load_exclusion_file", "without_samples"]


def load_exclusion_file(path: str | os.PathLike[str]) -> np.ndarray:
    """The sample ids an exclusion file lists, sorted and unique (int64).

    Formats:
        * ``.csv`` with a ``sample_id`` column (other columns, e.g. ``path`` and ``reason``
          of ``gwa-diag labels``' ``FILE.excluded.csv``, are ignored); a header alone is an
          empty exclusion.
        * ``.npy``: a 1-D integer array of sample ids.

    A repeated id is harmless (the sample is left out once).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingFileError(f"exclusion file not found: {p}: check the path (gwa-diag labels writes "
                               "FILE.excluded.csv next to FILE.csv)")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            stored = np.load(p, allow_pickle=False)
        except (ValueError, EOFError) as e:
            raise InputError(f"cannot read {p} as an .npy array ({type(e).__name__}: {e}): save it with "
                             "np.save(path, ids.astype(np.int64))") from e
        ids = as_int_array(stored, f"exclusion file {p.name}", fix="save the ids as integers: "
                           "np.save(path, ids.astype(np.int64))")
    elif suffix == ".csv":
        import pandas as pd

        try:
            df = pd.read_csv(p)
        except pd.errors.EmptyDataError:
            raise InputError(f"{p} is empty: an exclusion CSV needs at least the header line 'sample_id'") from None
        except ValueError as e:  # ParserError, UnicodeDecodeError
            raise InputError(f"cannot read {p} as a CSV file ({type(e).__name__}: {e}): write it as UTF-8 text "
                             "with a header line 'sample_id'") from e
        if "sample_id" not in df.columns:
            raise InputError(f"{p} has no sample_id column (its columns are {', '.join(map(str, df.columns))}): "
                             "an exclusion CSV needs a header with 'sample_id'")
        if df["sample_id"].isna().any():
            raise InputError(f"{p} has empty sample_id cells: fill or drop those rows")
        ids = as_int_array(df["sample_id"].to_numpy(), f"{p.name} sample_id column",
                           fix="write each sample id as a whole number")
    else:
        raise InputError(f"unsupported exclusion file type {suffix!r} ({p}): use .csv (a sample_id column) or .npy")
    return np.unique(ids)


class SampleSubset(SampleDataset):
    """The samples of ``base`` at ``positions`` (in that order), sharing its images.

    Labels, clean labels and ids are those of ``base`` at the positions; in-memory images
    (``images_nchw``) are gathered once so the engine keeps its fast on-device path.
    """

    def __init__(self, base: SampleDataset, positions: Any, step: Mapping[str, Any]) -> None:
        pos = as_int_array(positions, "positions")
        spec = dict(base.spec)
        spec["steps"] = [*base.spec.get("steps", []), dict(step)]
        super().__init__(
            labels=base.labels[pos],
            sample_ids=base.sample_ids[pos],
            clean_labels=None if base.clean_labels is None else base.clean_labels[pos],
            num_classes=base.num_classes,
            class_names=base.class_names,
            spec=spec,
        )
        self.base = base
        self.positions = pos
        images = getattr(base, "images_nchw", None)
        if images is not None:
            self.images_nchw = images[torch.from_numpy(pos)]

    def image(self, i: int) -> np.ndarray:
        return self.base.image(int(self.positions[self._check_position(i)]))

    def relative_paths(self) -> list[str] | None:
        paths = getattr(self.base, "relative_paths", lambda: None)()
        return None if paths is None else [paths[int(p)] for p in self.positions]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        if getattr(self, "images_nchw", None) is None:
            return super().__getitem__(i)
        i = self._check_position(i)
        return self.images_nchw[i], int(self.labels[i]), int(self.sample_ids[i])


def without_samples(dataset: SampleDataset, path: str | os.PathLike[str]) -> SampleDataset:
    """A copy of ``dataset`` without the samples an exclusion file lists
    (:func:`load_exclusion_file`); the spec records ``{"op": "exclude", "path", "sha256",
    "count"}`` so :func:`~.spec.load_dataset` rebuilds it.

    Raises:
        InputError: ids the dataset does not have (the count and a few of them: an
            exclusion made for other data would otherwise leave out the wrong samples), or
            an exclusion that leaves no samples or fewer than two classes.
        MissingFileError: the file does not exist.
    """
    p = Path(path).expanduser().resolve()
    excluded = load_exclusion_file(p)
    ids = np.asarray(dataset.sample_ids, dtype=np.int64)
    unknown = excluded[~np.isin(excluded, ids)]
    if unknown.size:
        raise InputError(
            f"exclusion file {p} lists {unknown.size} sample id(s) this dataset does not have (e.g. "
            f"{format_ids(unknown)}; its ids go from {int(ids.min()) if ids.size else 0} to "
            f"{int(ids.max()) if ids.size else 0}): was it written for other data? Pass the data the "
            "excluded samples come from, or remove those ids"
        )
    keep = np.flatnonzero(~np.isin(ids, excluded))
    if keep.size == 0:
        raise InputError(f"exclusion file {p} leaves out all {len(ids)} samples: nothing would be left to train on")
    remaining = np.unique(dataset.labels[keep])
    if remaining.size < 2:
        raise InputError(
            f"exclusion file {p} leaves {keep.size} samples, all of class "
            f"{dataset.class_names[int(remaining[0])]!r}: a classifier "
            "needs at least two classes; exclude fewer samples"
        )
    step = {"op": "exclude", "path": str(p), "sha256": file_sha256(p), "count": int(excluded.size)}
    return SampleSubset(dataset, keep, step)
