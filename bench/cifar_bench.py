"""What the CIFAR-10 / CIFAR-10-N benchmarks share: the hardware line they print, their data
files under ``--data``, the first-n training subset, the ``TrainConfig`` of their SGD recipe,
the optional cleanlab check, and loading a run's checkpoint to score un-augmented images.

Used by ``bench/detect_cifar10n.py``, ``bench/clean_and_retrain.py``,
``bench/early_stopping.py`` and ``bench/regimes.py`` (which also uses the clean test set and
the validation split at the end of this file), which run as ``python bench/<script>.py`` (so ``bench/`` is on
``sys.path``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import platform
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from gwa_diag.training.batches import channel_stats
from gwa_diag.training.data import ArrayDataset
from gwa_diag.training.engine import TrainConfig
from gwa_diag.training.models import resnet18_cifar, tiny_cnn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
INSTALL_HINT = "pip install -r bench/requirements.txt"
MODEL_BUILDERS: dict[str, Callable[..., torch.nn.Module]] = {"tiny": tiny_cnn, "resnet18_cifar": resnet18_cifar}
#: The recipes the CIFAR benchmarks share: a tiny CNN on 5,000 images on the CPU, and the
#: reference setting (CIFAR ResNet-18, bf16) on a CUDA device; each script may change ``n``.
CPU_RECIPE: dict[str, Any] = {"model": "tiny", "n": 5000, "epochs": 15, "batch_size": 256, "lr": 0.1,
                              "warmup_epochs": 2.0, "precision": "fp32", "device": "cpu"}
GPU_RECIPE: dict[str, Any] = {"model": "resnet18_cifar", "n": 20000, "epochs": 40, "batch_size": 512, "lr": 0.2,
                              "warmup_epochs": 2.0, "precision": "bf16", "device": "cuda"}


def hardware(device: torch.device) -> str:
    """One line: CPU model and cores, torch threads, the GPU used (or present, or none), torch
    and python versions."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    line = f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        line += f"; GPU: {torch.cuda.get_device_name(device)}"
    elif torch.cuda.is_available():
        line += f"; GPU present but unused: {torch.cuda.get_device_name(0)}"
    else:
        line += "; GPU: none"
    return line + f"; torch {torch.__version__}, python {sys.version.split()[0]}"


class DataFiles(NamedTuple):
    """The data files under ``--data``."""

    train: Path   #: the first 20,000 CIFAR-10 training images (row = CIFAR-10 training index)
    test: Path    #: the first 1,000 CIFAR-10 test images
    labels: Path  #: the CIFAR-10-N human labels


#: The training images a lent GPU machine carries (shared/device/pack: the first 15,000 of the 20,000).
DEVICE_TRAIN_FILE = "train_first15000.npz"


def data_files(data: Path, *, first15000: bool = False) -> DataFiles:
    """The CIFAR-10 and CIFAR-10-N files under ``data``; exits with a message when one is missing.
    ``first15000``: take ``cifar10/train_first15000.npz`` (what shared/device/unpack.py rebuilds on
    a GPU machine, the same rows) when the 20,000-image file is absent."""
    train = data / "cifar10" / "train_first20000.npz"
    if first15000 and not train.is_file():
        train = data / "cifar10" / DEVICE_TRAIN_FILE
    files = DataFiles(train, data / "cifar10" / "test_first1000.npz", data / "cifar10n" / "CIFAR-10_human.pt")
    for p in files:
        if not p.is_file():
            raise SystemExit(f"missing data file {p}: pass --data pointing at the folder with cifar10/ and cifar10n/")
    return files


def first_images(full: ArrayDataset, n: int) -> ArrayDataset:
    """The first ``n`` rows of ``full``: ids 0..n-1 stay CIFAR-10 training indices."""
    return ArrayDataset(full.images_nchw[:n], full.labels[:n], sample_ids=full.sample_ids[:n],
                        class_names=full.class_names, spec={"source": "arrays", "of": full.spec, "first": n})


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The recipe of every training of a benchmark: SGD nesterov, linear warm-up then linear
    decay, crop+flip, from scratch, with the epochs, batch, lr, precision, device and seed of ``args``."""
    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer="sgd", momentum=0.9,
        weight_decay=5e-4, warmup_epochs=args.warmup_epochs, schedule="linear", augment=True,
        precision=args.precision, device=args.device, seed=args.seed, mode="scratch", progress=args.progress,
    )


def autocast_dtype(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` on a CUDA device; None (fp32) otherwise."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision) if device.type == "cuda" else None


def cleanlab_installed() -> bool:
    """Whether cleanlab (an optional, benchmark-only dependency) can be imported."""
    try:
        for module in ("cleanlab.filter", "cleanlab.rank"):
            importlib.import_module(module)
    except ImportError:
        return False
    return True


def load_model(checkpoint: Path, model_name: str, num_classes: int,
               device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model in eval mode on ``device`` with the weights of ``checkpoint``, the checkpoint)."""
    ckpt = torch.load(checkpoint, map_location=device, weights_only=True)
    model = MODEL_BUILDERS[model_name](num_classes)
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    return model, ckpt


def normalisation(images: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the channels of uint8 ``images``, shaped to broadcast over NCHW batches:
    the input normalisation the engine trains with."""
    mean, std = channel_stats(images.to(device))
    return mean[None, :, None, None], std[None, :, None, None]


@torch.no_grad()
def predict_probs(run_dir: Path, model_name: str, dataset: ArrayDataset, device: torch.device,
                  dtype: torch.dtype | None, batch: int, *, positions: np.ndarray | None = None,
                  stats_positions: np.ndarray | None = None) -> np.ndarray:
    """Softmax probabilities ``[len(positions), C]`` of the last-epoch checkpoint of ``run_dir``
    on the un-augmented images of ``dataset`` at ``positions`` (default: all, in order).

    Images are normalised exactly as the engine normalised them while training that run: with
    the channel statistics of its training images, ``dataset`` at ``stats_positions``
    (default: all of ``dataset``)."""
    model, _ = load_model(run_dir / "checkpoints" / "last.pt", model_name, dataset.num_classes, device)
    all_images = dataset.images_nchw
    stats_src = all_images if stats_positions is None else all_images[torch.as_tensor(stats_positions)]
    mean, std = normalisation(stats_src, device)
    images = all_images if positions is None else all_images[torch.as_tensor(positions)]
    out = []
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for s in range(0, len(images), batch):
            x = (images[s : s + batch].to(device).float().div_(255) - mean) / std
            out.append(F.softmax(model(x).float(), dim=1).cpu())
    if not out:
        return np.zeros((0, dataset.num_classes))
    return torch.cat(out).double().numpy()


def clean_test_set(test: ArrayDataset, full: ArrayDataset, rows: np.ndarray, clean_labels: np.ndarray) -> ArrayDataset:
    """An evaluation set of clean labels: the images of ``test`` plus the training images of
    ``full`` at ``rows`` (never trained on by the caller) with their clean labels
    ``clean_labels[rows]`` (``clean_labels`` indexed by CIFAR-10 training index). Sample ids are
    0..N-1 (an evaluation set is only scored as a whole)."""
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


@contextlib.contextmanager
def worker_pool(workers: int, initializer: Callable[..., None], initargs: tuple) -> Any:
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
