"""Hugging Face ``datasets``: a dataset saved with ``save_to_disk`` (a ``Dataset``, or a
``DatasetDict`` read by split), a Hub name read from the local cache through
``datasets.load_dataset(name, split=...)``, or a ``datasets.Dataset`` object.

Owns the choice of the image and label columns (by feature type, ``datasets.Image`` and
``datasets.ClassLabel``, or named), the sample ids (an id column, else the row index), the
lazy decoding of one image per item (so the dataset works in DataLoader workers) and the
dataset's fingerprint, recorded in the spec so that another dataset at the same path is
refused when the spec is loaded again. ``datasets`` is imported only when a dataset is
built (install it with ``pip install "gwa-diag[hf]"``). Imports numpy, PIL,
:mod:`gwa_diag.checks`, :mod:`.base` and :mod:`.folders`.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from gwa_diag.checks import InputError
from gwa_diag.training.data.base import SampleDataset, as_int_array
from gwa_diag.training.data.folders import _as_rgb8, check_image_size

__all__ = ["HFImageDataset", "hf_eval_split", "is_saved_hf_dataset", "require_datasets"]

INSTALL = 'pip install "gwa-diag[hf]"'
# Files save_to_disk writes: a Dataset (state.json, dataset_info.json) or a DatasetDict (dataset_dict.json).
_SAVED_MARKERS = ("state.json", "dataset_dict.json")
# Images opened before training to check their size (evenly spaced; not every image is decoded).
_CHECKED_IMAGES = 16


def require_datasets() -> Any:
    """The ``datasets`` module, or :class:`InputError` saying how to install it."""
    try:
        import datasets
    except ImportError as e:
        raise InputError(f"Hugging Face datasets (--data hf) need the 'datasets' package: {INSTALL}") from e
    return datasets


def is_saved_hf_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    p = Path(path).expanduser()
    return p.is_dir() and any((p / m).is_file() for m in _SAVED_MARKERS)


def _fingerprint(ds: Any) -> str:
    """``Dataset._fingerprint``, else a hash of its cache files' names, sizes and times."""
    fp = getattr(ds, "_fingerprint", None)
    if fp:
        return str(fp)
    h = hashlib.sha256()
    for f in sorted(c.get("filename", "") for c in getattr(ds, "cache_files", []) or []):
        st = os.stat(f)
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _is_streaming(ds: Any, datasets: Any) -> bool:
    kinds = tuple(getattr(datasets, k) for k in ("IterableDataset", "IterableDatasetDict") if hasattr(datasets, k))
    return bool(kinds) and isinstance(ds, kinds)


def _refuse_streaming(what: str) -> InputError:
    return InputError(
        f"{what} is a streaming dataset (IterableDataset), which cannot be read by position: load it "
        "without streaming=True (datasets.load_dataset(name, split=...)), or write it out with "
        "Dataset.from_generator(...).save_to_disk(PATH) and pass PATH"
    )


def _open(source: str | os.PathLike[str], split: str | None, datasets: Any) -> tuple[Any, str, str]:
    """(the loaded Dataset or DatasetDict, the path or name to record, a description)."""
    p = Path(source).expanduser()
    if is_saved_hf_dataset(p):
        where = str(p.resolve())
        return datasets.load_from_disk(where), where, where
    name = where = str(p.resolve()) if p.exists() else str(source)
    try:
        loaded = datasets.load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types (network, missing files, unknown names)
        raise InputError(
            f"cannot load the Hugging Face dataset {name!r}{f' split {split!r}' if split else ''}: "
            f"{type(e).__name__}: {e}. Pass a folder written by save_to_disk, or a Hub name that is in the "
            "local cache (offline: set HF_DATASETS_OFFLINE=1)"
        ) from e
    return loaded, where, name


def _choose(features: Any, named: str | None, kind: Any, what: str, option: str, desc: str) -> str:
    """The column named (which must exist), else the one column whose feature is ``kind``."""
    if named is not None:
        if named not in features:
            raise InputError(f"{desc} has no column {named!r} ({option}); its columns: {', '.join(features)}")
        return named
    found = [c for c, f in features.items() if isinstance(f, kind)]
    if len(found) == 1:
        return found[0]
    columns = ", ".join(f"{c} ({type(f).__name__})" for c, f in features.items())
    if not found:
        raise InputError(f"{desc} has no {kind.__name__} column for the {what} (its columns: {columns}): "
                         f"name the {what} column with {option} COLUMN")
    raise InputError(f"{desc} has {len(found)} {kind.__name__} columns ({', '.join(found)}): pick the {what} "
                     f"column with {option} COLUMN")


class HFImageDataset(SampleDataset):
    """An image classification dataset of Hugging Face ``datasets``.

    The image column is the one ``datasets.Image`` column and the label column the one
    ``datasets.ClassLabel`` column (or the columns named by ``image_column`` and
    ``label_column``; a named label column may also hold class indices as plain integers).
    Class names come from the ClassLabel feature. Sample ids: the ``id_column`` (whole
    numbers, unique) if named, else the row index. Images are decoded one at a time when an
    item is read (never all at once), to 8-bit RGB ``[3, H, W]`` as the other sources.

    Args:
        source: a folder written by ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict``
            read with ``split``), a Hub name (or local data folder) that
            ``datasets.load_dataset(source, split=split)`` reads (from the cache when
            offline), or a ``datasets.Dataset`` / ``DatasetDict`` object (its spec cannot be
            reloaded: save it with ``save_to_disk`` for that).
        split: the split to read; needed for a DatasetDict and for a Hub name.
        image_column, label_column, id_column: columns by name (see above).
        image_size: resize every image to ``image_size x image_size``; if None every image
            must have the size of the first.
        class_names: the classes to map the labels onto by name (an evaluation set onto the
            training set's classes).
        fingerprint: the fingerprint recorded when the dataset was first read
            (``spec["fingerprint"]``); another one is refused.

    Raises:
        InputError: ``datasets`` not installed, a streaming dataset, a DatasetDict without a
            split (the splits are named), columns not found or ambiguous, a changed dataset.
    """

    def __init__(
        self,
        source: Any,
        *,
        split: str | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        id_column: str | None = None,
        image_size: int | None = None,
        class_names: list[str] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        datasets = require_datasets()
        check_image_size(image_size)
        if _is_streaming(source, datasets):
            raise _refuse_streaming("the dataset given")
        if isinstance(source, (str, os.PathLike)):
            loaded, where, desc = _open(source, split, datasets)
        else:
            loaded, where, desc = source, None, "the dataset given"
        if _is_streaming(loaded, datasets):
            raise _refuse_streaming(desc)
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded.keys())
            if split is None:
                raise InputError(f"{desc} holds the splits {', '.join(map(repr, splits))}: pick one with --split "
                                 f"(Python: split=), e.g. --split {splits[0]}")
            if split not in loaded:
                raise InputError(f"{desc} has no split {split!r}; its splits: {', '.join(map(repr, splits))}")
            ds = loaded[split]
            desc = f"{desc} (split {split!r})"
        elif isinstance(loaded, datasets.Dataset):
            ds = loaded
            if split is not None and where is not None and is_saved_hf_dataset(where):
                got = getattr(ds, "split", None)
                if got is not None and str(got) != split:
                    raise InputError(f"{desc} is a single dataset of split {str(got)!r}, not {split!r}: drop --split")
        else:
            raise InputError(f"{desc} is a {type(loaded).__name__}, not a datasets.Dataset or DatasetDict")
        actual = _fingerprint(ds)
        if fingerprint is not None and fingerprint != actual:
            raise InputError(
                f"{desc} is not the dataset that was recorded (fingerprint {actual}, recorded {fingerprint}): it "
                "changed since the run; restore the dataset the run trained on, or start a new run"
            )
        features = ds.features
        img_col = _choose(features, image_column, datasets.Image, "image", "--image-column", desc)
        lab_col = _choose(features, label_column, datasets.ClassLabel, "label", "--label-column", desc)
        if not isinstance(features[img_col], datasets.Image):
            raise InputError(f"{desc} column {img_col!r} is {type(features[img_col]).__name__}, not an Image: "
                             "name the image column with --image-column, or cast it with "
                             f"dataset.cast_column({img_col!r}, datasets.Image())")
        labels = self._column(ds, lab_col, desc, "--label-column")
        label_feature = features[lab_col]
        names: list[str] | None = None
        if isinstance(label_feature, datasets.ClassLabel):
            names = [str(n) for n in label_feature.names]
        if class_names is not None:
            target = [str(c) for c in class_names]
            if names is not None:
                used = set(np.unique(labels).tolist())
                unknown = [n for i, n in enumerate(names) if i in used and n not in target]
                if unknown:
                    raise InputError(f"{desc} has class(es) {', '.join(map(repr, unknown))} that the training set "
                                     f"lacks (its classes: {', '.join(map(repr, target))})")
                mapping = np.array([target.index(n) if n in target else -1 for n in names], dtype=np.int64)
                labels = np.where(labels >= 0, mapping[np.clip(labels, 0, len(names) - 1)], labels)
            names = target
        ids = None if id_column is None else self._column(ds, id_column, desc, "--id-column")
        self.image_column, self.label_column, self.id_column = img_col, lab_col, id_column
        self.image_size = image_size
        self.fingerprint = actual
        self.split = split
        self._images = ds.select_columns([img_col]) if hasattr(ds, "select_columns") else ds
        self._size: tuple[int, int] | None = None
        self._desc = desc
        super().__init__(
            labels=labels, sample_ids=ids, clean_labels=None, num_classes=None if names is None else len(names),
            class_names=names,
            spec={"source": "hf", "path": where, "split": split, "image_column": img_col, "label_column": lab_col,
                  "id_column": id_column, "image_size": image_size,
                  "class_names": None if class_names is None else names,
                  "fingerprint": actual},
        )
        if image_size is None and len(self):
            for pos in np.unique(np.linspace(0, len(self) - 1, min(len(self), _CHECKED_IMAGES)).astype(np.int64)):
                self.image(int(pos))  # images of different sizes are refused before training

    @staticmethod
    def _column(ds: Any, column: str, desc: str, option: str) -> np.ndarray:
        if column not in ds.features:
            raise InputError(f"{desc} has no column {column!r} ({option}); its columns: {', '.join(ds.features)}")
        values = np.asarray(ds.with_format("numpy", columns=[column])[column])
        return as_int_array(values, f"{desc} column {column!r}",
                            fix=f"{option} must name a column of whole numbers"
                                + (" (class indices, or a datasets.ClassLabel: dataset.class_encode_column"
                                   f"({column!r}))" if option == "--label-column" else ""))

    def image(self, i: int) -> np.ndarray:
        from PIL import Image

        i = self._check_position(i)
        value = self._images[i][self.image_column]
        try:
            if isinstance(value, dict):  # an Image feature with decode=False
                value = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
            im = _as_rgb8(value)
            if self.image_size is not None:
                if im.size != (self.image_size, self.image_size):
                    im = im.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
            elif self._size is None:
                self._size = im.size
            elif im.size != self._size:
                raise InputError(
                    f"the image of sample id {int(self.sample_ids[i])} in {self._desc} is {im.size[0]}x{im.size[1]} "
                    f"but the first is {self._size[0]}x{self._size[1]}: images of one dataset must share a size; "
                    "resize them all to NxN with --image-size N (Python: image_size=N)"
                )
            return np.array(im, dtype=np.uint8)
        except InputError:
            raise
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(
                f"cannot decode the image of sample id {int(self.sample_ids[i])} in {self._desc}: {e}"
            ) from e


def hf_eval_split(path: str | os.PathLike[str]) -> str | None:
    """The split of a saved DatasetDict that evaluates (``validation``, ``valid``, ``val``,
    else ``test``); None for a saved single Dataset (every row evaluates).

    Raises:
        InputError: a DatasetDict with none of those splits (its splits are named).
    """
    import json

    p = Path(path).expanduser()
    if not (p / "dataset_dict.json").is_file():
        return None
    try:
        splits = [str(s) for s in json.loads((p / "dataset_dict.json").read_text())["splits"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"cannot read {p / 'dataset_dict.json'}: {e}: save the dataset again with save_to_disk") from e
    split = next((s for s in ("validation", "valid", "val", "test") if s in splits), None)
    if split is None:
        raise InputError(f"{p} holds the splits {', '.join(map(repr, splits))} but none named validation, valid, val "
                         "or test to evaluate on: save the evaluation split alone with save_to_disk and pass "
                         "that folder")
    return split
