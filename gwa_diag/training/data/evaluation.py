"""Evaluation sets given apart from the training data (``gwa-diag train --eval-data``): an
``.npz`` file, an image folder, a manifest CSV or a folder written by Hugging Face
``save_to_disk``, with its classes mapped onto the
training set's.

Owns the choice of reader from the path and the class mapping (by name for folders and
manifests with class names). Imports :mod:`gwa_diag.checks` and the source modules of this
package.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.training.data.arrays import load_npz
from gwa_diag.training.data.base import SampleDataset
from gwa_diag.training.data.folders import ImageFolderDataset
from gwa_diag.training.data.hf import HFImageDataset, hf_eval_split, is_saved_hf_dataset
from gwa_diag.training.data.manifest import ManifestDataset, held_out_split, manifest_splits

__all__ = ["load_eval_set"]


def load_eval_set(
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str],
    image_size: int | None = None,
) -> SampleDataset:
    """The evaluation set at ``path``, labelled in the training set's classes.

    * ``FILE.npz``: as :func:`~gwa_diag.training.data.load_npz` (labels are class indices).
    * a folder: one sub-folder per class, as an image folder; each sub-folder's name must be
      one of ``class_names`` and is labelled with its position there.
    * ``FILE.csv``: a manifest (:class:`~gwa_diag.training.data.manifest.ManifestDataset`):
      with a ``split`` column its ``val`` rows (else its ``test`` rows), else every row;
      class names are mapped onto ``class_names``, class indices kept.
    * a folder written by Hugging Face ``save_to_disk``
      (:class:`~gwa_diag.training.data.hf.HFImageDataset`, columns found by type): a
      ``Dataset``, or a ``DatasetDict``'s ``validation`` (``valid``, ``val``, else ``test``)
      split; ClassLabel names are mapped onto ``class_names``.

    Args:
        class_names: the training set's classes, in its order.
        image_size: resize folder and manifest images to this size (as the training images).

    Raises:
        InputError: another kind of path, or classes the training set lacks (named).
    """
    p = Path(path).expanduser()
    if is_saved_hf_dataset(p):
        return HFImageDataset(p, split=hf_eval_split(p), image_size=image_size, class_names=class_names)
    if p.is_dir():
        return ImageFolderDataset(p, image_size=image_size, class_names=class_names)
    if not p.exists():
        raise MissingFileError(f"evaluation data not found: {p}: pass an .npz file, an image folder or a manifest CSV")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return load_npz(p)
    if suffix == ".csv":
        splits = manifest_splits(p)
        split = None
        if splits is not None:
            split = held_out_split(splits)
            if split is None:
                raise InputError(
                    f"{p} has a 'split' column but no 'val' or 'test' rows to evaluate on: mark them, "
                    "or drop the split column to evaluate on every row"
                )
        return ManifestDataset(p, split=split, image_size=image_size, class_names=class_names)
    raise InputError(
        f"cannot tell what kind of evaluation data {p} is: pass an .npz file, an image folder "
        "(one sub-folder per class) or a manifest .csv (columns path,label)"
    )
