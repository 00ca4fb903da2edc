"""Rebuilding a dataset from its ``spec`` (as saved in a run's ``run.json``).

Owns the spec format: a ``source`` with its options, then label ``steps`` applied in order.
Unknown sources, options and steps are refused by name (a misspelt key would otherwise be
ignored and other data loaded). Also owns :func:`data_fingerprint`, which tells whether the
data rebuilt from a spec is the data a run trained on (resuming compares it, and so does the
app before it shows images by sample id). Imports numpy, :mod:`gwa_diag.checks` and the
source and label modules of this package.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gwa_diag.checks import InputError, check_choice, check_keys
from gwa_diag.training.data.arrays import NPZ_OPTIONS, cifar10, load_npz
from gwa_diag.training.data.base import SampleDataset
from gwa_diag.training.data.cifar10n import with_cifar10n
from gwa_diag.training.data.exclude import without_samples
from gwa_diag.training.data.folders import ImageFolderDataset
from gwa_diag.training.data.hf import HFImageDataset
from gwa_diag.training.data.labels import with_label_file
from gwa_diag.training.data.manifest import ManifestDataset
from gwa_diag.training.data.noise import with_noise
from gwa_diag.training.data.sample import load_sample_split

__all__ = ["data_fingerprint", "load_dataset"]

_SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "npz": ("path", *NPZ_OPTIONS),
    "cifar10": ("root", "train"),
    "image_folder": ("root", "image_size", "class_names"),
    "manifest": ("path", "split", "image_size", "class_names"),
    "sample_data": ("split", "label_set", "path"),
    "hf": ("path", "split", "image_column", "label_column", "id_column", "image_size", "class_names", "fingerprint"),
    "arrays": (),
}
_STEP_KEYS: dict[str, tuple[str, ...]] = {
    "label_set": ("name", "path"),
    "label_file": ("path",),
    "noise": ("rate", "kind", "seed"),
    "labels": ("name",),
    "exclude": ("path", "sha256", "count"),
}


def load_dataset(spec: Mapping[str, Any], *, with_labels: bool = True) -> SampleDataset:
    """Rebuild a dataset from its ``spec`` (as saved in a run's ``run.json``).

    A spec names a ``source`` (``npz``, ``cifar10``, ``image_folder``, ``manifest``,
    ``sample_data``, ``hf``: a Hugging Face dataset, refused when its recorded
    ``fingerprint`` differs) with
    its options, and a list of label ``steps`` applied in order (``label_set``,
    ``label_file``, ``noise``, and ``exclude``, which leaves out the samples of an exclusion
    file). ``dataset.spec`` of any dataset made by this module has this form.

    Args:
        spec: the dataset's ``spec``.
        with_labels: apply the label steps. Pass False when only the images (found by
            sample id) are needed, e.g. to show them next to a run that already stores its
            labels: then label files need not be present and labels set from in-memory
            arrays are no obstacle; the result has the source's own labels and all its
            samples (excluded ones too: every recorded id still finds its image).
    """
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a dict (dataset.spec), got {type(spec).__name__}")
    if "source" not in spec:
        raise InputError(
            f"spec has no 'source' key (keys: {', '.join(map(str, spec))}); valid sources are "
            f"{', '.join(repr(s) for s in _SOURCE_KEYS if s != 'arrays')}"
        )
    source = check_choice(spec["source"], list(_SOURCE_KEYS), "dataset source")
    opts = {k: v for k, v in spec.items() if k not in ("source", "steps")}
    check_keys(opts, _SOURCE_KEYS[source], f"{source!r} spec")
    steps = spec.get("steps") or []
    if not isinstance(steps, Sequence) or isinstance(steps, (str, bytes)):
        raise TypeError("spec['steps'] must be a list of step dicts")

    ds: SampleDataset
    if source == "npz":
        if "path" not in opts:
            raise InputError("an 'npz' spec needs 'path', the .npz file")
        path = opts.pop("path")
        ds = load_npz(path, **{k: v for k, v in opts.items()})
    elif source == "cifar10":
        if "root" not in opts:
            raise InputError("a 'cifar10' spec needs 'root', the folder with cifar-10-batches-py")
        ds = cifar10(opts["root"], train=bool(opts.get("train", True)))
    elif source == "image_folder":
        if "root" not in opts:
            raise InputError("an 'image_folder' spec needs 'root', the folder of class folders")
        ds = ImageFolderDataset(opts["root"], image_size=opts.get("image_size"), class_names=opts.get("class_names"))
    elif source == "manifest":
        if "path" not in opts:
            raise InputError("a 'manifest' spec needs 'path', the manifest CSV")
        ds = ManifestDataset(opts["path"], split=opts.get("split"), image_size=opts.get("image_size"),
                             class_names=opts.get("class_names"))
    elif source == "hf":
        if not opts.get("path"):
            raise InputError(
                "this Hugging Face dataset was passed as a Python object, which a spec cannot reload: save it "
                "with dataset.save_to_disk(PATH) and build HFImageDataset(PATH) (CLI: --data hf --data-path PATH)"
            )
        ds = HFImageDataset(opts["path"], **{k: opts.get(k) for k in _SOURCE_KEYS["hf"] if k != "path"})
    elif source == "sample_data":
        ds = load_sample_split(
            opts.get("split", "train"), label_set=opts.get("label_set", "worst"), path=opts.get("path")
        )
    else:  # arrays
        raise InputError(
            "this dataset was built from in-memory arrays, which a spec cannot reload: save "
            "them with np.savez(path, images=..., labels=..., sample_ids=...) and use load_npz"
        )

    for step in steps if with_labels else []:
        if not isinstance(step, Mapping) or "op" not in step:
            raise InputError(f"each spec step must be a dict with an 'op' key, got {step!r}")
        op = check_choice(step["op"], list(_STEP_KEYS), "spec step op")
        args = {k: v for k, v in step.items() if k != "op"}
        check_keys(args, _STEP_KEYS[op], f"{op!r} step")
        if op == "label_set":
            ds = with_cifar10n(ds, args["path"], label_set=args["name"])
        elif op == "label_file":
            ds = with_label_file(ds, args["path"])
        elif op == "exclude":
            ds = _without_samples_again(ds, args)
        elif op == "noise":
            ds = with_noise(
                ds, rate=args["rate"], kind=args.get("kind", "symmetric"), seed=args.get("seed", 0)
            )
        else:
            raise InputError(
                f"the labels of this dataset were set from in-memory arrays (label set "
                f"{args.get('name')!r}), which a spec cannot reload: use with_cifar10n or "
                "with_label_file, or pass origin= to with_label_set; to load only the images "
                "pass with_labels=False"
            )
    return ds


def _without_samples_again(ds: SampleDataset, step: Mapping[str, Any]) -> SampleDataset:
    """Redo an ``exclude`` step; a file changed since the run would leave out other samples
    than the ones it trained without, so a different SHA-256 is refused."""
    if "path" not in step:
        raise InputError("an 'exclude' step needs 'path', the exclusion file")
    out = without_samples(ds, step["path"])
    recorded, now = step.get("sha256"), out.spec["steps"][-1]["sha256"]
    if recorded is not None and recorded != now:
        raise InputError(
            f"the exclusion file {step['path']} changed since the run was recorded (SHA-256 {now[:12]}..., "
            f"recorded {str(recorded)[:12]}...): restore the file the run trained without"
        )
    return out


# Images hashed for the data fingerprint: evenly spaced, so that a changed file, order or
# preprocessing shows up without reading a whole image folder again.
_FINGERPRINT_IMAGES = 32


def data_fingerprint(dataset: Any) -> str:
    """A short hash of the sample ids and of up to 32 evenly spaced images (their pixels
    and shapes): equal for the same data wherever it is stored."""
    n = len(dataset)
    h = hashlib.sha256(f"n={n}".encode())
    for pos in np.unique(np.linspace(0, max(n - 1, 0), min(n, _FINGERPRINT_IMAGES)).astype(np.int64)):
        image = dataset.image(int(pos)) if hasattr(dataset, "image") else dataset[int(pos)][0]
        arr = np.ascontiguousarray(np.asarray(image))
        h.update(f"{int(np.asarray(dataset.sample_ids)[pos])}:{arr.shape}:{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]
