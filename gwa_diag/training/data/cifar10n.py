"""CIFAR-10-N human label sets: the official ``CIFAR-10_human.pt`` read safely, and
joined onto any CIFAR-10 training subset by sample id (= CIFAR-10 training index).

The file is a pickle: it is read with ``torch.load(weights_only=True)`` and an allow-list
of the numpy types it needs, so a tampered file is refused instead of run. Imports numpy,
torch, :mod:`gwa_diag.checks`, :mod:`.base` and :mod:`.labels`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gwa_diag.checks import InputError, MissingFileError, check_choice
from gwa_diag.training.data.base import SampleDataset
from gwa_diag.training.data.labels import with_label_set

__all__ = ["CIFAR10N_LABEL_SETS", "cifar10n_labels", "load_cifar10n", "with_cifar10n"]

CIFAR10N_LABEL_SETS: dict[str, str] = {
    "clean": "clean_label",
    "aggre": "aggre_label",
    "worst": "worse_label",
    "random1": "random_label1",
    "random2": "random_label2",
    "random3": "random_label3",
}


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
    check_choice(label_set, list(CIFAR10N_LABEL_SETS), "CIFAR-10-N label set")
    arrays = load_cifar10n(path)
    key = CIFAR10N_LABEL_SETS[label_set]
    for needed in (key, "clean_label"):
        if needed not in arrays:
            raise InputError(f"{path} lacks the {needed!r} array needed for label set {label_set!r}")
    return arrays[key].copy(), arrays["clean_label"].copy()




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
