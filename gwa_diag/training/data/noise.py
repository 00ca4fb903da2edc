"""Synthetic label noise: flip a known number of labels, reproducibly from a seed.

Owns :func:`inject_noise` (on a label array) and :func:`with_noise` (on a dataset, keeping
the labels before the flips as its clean labels so detection can be scored). The noise
kinds are :data:`gwa_diag.checks.NoiseKind`. Imports numpy, :mod:`gwa_diag.checks` and
:mod:`.base`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gwa_diag.checks import InputError, InputTypeError, NoiseKind, check_choice, values
from gwa_diag.training.data.base import SampleDataset, as_int_array, check_label_range

__all__ = ["NOISE_KINDS", "inject_noise", "with_noise"]

#: Synthetic noise kinds of :func:`inject_noise`.
NOISE_KINDS: tuple[str, ...] = values(NoiseKind)


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
    check_choice(kind, NOISE_KINDS, "noise kind")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise InputTypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise InputError(f"num_classes must be at least 2 to flip labels, got {num_classes}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0.0 <= rate <= 1.0:
        raise InputError(f"noise rate must be a fraction in [0, 1], got {rate!r} (e.g. 0.2 for 20%)")
    arr = as_int_array(labels, "labels")
    check_label_range(arr, int(num_classes), "labels")
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
    noisy = inject_noise(
        dataset.labels, rate=rate, num_classes=dataset.num_classes, kind=kind, seed=seed
    )
    clean = dataset.clean_labels if dataset.clean_labels is not None else dataset.labels.copy()
    step = {"op": "noise", "rate": float(rate), "kind": kind, "seed": int(seed)}
    return dataset.relabeled(noisy, clean, step)
