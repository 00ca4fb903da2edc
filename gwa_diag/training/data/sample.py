"""The small real CIFAR-10-N subset shipped with the package (``gwa_diag.sample_data``).

Owns where the bundled file is found and how its train and test splits become
:class:`~.arrays.ArrayDataset` objects. Imports numpy, :mod:`gwa_diag.checks`,
:mod:`.arrays` and the label-set names of :mod:`.cifar10n`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gwa_diag.checks import MissingFileError, check_choice
from gwa_diag.training.data.arrays import CIFAR10_CLASSES, ArrayDataset
from gwa_diag.training.data.cifar10n import CIFAR10N_LABEL_SETS

__all__ = ["load_sample_split", "sample_data", "sample_data_path"]

_SAMPLE_DATA_FILE = "cifar10n_subset.npz"


def sample_data_path() -> Path:
    """Path of the bundled ``cifar10n_subset.npz``, found through the installed package
    ``gwa_diag.sample_data`` (the top-level ``sample_data/`` folder of a checkout); it may
    not exist in an installation that left it out."""
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("gwa_diag.sample_data") / _SAMPLE_DATA_FILE))
    except ModuleNotFoundError:
        # Not installed as a package: a source tree used as it is (PYTHONPATH=.) keeps the
        # file in its top-level sample_data/; otherwise name where an installation puts it.
        package = Path(__file__).resolve().parents[2]
        checkout = package.parent / "sample_data" / _SAMPLE_DATA_FILE
        return checkout if checkout.is_file() else package / "sample_data" / _SAMPLE_DATA_FILE


def load_sample_split(split: str, *, label_set: str, path: str | None) -> ArrayDataset:
    """One split (``train`` or ``test``) of the bundled file, or of ``path`` in its format;
    the train split carries the chosen CIFAR-10-N label set and the clean labels."""
    check_choice(split, ("train", "test"), "sample_data split")
    check_choice(label_set, list(CIFAR10N_LABEL_SETS), "CIFAR-10-N label set")
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
    return (load_sample_split("train", label_set=label_set, path=p),
            load_sample_split("test", label_set=label_set, path=p))

