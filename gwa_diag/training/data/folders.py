"""Image folders: one sub-folder per class, decoded with PIL on access.

Owns the file listing that fixes sample ids (sorted relative paths), and, in
:class:`ImageFilesDataset` (shared with the manifest source), the up-front check of every
file (a corrupt image is reported before training), the decoding to 8-bit RGB and each
sample's path relative to the dataset's root. Imports numpy, PIL, :mod:`gwa_diag.checks`
and :mod:`.base`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.training.data.base import SampleDataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFilesDataset", "ImageFolderDataset", "check_image_files"]

#: Image file extensions :class:`ImageFolderDataset` reads (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def check_image_size(image_size: Any) -> int | None:
    """``image_size`` when it is None or a positive int; else :class:`InputError`."""
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise InputError(f"image_size (CLI: --image-size) must be a positive int or None, got {image_size!r}")
    return image_size


def check_image_files(files: Sequence[Path], *, image_size: int | None) -> None:
    """Open every file with PIL before training: a corrupt file, a 32-bit float image or
    (without ``image_size``) images of different sizes are refused here, naming the file,
    not in the middle of an epoch."""
    from PIL import Image

    first_size: tuple[int, int] | None = None
    first = Path()
    for f in files:
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
                first_size, first = size, f
            elif size != first_size:
                raise InputError(
                    f"image {f} is {size[0]}x{size[1]} but {first} is "
                    f"{first_size[0]}x{first_size[1]}: images of one dataset must share a "
                    "size; resize them all to NxN with --image-size N (Python: image_size=N)"
                )


class ImageFilesDataset(SampleDataset):
    """A dataset of image files, decoded with PIL on access (the base of
    :class:`ImageFolderDataset` and :class:`~gwa_diag.training.data.manifest.ManifestDataset`).

    Images are decoded to 8-bit RGB; 16-bit grey files (PIL modes ``I;16``, ``I;16B``,
    ``I;16L``, and ``I``, read as holding a 16-bit range: values clipped to 0..65535) keep
    their top 8 bits (``value >> 8``), and 32-bit float files (mode ``F``) are refused,
    since they have no fixed value range.

    Attributes:
        paths: absolute path of each image, by position.
        image_size: the side every image is resized to, or None (images keep their size).
    """

    paths: list[Path]
    image_size: int | None
    _relative: list[str]

    def _set_files(self, paths: list[Path], relative: list[str], image_size: int | None) -> None:
        """Record the files by position: ``relative`` is what :meth:`relative_paths` returns."""
        self.paths = paths
        self._relative = relative
        self.image_size = image_size

    def relative_paths(self) -> list[str]:
        """Each sample's file path relative to the dataset's root (posix separators), by
        position, aligned with ``sample_ids``."""
        return list(self._relative)

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


class ImageFolderDataset(ImageFilesDataset):
    """Images in ``root/<class name>/**/<file>``, one sub-folder per class.

    Class order is the sorted sub-folder names (or ``class_names`` when given). Files
    (``.png .jpg .jpeg .bmp .webp .tif .tiff``, any case; hidden files and folders ignored)
    are sorted by their path relative to ``root`` and ``sample_id`` is the position in that
    list, so ids stay the same whenever the same files are listed again. Every file is
    checked with PIL at construction, so a corrupt file is reported before training starts.
    Decoding: see :class:`ImageFilesDataset`. :meth:`relative_paths` gives each file's path
    relative to ``root``.

    Args:
        root: the folder holding the class sub-folders.
        image_size: resize every image to ``image_size x image_size``; if None all images
            must already share one size.
        class_names: the classes to map the sub-folders onto (an evaluation folder onto the
            training set's classes): labels are positions in this list, and a sub-folder
            whose name is not in it is refused. Default: the sorted sub-folder names.

    Attributes:
        paths: absolute path of each image, by position.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_size: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        root_p = Path(root).expanduser()
        if not root_p.is_dir():
            raise MissingFileError(
                f"image folder not found: {root_p}: pass a folder with one sub-folder per class"
            )
        check_image_size(image_size)
        folders = sorted(
            d.name for d in root_p.iterdir() if d.is_dir() and not d.name.startswith(".")
        )
        if not folders:
            raise InputError(
                f"{root_p} has no class sub-folders: put each class's images in "
                f"{root_p}/<class name>/"
            )
        classes = folders if class_names is None else [str(c) for c in class_names]
        unknown = [name for name in folders if name not in classes]
        if unknown:
            raise InputError(
                f"{root_p} has class folder(s) {', '.join(map(repr, unknown))} that the training set "
                f"lacks (its classes: {', '.join(map(repr, classes))}): rename or remove those folders"
            )
        entries: list[tuple[str, int]] = []
        for name in folders:
            c = classes.index(name)
            for f in (root_p / name).rglob("*"):
                rel = f.relative_to(root_p)
                if f.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(rel) and f.is_file():
                    entries.append((rel.as_posix(), c))
        if not entries:
            raise InputError(
                f"{root_p} has no images with extensions {', '.join(IMAGE_EXTENSIONS)} in its "
                f"class sub-folders ({', '.join(folders)})"
            )
        entries.sort()
        check_image_files([root_p / rel for rel, _ in entries], image_size=image_size)
        self.root = root_p.resolve()
        self._set_files([self.root / rel for rel, _ in entries], [rel for rel, _ in entries], image_size)
        spec: dict[str, Any] = {"source": "image_folder", "root": str(self.root), "image_size": image_size}
        if class_names is not None:
            spec["class_names"] = classes  # so load_dataset maps the folders the same way
        super().__init__(
            labels=np.array([c for _, c in entries], dtype=np.int64),
            sample_ids=np.arange(len(entries), dtype=np.int64),
            clean_labels=None,
            num_classes=len(classes),
            class_names=classes,
            spec=spec,
        )


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
