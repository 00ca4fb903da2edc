"""The one harness of the benchmarks: what every script in ``bench/`` shares.

* the data: the CIFAR-10 / CIFAR-10-N files under ``--data``, the first-n subset, label sets
  (CIFAR-10-N or synthetic pair noise), the clean test set and the validation split;
* the training recipes, each under one name (:data:`RECIPES`), as the engine's
  :class:`~gwa_diag.training.config.TrainConfig`: every bench training goes through
  :func:`gwa_diag.training.engine.train` (or its :func:`~gwa_diag.training.engine.train_step`);
* the shared command-line arguments (:func:`add_common_args`) and the pages: each script
  writes its tables to ``docs/benchmarks/<script>.md`` and its numbers to ``<script>.json``
  through :func:`write_page`, the run information (command, hardware, date, wall time) kept
  apart below :data:`RUN_INFO`, so that two runs of a deterministic benchmark differ only there;
* reading runs through the store's reader (:func:`per_epoch_means`), scoring checkpoints on
  un-augmented images (:func:`predict_probs`) and the cleanlab / Gaussian-mixture peers.

    python bench/harness.py headline      # docs/benchmarks/headline.md from the pages' JSON

Scripts run as ``python bench/<script>.py`` (``bench/`` is then on ``sys.path``) and import
only from gwa_diag and from this module, never from each other.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from gwa_diag.analysis.metrics import auroc, average_precision, precision_recall_at_k, rule_scores
from gwa_diag.store import Run, atomic_write_bytes, open_run
from gwa_diag.training.batches import channel_stats
from gwa_diag.training.config import TrainConfig
from gwa_diag.training.data import (
    CIFAR10N_LABEL_SETS, ArrayDataset, load_cifar10n, load_npz, with_cifar10n, with_noise,
)
from gwa_diag.training.engine import autocast_dtype
from gwa_diag.training.models import build_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
#: Where the pages go unless ``--pages-dir`` says otherwise.
PAGES = REPO / "docs" / "benchmarks"
INSTALL_HINT = "pip install -r bench/requirements.txt"
#: The line that opens a page's run information; everything below it changes from run to run.
RUN_INFO = "<!-- run info -->"
HEADLINE_START, HEADLINE_END = "<!-- headline:start -->", "<!-- headline:end -->"
MODEL_NAMES = {"tiny": "tiny CNN", "resnet18_cifar": "CIFAR ResNet-18"}


# -- recipes ----------------------------------------------------------------------------------
#: Every training recipe of the benchmarks, one name each; ``gpu`` holds what changes on a
#: CUDA device (CIFAR ResNet-18, bf16). ``decay`` is the engine's own default recipe.
_ENGINE = TrainConfig()  # the engine's defaults, read here so that they are never restated
#: AdamW at a constant rate without augmentation: the memorising recipes differ from it in one knob each.
_CONSTANT = {"optimizer": "adamw", "batch_size": 128, "weight_decay": 0.0, "warmup_epochs": 0.0,
             "schedule": "constant", "augment": False}
RECIPES: dict[str, dict[str, Any]] = {
    "decay": {"optimizer": _ENGINE.optimizer, "lr": _ENGINE.lr, "batch_size": _ENGINE.batch_size,
              "weight_decay": _ENGINE.weight_decay, "warmup_epochs": _ENGINE.warmup_epochs,
              "schedule": _ENGINE.schedule, "augment": _ENGINE.augment, "gpu": {"lr": 0.2, "batch_size": 512}},
    # The recipe of the regimes tables, and of gpu_runs/mem_worst on a GPU.
    "memorise": {**_CONSTANT, "lr": 3e-3, "gpu": {"lr": 1e-3, "batch_size": 512}},
    "finetune": {**_CONSTANT, "lr": 3e-4, "mode": "finetune"},
    # Slow memorisers: a lower rate, strong weight decay or a larger batch.
    "slow_lr": {**_CONSTANT, "lr": 3e-4},
    "slow_wd": {**_CONSTANT, "lr": 1e-3, "weight_decay": 0.3},
    "slow_batch": {**_CONSTANT, "lr": 1e-3, "batch_size": 1024},
}
#: The model, precision and device of each kind of machine.
MACHINES: dict[str, dict[str, str]] = {"cpu": {"model": "tiny", "precision": "fp32", "device": "cpu"},
                                       "gpu": {"model": "resnet18_cifar", "precision": "bf16", "device": "cuda"}}


def recipe(name: str, *, epochs: int, seed: int = 0, hw: str = "cpu", device: str | None = None,
           **change: Any) -> TrainConfig:
    """The :class:`TrainConfig` of recipe ``name`` on machine ``hw`` (``cpu`` or ``gpu``),
    with ``change`` (any TrainConfig field) applied last; a CPU ``device`` trains in fp32."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
    if hw not in MACHINES:
        raise ValueError(f"unknown machine {hw!r}: choose from {', '.join(MACHINES)}")
    spec = {k: v for k, v in RECIPES[name].items() if k != "gpu"}
    if hw == "gpu":
        spec.update(RECIPES[name].get("gpu", {}))
    machine = MACHINES[hw]
    cfg = TrainConfig(epochs=epochs, seed=seed, precision=machine["precision"], device=device or machine["device"],
                      progress=False, **spec)
    if cfg.device == "cpu":
        cfg.precision = "fp32"  # a toy check of a GPU recipe on the CPU
    for key, value in change.items():
        setattr(cfg, key, value)
    return cfg


def describe(cfg: TrainConfig) -> str:
    """One line for people: optimiser, rate, batch, schedule, decay, augmentation, epochs."""
    opt = "AdamW" if cfg.optimizer == "adamw" else f"SGD nesterov (momentum {cfg.momentum:g})"
    sched = ("constant rate" if cfg.schedule == "constant"
             else f"{cfg.warmup_epochs:g} warm-up epochs then {cfg.schedule} decay")
    return (f"{opt} lr {cfg.lr:g}, batch {cfg.batch_size}, {sched}, weight decay {cfg.weight_decay:g}, "
            f"{'crop+flip' if cfg.augment else 'no augmentation'}, {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}, "
            f"GWA mode {cfg.mode}")


def new_model(name: str, num_classes: int, seed: int) -> torch.nn.Module:
    """A freshly initialised preset (``tiny`` or ``resnet18_cifar``), seeded first."""
    torch.manual_seed(seed)
    return build_model(name, num_classes)


#: The CIFAR-10-N label sets any tuning looked at, and those kept for a held-out check.
TUNING_SETS = ("worst", "aggre", "random1")
HELD_OUT_SETS = ("random2", "random3")


def earliest_best(values: dict[int, float | None]) -> int | None:
    """The key of the highest value (the earliest key on ties), ignoring None and NaN; None
    if there is no value."""
    known = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
    return min(known, key=lambda k: (-known[k], k)) if known else None


# -- machine and command line -----------------------------------------------------------------
def hardware(device: torch.device | None = None) -> str:
    """One line: CPU model and cores, torch threads, the GPU used (or present, or none), torch
    and python versions."""
    device = device or torch.device("cpu")
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    line = f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        line += f"; GPU: {torch.cuda.get_device_name(device)}"
    elif torch.cuda.is_available():
        line += f"; GPU present but unused: {torch.cuda.get_device_name(0)}"
    else:
        line += "; GPU: none"
    return line + f"; torch {torch.__version__}, python {sys.version.split()[0]}"


def device_name(device: torch.device) -> str:
    """The device a measurement ran on, for a table: the GPU's name, or the CPU and its torch threads."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed from the repository root: ``python bench/<script>.py ARGS``."""
    args = sys.argv[1:] if argv is None else argv
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO), *args])


def add_common_args(ap: argparse.ArgumentParser, *, data: bool = True, quick: str | None = None,
                    workers: bool = False, seed: bool = False) -> None:
    """The arguments every benchmark spells the same way: ``--pages-dir`` always; ``--data``,
    ``--quick`` (its help: ``quick``), ``--workers`` and ``--seed`` where asked for."""
    ap.add_argument("--pages-dir", type=Path, default=PAGES,
                    help="folder of the page (<script>.md) and its numbers (<script>.json) (default docs/benchmarks)")
    if data:
        ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="folder with cifar10/, cifar10n/ and gpu_runs/ (default: ../shared/data from the repo root)")
    if quick is not None:
        ap.add_argument("--quick", action="store_true", help=quick)
    if workers:
        ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes of one thread each (default: min(2, CPUs))")
    if seed:
        ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")


def add_recipe_args(ap: argparse.ArgumentParser, seed_help: str) -> None:
    """The options that change the recipe ``decay`` of a script's trainings (None: the recipe's)."""
    ap.add_argument("--batch-size", type=int, help="default: cpu 256, gpu 512")
    ap.add_argument("--lr", type=float, help="peak SGD learning rate (default: cpu 0.1, gpu 0.2)")
    ap.add_argument("--warmup-epochs", type=float, help="linear warm-up epochs before the linear decay (default 2)")
    ap.add_argument("--seed", type=int, default=0, help=seed_help)
    ap.add_argument("--progress", action="store_true", help="show the engine's per-epoch progress bar")


def decay_config(args: argparse.Namespace, sizes: dict[str, Any]) -> TrainConfig:
    """Fill the unset recipe options of ``args`` (:func:`add_recipe_args`, ``--epochs``,
    ``--n``) from ``sizes`` and the recipe ``decay`` on ``args.mode``'s machine, set
    ``args.model``, ``precision`` and ``device``; return the TrainConfig of its trainings."""
    base = recipe("decay", epochs=1, hw=args.mode, device=MACHINES[args.mode]["device"])
    for key, value in {**sizes, **MACHINES[args.mode], "precision": base.precision, "batch_size": base.batch_size,
                       "lr": base.lr, "warmup_epochs": base.warmup_epochs}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return recipe("decay", epochs=args.epochs, seed=args.seed, hw=args.mode, device=args.device,
                  batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs, progress=args.progress)


# -- pages ------------------------------------------------------------------------------------
def page_text(markdown: str, info: dict[str, Any]) -> str:
    """The page: ``markdown``, then :data:`RUN_INFO` and one ``- key: value`` line per item of
    ``info`` (command, hardware, date, wall time, timings)."""
    lines = [markdown.rstrip("\n"), "", RUN_INFO]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    return "\n".join(lines) + "\n"


def numbers_text(numbers: dict[str, Any], info: dict[str, Any]) -> str:
    """The JSON file: ``{"numbers": ..., "run_info": ...}``, keys sorted and one value a line,
    so the run information is the trailing block and the same numbers give the same bytes."""
    return json.dumps({"numbers": numbers, "run_info": info}, indent=1, sort_keys=True, default=_plain) + "\n"


def _plain(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj.tolist() if isinstance(obj, np.ndarray) else obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not a JSON value: convert it before write_page")


def write_page(script: str, markdown: str, numbers: dict[str, Any], *, pages_dir: Path, wall_s: float,
               device: torch.device | None = None, timings: dict[str, Any] | None = None,
               argv: list[str] | None = None, now: dt.datetime | None = None) -> tuple[Path, Path]:
    """Write ``pages_dir/<script>.md`` (``markdown`` + the run information) and
    ``pages_dir/<script>.json`` (``numbers`` + the same run information), each atomically.
    ``script``: a file name or path (``__file__``). Returns (the page, the JSON file)."""
    name = Path(script).stem
    now = now or dt.datetime.now(dt.timezone.utc)
    info: dict[str, Any] = {"command": f"`{command_line(argv)}`", "hardware": hardware(device),
                            "date": now.strftime("%Y-%m-%d %H:%M UTC"), "wall time": f"{wall_s:.1f} s"}
    info.update({k: v for k, v in (timings or {}).items()})
    pages_dir = Path(pages_dir)
    pages_dir.mkdir(parents=True, exist_ok=True)
    page = atomic_write_bytes(pages_dir / f"{name}.md", page_text(markdown, info).encode())
    data = atomic_write_bytes(pages_dir / f"{name}.json", numbers_text(numbers, info).encode())
    return page, data


def without_run_info(text: str) -> str:
    """A page or JSON file without its run information (what two runs must share)."""
    if RUN_INFO in text:
        return text.split(RUN_INFO, 1)[0]
    return re.sub(r'\n "run_info": \{.*', "", text, flags=re.DOTALL)


def headline_rows(pages_dir: Path) -> list[tuple[str, str, str]]:
    """(script, result, value) of every ``numbers["headline"]`` entry of the JSON files in
    ``pages_dir``, by script name."""
    rows = []
    for path in sorted(Path(pages_dir).glob("*.json")):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            for item in json.loads(path.read_text()).get("numbers", {}).get("headline", []):
                rows.append((path.stem, str(item["result"]), str(item["value"])))
    return rows


def write_headline(pages_dir: Path, readme: Path | None) -> str:
    """``pages_dir/headline.md`` from the pages' headline entries; the same table replaces
    what lies between :data:`HEADLINE_START` and :data:`HEADLINE_END` in ``readme`` when both
    markers are there (they are never added here)."""
    rows = headline_rows(pages_dir)
    table = markdown_table(["benchmark", "result", "value"], [[f"[{s}]({s}.md)", r, v] for s, r, v in rows]
                           or [["-", "no benchmark page with a headline yet", "-"]])
    text = "\n".join(table) + "\n"
    atomic_write_bytes(Path(pages_dir) / "headline.md", ("# Headline results\n\n" + text).encode())
    if readme is not None:
        splice(readme, HEADLINE_START, HEADLINE_END, text.replace("](", "](docs/benchmarks/"))
    return text


def splice(path: Path, start: str, end: str, body: str) -> bool:
    """Replace what lies between the markers ``start`` and ``end`` of the file ``path`` by a
    line break and ``body``; False, the file untouched, unless it holds both (in that order)."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if start not in text or end not in text.split(start, 1)[1]:
        return False
    head, rest = text.split(start, 1)
    atomic_write_bytes(path, f"{head}{start}\n{body}{end}{rest.split(end, 1)[1]}".encode())
    return True


# -- data -------------------------------------------------------------------------------------
class DataFiles(NamedTuple):
    """The data files under ``--data``."""

    train: Path   #: the first 20,000 CIFAR-10 training images (row = CIFAR-10 training index)
    test: Path    #: the first 1,000 CIFAR-10 test images
    labels: Path  #: the CIFAR-10-N human labels


#: The training images a lent GPU machine carries (shared/device/pack: the first 15,000 of the 20,000).
DEVICE_TRAIN_FILE = "train_first15000.npz"


def data_files(data: Path, *, first15000: bool = False) -> DataFiles:
    """The CIFAR-10 and CIFAR-10-N files under ``data``; exits with a message when one is missing.
    ``first15000``: take ``cifar10/train_first15000.npz`` (the same rows, on a GPU machine)
    when the 20,000-image file is absent."""
    train = Path(data) / "cifar10" / "train_first20000.npz"
    if first15000 and not train.is_file():
        train = Path(data) / "cifar10" / DEVICE_TRAIN_FILE
    files = DataFiles(train, Path(data) / "cifar10" / "test_first1000.npz", Path(data) / "cifar10n" / "CIFAR-10_human.pt")
    for p in files:
        if not p.is_file():
            raise SystemExit(f"missing data file {p}: pass --data pointing at the folder with cifar10/ and cifar10n/")
    return files


class Cifar(NamedTuple):
    """What the CIFAR benchmarks read once: the training images (row = CIFAR-10 training
    index), their first ``n`` (the pool), the test images, the clean labels of every row and
    the CIFAR-10-N label file."""

    full: ArrayDataset
    pool: ArrayDataset
    test: ArrayDataset
    clean: np.ndarray
    labels: Path


def load_cifar(data: Path, n: int, *, first15000: bool = False) -> Cifar:
    """:class:`Cifar` from the files under ``data`` (:func:`data_files`); exits with a message
    when ``n`` is not between 1 and the number of training images."""
    files = data_files(data, first15000=first15000)
    full = load_npz(files.train)
    if not 1 <= n <= len(full):
        raise SystemExit(f"--n must be between 1 and {len(full):,} (the images of {files.train.name}), got {n}")
    clean = np.asarray(load_cifar10n(files.labels)["clean_label"], dtype=np.int64)
    return Cifar(full, first_images(full, n), load_npz(files.test), clean, files.labels)


def first_images(full: ArrayDataset, n: int) -> ArrayDataset:
    """The first ``n`` rows of ``full``: ids 0..n-1 stay CIFAR-10 training indices."""
    return ArrayDataset(full.images_nchw[:n], full.labels[:n], sample_ids=full.sample_ids[:n],
                        class_names=full.class_names, spec={"source": "arrays", "of": full.spec, "first": n})


def subset(dataset: ArrayDataset, positions: np.ndarray, note: dict[str, Any]) -> ArrayDataset:
    """The samples of an in-memory dataset at ``positions`` (labels, ids and clean labels kept)."""
    clean = dataset.clean_labels[positions] if dataset.clean_labels is not None else None
    return ArrayDataset(dataset.images_nchw[positions], dataset.labels[positions],
                        sample_ids=dataset.sample_ids[positions], clean_labels=clean,
                        class_names=dataset.class_names, spec={"source": "arrays", "of": dataset.spec, **note})


def pair_rate(name: str) -> float | None:
    """The rate of a synthetic pair-noise set named ``pair<percent>`` (e.g. pair30), else None."""
    digits = name[4:] if name.startswith("pair") else ""
    return int(digits) / 100 if digits.isdigit() and 0 < int(digits) < 100 else None


def label_set_names(text: str, *, pairs: bool = True) -> list[str]:
    """The comma-separated label sets of an option: CIFAR-10-N sets, or ``pairNN`` where
    ``pairs``; exits naming the unknown ones and the choices."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if (s not in CIFAR10N_LABEL_SETS or s == "clean") and not (pairs and pair_rate(s))]
    if bad or not names:
        raise SystemExit(f"unknown label set(s) {bad}: choose from {', '.join(k for k in CIFAR10N_LABEL_SETS if k != 'clean')}"
                         + (" or pairNN (NN% synthetic pair noise)" if pairs else ""))
    return names


def labelled(name: str, train_base: ArrayDataset, label_path: Path) -> ArrayDataset:
    """The training images with a CIFAR-10-N label set, or with synthetic pair noise (class c
    -> c + 1, a fixed share of every class, seed 0) on their clean CIFAR-10 labels."""
    rate = pair_rate(name)
    if rate is None:
        return with_cifar10n(train_base, label_path, label_set=name)
    return with_noise(with_cifar10n(train_base, label_path, label_set="clean"), rate=rate, kind="pair", seed=0)


def clean_test_set(test: ArrayDataset, full: ArrayDataset, rows: np.ndarray, clean_labels: np.ndarray) -> ArrayDataset:
    """An evaluation set of clean labels: the images of ``test`` plus the training images of
    ``full`` at ``rows`` (never trained on by the caller) with their clean labels
    ``clean_labels[rows]`` (indexed by CIFAR-10 training index). Sample ids are 0..N-1."""
    rows = np.asarray(rows, dtype=np.int64)
    images = torch.cat([test.images_nchw, full.images_nchw[torch.as_tensor(rows)]])
    labels = np.concatenate([np.asarray(test.labels, dtype=np.int64), np.asarray(clean_labels, dtype=np.int64)[rows]])
    spec = {"source": "arrays", "of": [test.spec, full.spec],
            "training_rows": [int(rows[0]), int(rows[-1]) + 1] if len(rows) else [], "labels": "clean"}
    return ArrayDataset(images, labels, class_names=test.class_names, spec=spec)


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions) of ``n`` rows, both ascending: a random
    ``fraction`` (rounded, at least one row when ``n > 1``) held out, drawn with ``seed``."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    n_val = min(max(int(round(fraction * n)), 1 if n > 1 else 0), max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# -- runs and checkpoints ---------------------------------------------------------------------
def per_epoch_means(run: Run | Path, column: str, ids: Any) -> tuple[np.ndarray, list[int]]:
    """Mean of ``column`` per (sample in ``ids``, complete epoch) [len(ids), epochs], NaN where
    a sample has no finite value that epoch; presentations within an epoch averaged. Read
    through the store's reader."""
    run = open_run(run)
    epochs = run.completed_epochs()
    rows = run.samples(columns=["sample_id", column])
    values = rows[column].to_numpy(dtype=np.float64)
    rows = rows.assign(**{column: values})[np.isfinite(values)]
    got = rows.groupby(["sample_id", "epoch"], sort=False)[column].mean()
    out = np.full((len(ids), len(epochs)), np.nan)
    at = ids.get_indexer(got.index.get_level_values("sample_id"))
    col = np.searchsorted(epochs, got.index.get_level_values("epoch").to_numpy(dtype=np.int64))
    keep = at >= 0
    out[at[keep], col[keep]] = got.to_numpy()[keep]
    return out, list(epochs)


def normalisation(images: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the channels of uint8 ``images``, shaped [1, 3, 1, 1]: the input
    normalisation the engine trains with."""
    mean, std = channel_stats(images.to(device))
    return mean[None, :, None, None], std[None, :, None, None]


def load_model(checkpoint: Path, model_name: str, num_classes: int,
               device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode on ``device`` with the weights of ``checkpoint``, the checkpoint)."""
    ckpt = torch.load(checkpoint, map_location=device, weights_only=True)
    model = build_model(model_name, num_classes)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, ckpt


@torch.no_grad()
def predict_probs(run_dir: Path, model_name: str, dataset: ArrayDataset, device: torch.device, precision: str,
                  batch: int = 1024, *, positions: np.ndarray | None = None, trained_on: torch.Tensor | None = None,
                  checkpoint: str = "last.pt") -> np.ndarray:
    """Softmax probabilities ``[len(positions), C]`` of a checkpoint of ``run_dir`` on the
    un-augmented images of ``dataset`` at ``positions`` (default: all, in order), normalised
    as the engine normalised them while training: with the channel statistics of the uint8
    images ``trained_on`` (default: all of ``dataset``'s)."""
    model, _ = load_model(run_dir / "checkpoints" / checkpoint, model_name, dataset.num_classes, device)
    images = dataset.images_nchw
    mean, std = normalisation(images if trained_on is None else trained_on, device)
    images = images if positions is None else images[torch.as_tensor(positions)]
    dtype = autocast_dtype(precision, device)
    out = [torch.zeros(0, dataset.num_classes)]
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for s in range(0, len(images), batch):
            x = (images[s : s + batch].to(device).float().div_(255) - mean) / std
            out.append(F.softmax(model(x).float(), dim=1).cpu())
    return torch.cat(out).double().numpy()


# -- peers ------------------------------------------------------------------------------------
def cleanlab_installed() -> bool:
    """Whether cleanlab (an optional, benchmark-only dependency) can be imported."""
    try:
        for module in ("cleanlab.filter", "cleanlab.rank"):
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def cleanlab_flags(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Boolean mask of the samples ``cleanlab.filter.find_label_issues`` flags (default settings)."""
    from cleanlab.filter import find_label_issues

    probs = probs / probs.sum(axis=1, keepdims=True)  # exact row sums for cleanlab's checks
    return np.asarray(find_label_issues(labels, probs, n_jobs=1), dtype=bool)


def cleanlab_row(labels: np.ndarray, probs: np.ndarray, is_noisy: np.ndarray, *, passes: int) -> dict[str, float]:
    """Detection metrics of cleanlab on one probability matrix: ranking by
    ``get_label_quality_scores`` (self-confidence), flags (P / R / F1 / count) by
    :func:`cleanlab_flags`."""
    from cleanlab.rank import get_label_quality_scores

    flags = cleanlab_flags(labels, probs)
    probs = probs / probs.sum(axis=1, keepdims=True)
    score = -get_label_quality_scores(labels, probs, method="self_confidence")  # lower quality = more suspicious
    p_k, r_k = precision_recall_at_k(score, is_noisy)
    row = {"auroc": auroc(score, is_noisy), "ap": average_precision(score, is_noisy), "p_at_k": p_k, "r_at_k": r_k}
    return {**row, **rule_scores(flags, is_noisy), "passes": passes}


def mixture_row(score: np.ndarray, is_noisy: np.ndarray) -> dict[str, Any]:
    """A count of wrong labels by DivideMix's route: a two-component Gaussian mixture over one
    per-sample score (higher = more suspicious); the samples whose posterior for the
    higher-mean component exceeds 0.5 are counted, and that many are flagged from the top of
    the score. Needs scikit-learn (``bench/requirements.txt``)."""
    from sklearn.mixture import GaussianMixture

    x = np.nan_to_num(score, nan=np.nanmin(score))[:, None]
    gmm = GaussianMixture(2, random_state=0, n_init=3).fit(x)
    high = int(np.argmax(gmm.means_.ravel()))
    count = int((gmm.predict_proba(x)[:, high] > 0.5).sum())
    flags = np.zeros(len(score), dtype=bool)
    flags[np.argsort(-x.ravel(), kind="stable")[:count]] = True
    return rule_scores(flags, is_noisy)


# -- processes --------------------------------------------------------------------------------
@contextlib.contextmanager
def worker_pool(workers: int, initializer: Callable[..., None], initargs: tuple) -> Iterator[Any]:
    """A pool of ``workers`` spawned processes; on Ctrl-C or a failed run the workers are
    stopped before the caller removes the run directories they write into."""
    import multiprocessing as mp

    pool = mp.get_context("spawn").Pool(workers, initializer=initializer, initargs=initargs)
    try:
        yield pool
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def run_jobs(workers: int, init: Callable[..., None], initargs: tuple, work: Callable[[Any], Any],
             jobs: tuple[list, list, list], finish: Callable[[Any], None]) -> None:
    """Run ``work`` on ``jobs`` = (pretrainings, the jobs that need them, the rest) in
    ``workers`` spawned processes of one thread each (1: in this process, with torch's own
    thread count): the pretrainings first, while the rest keep the other workers busy; each
    result goes to ``finish`` as it comes, in submission order."""
    pre, after, free = jobs
    if workers == 1:
        init(*initargs[:-1], None)  # the last init argument: the threads of a worker
        for job in pre + free + after:
            finish(work(job))
        return
    with worker_pool(workers, init, initargs) as pool:
        first = [pool.apply_async(work, (job,)) for job in pre]
        rest = [pool.apply_async(work, (job,)) for job in free]
        for handle in first:
            finish(handle.get())
        rest += [pool.apply_async(work, (job,)) for job in after]
        for handle in rest:
            finish(handle.get())


def sync(device: torch.device) -> None:
    """Wait for the device, so that a timer reads finished work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def markdown_table(head: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    """A Markdown table; ``align`` holds one character per column, ``r`` for a right-aligned one."""
    rule = "|" + "|".join("---:" if c == "r" else "---" for c in align.ljust(len(head), "l")) + "|"
    return ["| " + " | ".join(head) + " |", rule, *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table cell; ``-`` for None, NaN and infinities."""
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["headline"], help="headline: docs/benchmarks/headline.md (and README's block)")
    ap.add_argument("--pages-dir", type=Path, default=PAGES, help="folder of the pages (default docs/benchmarks)")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md",
                    help="README whose headline block (between its markers, if any) is replaced")
    args = ap.parse_args(argv)
    print(write_headline(args.pages_dir, args.readme), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
