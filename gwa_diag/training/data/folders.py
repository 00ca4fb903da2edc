"""Image folders: one sub-folder per class, decoded with PIL on access.

Owns the file listing that fixes sample ids (sorted relative paths), the up-front check of
every file (a corrupt image is reported before training) and the decoding to 8-bit RGB.
Imports numpy, PIL, :mod:`gwa_diag.checks` and :mod:`.base`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.training.data.base import SampleDataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset"]

#: Image file extensions :class:`ImageFolderDataset` reads (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


class ImageFolderDataset(SampleDataset):
    """Images in ``root/<class name>/**/<file>``, one sub-folder per class.

    Class order is the sorted sub-folder names. Files (``.png .jpg .jpeg .bmp .webp .tif .tiff``, any
    case; hidden files and folders ignored) are sorted by their path relative to ``root``
    and ``sample_id`` is the position in that list, so ids stay the same whenever the same
    files are listed again. Every file is checked with PIL at construction, so a corrupt
    file is reported before training starts. Images are decoded to 8-bit RGB on access;
    16-bit grey files (PIL modes ``I;16``, ``I;16B``, ``I;16L``, and ``I``, read as holding a
    16-bit range: values clipped to 0..65535) keep their top 8 bits (``value >> 8``), and
    32-bit float files (mode ``F``) are refused, since they have no fixed value range.

    Args:
        root: the folder holding the class sub-folders.
        image_size: resize every image to ``image_size x image_size``; if None all images
            must already share one size.

    Attributes:
        paths: absolute path of each image, by position.
    """

    paths: list[Path]

    def __init__(self, root: str | os.PathLike[str], *, image_size: int | None = None) -> None:
        from PIL import Image

        root_p = Path(root).expanduser()
        if not root_p.is_dir():
            raise MissingFileError(
                f"image folder not found: {root_p}: pass a folder with one sub-folder per class"
            )
        if image_size is not None and (
            isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
        ):
            raise InputError(f"image_size (CLI: --image-size) must be a positive int or None, got {image_size!r}")
        classes = sorted(
            d.name for d in root_p.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        if not classes:
            raise InputError(
                f"{root_p} has no class sub-folders: put each class's images in "
                f"{root_p}/<class name>/"
            )
        entries: list[tuple[str, int]] = []
        for c, name in enumerate(classes):
            for f in (root_p / name).rglob("*"):
                rel = f.relative_to(root_p)
                if f.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(rel) and f.is_file():
                    entries.append((rel.as_posix(), c))
        if not entries:
            raise InputError(
                f"{root_p} has no images with extensions {', '.join(IMAGE_EXTENSIONS)} in its "
                f"class sub-folders ({', '.join(classes)})"
            )
        entries.sort()
        first_size: tuple[int, int] | None = None
        first_rel = ""
        for rel, _ in entries:
            f = root_p / rel
            try:
                with Image.open(f) as im:
                    size = im.size  # from the header; verify() below reads the file through
                    mode = im.mode
                    im.verify()
            except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
                raise InputError(
                    f"cannot read image {f}: {type(e).__name__}: {e}; remove or replace the "
                    "file before training"
                ) from e
            if mode == "F":  # refused here, not in the middle of training
                raise InputError(f"image {f} holds 32-bit floats, which have no fixed value range; "
                                 "save it as an 8- or 16-bit image")
            if image_size is None:
                if first_size is None:
                    first_size, first_rel = size, rel
                elif size != first_size:
                    raise InputError(
                        f"image {f} is {size[0]}x{size[1]} but {root_p / first_rel} is "
                        f"{first_size[0]}x{first_size[1]}: images of one dataset must share a "
                        "size; resize them all to NxN with --image-size N (Python: image_size=N)"
                    )
        self.root = root_p.resolve()
        self.image_size = image_size
        self.paths = [self.root / rel for rel, _ in entries]
        super().__init__(
            labels=np.array([c for _, c in entries], dtype=np.int64),
            sample_ids=np.arange(len(entries), dtype=np.int64),
            clean_labels=None,
            num_classes=len(classes),
            class_names=classes,
            spec={"source": "image_folder", "root": str(self.root), "image_size": image_size},
        )

    def image(self, i: int) -> np.ndarray:
        from PIL import Image

        i = self._check_position(i)
        f = self.paths[i]
        try:
            with Image.open(f) as im:
                im = _as_rgb8(im)
                if self.image_size is not None and im.size != (self.image_size, self.image_size):
                    im = im.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
                return np.array(im, dtype=np.uint8)  # a writable copy, safe for torch
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(
                f"cannot decode image {f} (sample id {int(self.sample_ids[i])}): {e}; it was "
                "readable when the dataset was built, check whether it changed"
            ) from e


def _as_rgb8(im: Any) -> Any:
    """An image as 8-bit RGB. 16-bit grey images (modes I;16*, and I, which PIL uses for
    them too) keep their top 8 bits: PIL's own convert("RGB") clips them to 255, which
    would make almost every pixel white. 32-bit float images have no fixed range to map
    from, so they are refused."""
    from PIL import Image

    if im.mode == "F":
        raise InputError("32-bit float images have no fixed value range; save them as 8- or 16-bit images")
    if im.mode.startswith("I"):
        wide = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        im = Image.fromarray((wide >> 8).astype(np.uint8), mode="L")
    return im.convert("RGB")
