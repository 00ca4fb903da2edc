"""Moving a run's data: point run.json at the images where they are now (``gwa-diag relocate``).

A run recorded on one machine and opened on another finds no images: its ``dataset`` spec
names the first machine's path. :func:`relocate_run` rewrites that path (and the
``eval_dataset``'s), but only after the data at the new place proved to be the data the run
trained on, so that no sample id ends up beside another image. The move is kept in run.json's
``relocations`` list (from, to, time). Only the data path changes: label files, exclusion
files and other steps keep their own paths. Imports :mod:`gwa_diag.training.data` and, of the
recording core, ``store`` and ``checks``.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.store import atomic_write_bytes, exclusive_lock, open_run
from gwa_diag.training.data import data_fingerprint, load_dataset

__all__ = ["relocate_run"]

# Dataset source -> the spec key that holds its data location (file or folder).
_PATH_KEYS = {"npz": "path", "manifest": "path", "sample_data": "path", "hf": "path", "cifar10": "root",
              "image_folder": "root"}


def relocate_run(
    run_dir: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    eval_data_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Point the run in ``run_dir`` at its data's new place: ``data_path`` for the training
    set (run.json's ``dataset``), ``eval_data_path`` for the evaluation set (``eval_dataset``).

    The dataset is rebuilt from the run's spec with the new path (label steps included) and
    must be the recorded one: its :func:`~gwa_diag.training.data.data_fingerprint` equals
    run.json's ``data_fingerprint`` (for an image folder, the same relative paths with the
    same file sizes as the folder at the old place are evidence too). Without a recorded
    fingerprint the recorded sample count and ids are compared. The evaluation set has no
    recorded fingerprint: it must load, with ``eval_num_samples`` samples when that is
    recorded. Only when every check passes is run.json replaced (atomically, under the run's
    lock, so never while a training writes the run); each move is appended to its
    ``relocations`` list as ``{"dataset", "from", "to", "time"}``.

    Args:
        run_dir: the run directory (``--out`` of ``gwa-diag train``).
        data_path: the training data's new location (the .npz, image folder, manifest CSV
            or CIFAR-10 root), as the dataset's source reads it.
        eval_data_path: the evaluation set's new location, or None to leave it.

    Returns:
        ``{"run_dir", "dataset", "eval_dataset"}``: per moved set ``{"from", "to",
        "evidence"}`` (what showed it is the recorded data), ``eval_dataset`` None when not
        moved; nothing is written when ``to`` equals ``from`` for every set.

    Raises:
        InputError: the data at the new place is missing, does not load or is other data
            (the message says what differs: count, ids or images), the run records no spec
            to relocate, or a training holds the run. run.json is then left as it was.
        RunDirError: ``run_dir`` is not a run directory.
    """
    run_path = Path(run_dir)
    open_run(run_path)  # a run directory of this schema version, else RunDirError
    busy = (f"{run_path} is being written by a gwa-diag train right now: wait for it to finish (or stop it), "
            "then relocate")
    with exclusive_lock(run_path, busy, error=InputError):
        meta_file = run_path / "run.json"
        meta = json.loads(meta_file.read_text())
        moves: list[dict[str, Any]] = []
        result: dict[str, Any] = {"run_dir": str(run_path), "dataset": None, "eval_dataset": None}
        new_meta = copy.deepcopy(meta)
        for key, new_place in (("dataset", data_path), ("eval_dataset", eval_data_path)):
            if new_place is None:
                continue
            spec, old, new = _moved_spec(run_path, meta, key, new_place)
            if key == "dataset":
                evidence = _check_train(run_path, meta, spec, old, new)
            else:
                evidence = _check_eval(run_path, meta, spec, new)
            result[key] = {"from": old, "to": new, "evidence": evidence}
            if new != old:
                new_meta[key] = spec
                moves.append({"dataset": key, "from": old, "to": new, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        if moves:
            new_meta["relocations"] = [*(meta.get("relocations") or []), *moves]
            atomic_write_bytes(meta_file, (json.dumps(new_meta, indent=2) + "\n").encode())
    return result


def _data_slots(spec: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Every (spec, key) that holds a data location: the top spec's and those of nested
    specs (a derived dataset's ``of``), never a label step's."""
    slots = []
    key = _PATH_KEYS.get(spec.get("source"))  # type: ignore[arg-type]
    if key is not None and spec.get(key) is not None:
        slots.append((spec, key))
    for name, value in spec.items():
        if name == "steps":
            continue
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, dict) and "source" in child:
                slots.extend(_data_slots(child))
    return slots


def _moved_spec(
    run_path: Path, meta: dict[str, Any], key: str, new_place: str | os.PathLike[str]
) -> tuple[dict[str, Any], str, str]:
    """(the spec under ``key`` with the new location, the old location, the new one)."""
    option = "--data-path" if key == "dataset" else "--eval-data-path"
    spec = meta.get(key)
    if not isinstance(spec, dict):
        raise InputError(f"cannot relocate {run_path}: its run.json records no {key!r} spec, so there is no "
                         f"data location to change; drop {option}")
    spec = copy.deepcopy(spec)
    slots = _data_slots(spec)
    if not slots:
        raise InputError(f"cannot relocate {run_path}: its {key!r} spec (source {spec.get('source')!r}) names no "
                         "data path (in-memory arrays or the bundled sample data): there is nothing to move")
    olds = sorted({str(s[k]) for s, k in slots})
    if len(olds) > 1:
        raise InputError(f"cannot relocate {run_path}: its {key!r} spec names several data locations "
                         f"({', '.join(olds)}), so one new path cannot replace them")
    new_p = Path(new_place).expanduser()
    if not new_p.exists():
        raise MissingFileError(f"cannot relocate {run_path}: {option} {new_p} does not exist; pass the data's "
                               f"new location (it was {olds[0]})")
    new = str(new_p.resolve())
    for s, k in slots:
        s[k] = new
    return spec, olds[0], new


def _load(run_path: Path, spec: dict[str, Any], new: str, what: str) -> Any:
    """The dataset of ``spec``; a failure says whether the data or a label step failed."""
    try:
        load_dataset(spec, with_labels=False)
    except InputError as exc:
        raise InputError(f"cannot relocate {run_path}: the {what} at {new} does not load: {exc}. "
                         "run.json is unchanged") from exc
    try:
        return load_dataset(spec)
    except InputError as exc:
        raise InputError(f"cannot relocate {run_path}: the {what} at {new} loads, but the run's label steps "
                         f"fail: {exc}. relocate moves the data path only (label and exclusion files keep "
                         "theirs); run.json is unchanged") from exc


def _check_train(run_path: Path, meta: dict[str, Any], spec: dict[str, Any], old: str, new: str) -> str:
    """Refuse other data than the run trained on; return the evidence that it is the same."""
    ds = _load(run_path, spec, new, "data")
    recorded = meta.get("data_fingerprint")
    if recorded is not None and data_fingerprint(ds) == recorded:
        return "data fingerprint"
    labels = open_run(run_path).labels()
    n_recorded = meta.get("num_samples", None if labels is None else len(labels))
    ids_recorded = None if labels is None else labels["sample_id"].to_numpy()
    ids = np.asarray(ds.sample_ids, dtype=np.int64)
    differs = None
    if n_recorded is not None and len(ds) != int(n_recorded):
        differs = f"it holds {len(ds)} samples, the run trained on {int(n_recorded)}"
    elif ids_recorded is not None and not np.array_equal(ids, ids_recorded):
        same_len = len(ids) == len(ids_recorded)
        pos = int(np.argmax(ids != ids_recorded)) if same_len else 0
        differs = (f"its sample ids differ from the recorded ones (position {pos}: id {int(ids[pos])}, "
                   f"recorded {int(ids_recorded[pos])})")
    elif recorded is None:
        return "sample count and ids (run.json records no data fingerprint)"
    if differs is None and _same_files(spec, old):
        return "relative paths and file sizes"
    if differs is None:
        differs = (f"the same {len(ds)} sample ids, but other images (files replaced, reordered or decoded "
                   "differently; the data fingerprint differs)")
    raise InputError(f"cannot relocate {run_path}: the data at {new} is not the data this run trained on: "
                     f"{differs}. run.json is unchanged; point --data-path at a copy of the recorded data")


def _same_files(spec: dict[str, Any], old: str) -> bool:
    """An image folder whose files have the same relative paths and sizes as the folder at
    the old place (when that is still readable)."""
    if spec.get("source") != "image_folder" or not Path(old).is_dir():
        return False
    try:
        new_ds = load_dataset(spec, with_labels=False)
        old_ds = load_dataset({**spec, "root": old}, with_labels=False)
        rel = new_ds.relative_paths()
        if rel != old_ds.relative_paths():
            return False
        return all(os.path.getsize(a) == os.path.getsize(b) for a, b in zip(new_ds.paths, old_ds.paths))
    except (InputError, OSError):
        return False


def _check_eval(run_path: Path, meta: dict[str, Any], spec: dict[str, Any], new: str) -> str:
    """The evaluation set must load (with the recorded sample count, when one is)."""
    ds = _load(run_path, spec, new, "evaluation data")
    n_recorded = meta.get("eval_num_samples")
    if n_recorded is None:
        return "loads (no evaluation sample count recorded)"
    if len(ds) != int(n_recorded):
        raise InputError(f"cannot relocate {run_path}: the evaluation data at {new} holds {len(ds)} samples, the "
                         f"run evaluated on {int(n_recorded)}. run.json is unchanged; point --eval-data-path at a "
                         "copy of the recorded evaluation set")
    return "sample count"
