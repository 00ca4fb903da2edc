"""The run's images: rebuilding its dataset (checked against the data it trained on) and
decoding just the samples a page shows, as thumbnails or as PNGs for the grid.

Never the whole dataset: every function takes the sample ids it draws.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
from PIL import Image

from gwa_diag.checks import InputError

from .grid import png_data_url

__all__ = ["THUMB_SIZE", "load_checked_dataset", "thumbnails", "thumbnail", "grid_images"]

THUMB_SIZE = 96


def load_checked_dataset(spec_json: str, fingerprint: str | None) -> Any:
    """The dataset of run.json's ``dataset`` spec (as JSON), refused when its
    ``data_fingerprint`` differs from the run's.

    Raises:
        InputError: the images are not the ones the run trained on.
        Exception: whatever the dataset's loader raises (a moved file, a broken spec).
    """
    # Here, not at the top: gwa_diag.training.data imports torch (seconds), and only this
    # background job needs it; the first page renders without it.
    from gwa_diag.training.data import data_fingerprint, load_dataset

    dataset = load_dataset(json.loads(spec_json))
    # An image folder's ids are file positions: a file added or removed since training would
    # put another image under every later id. Showing it beside that id's scores would
    # mislead a relabeling decision, so a changed dataset shows no images at all.
    if fingerprint is not None and data_fingerprint(dataset) != fingerprint:
        raise InputError(
            f"the images found now ({len(dataset)} samples) are not the ones this run trained on "
            "(files added, removed or replaced since), so an id could show another sample's image"
        )
    return dataset


def _upscale(img: np.ndarray, size: int) -> np.ndarray:
    """Fit ``img`` into ``size`` px: whole-number nearest-neighbour upscaling (32x32 pixels
    stay crisp squares instead of a blur), plain resizing for images already larger."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    h, w = img.shape[:2]
    factor = size // max(h, w)
    if factor >= 1:
        return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1) if factor > 1 else img
    scale = size / max(h, w)
    new_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = Image.fromarray(img).resize(new_size, Image.Resampling.BILINEAR)
    return np.asarray(resized)


def _images(dataset: Any, sample_ids: Sequence[int]) -> list[np.ndarray]:
    positions = dataset.positions(np.asarray(sample_ids, dtype=np.int64))
    return [dataset.image(int(p)) for p in positions]


def thumbnails(dataset: Any, sample_ids: Sequence[int], size: int = THUMB_SIZE) -> list[np.ndarray]:
    """Decoded, upscaled images of just these samples (never the whole dataset).

    Raises:
        ValueError: a sample id the dataset does not hold (the run and the images disagree).
    """
    if len(sample_ids) == 0:
        return []
    return [_upscale(img, size) for img in _images(dataset, sample_ids)]


def thumbnail(dataset: Any, sample_id: int, size: int) -> np.ndarray:
    """One sample's image fitted into ``size`` px (see :func:`thumbnails`)."""
    return thumbnails(dataset, [int(sample_id)], size)[0]


def grid_images(dataset: Any, sample_ids: Sequence[int]) -> list[str]:
    """PNG data URLs of just these samples at their own size (the grid scales them up
    pixelated in the browser: nearest neighbour without sending 9x the pixels).

    Raises:
        ValueError: a sample id the dataset does not hold.
    """
    if len(sample_ids) == 0:
        return []
    return [png_data_url(img) for img in _images(dataset, sample_ids)]
