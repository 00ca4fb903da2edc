"""Synthetic recorded runs for the benchmarks and tests that need a run of a given size
without training one: :func:`write_synthetic_run`.

Torch-free on purpose (numpy, pyarrow and the store only): ``bench/app_speed.py`` times the
app's first imports, which must not find torch already loaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _images(n: int, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """32x32 RGB images: a class colour, a class-dependent stripe angle and noise, so that
    classes look different in the grid (pure noise would make every screenshot grey)."""
    hues = rng.integers(40, 216, size=(len(CLASS_NAMES), 3))
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    chunk = 5000
    for lo in range(0, n, chunk):
        lab = labels[lo : lo + chunk]
        m = len(lab)
        angle = (lab[:, None, None] * 0.3) + rng.normal(0, 0.15, size=(m, 1, 1))
        phase = rng.uniform(0, 6.28, size=(m, 1, 1))
        stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.6 + phase)
        base = hues[lab][:, None, None, :] * (0.55 + 0.45 * stripes[..., None])
        noise = rng.normal(0, 18, size=(m, 32, 32, 3))
        out[lo : lo + m] = np.clip(base + noise, 0, 255).astype(np.uint8)
    return out


def _moments(a: np.ndarray) -> dict:
    """Epoch-row statistics (same definitions as gwa_diag.alignment.gwa_from_scores, in numpy:
    the package's function needs torch, and torch must not be loaded before the timed steps,
    whose dataset load pays its import as the app does)."""
    a = a.astype(np.float64)
    mu = float(a.mean())
    d = a - mu
    m2 = float((d**2).mean())
    m4 = float((d**4).mean())
    kurt = m4 / m2**2 - 3.0
    denom = kurt + 1.2
    valid = denom > 0.05
    return {
        "n": len(a), "n_nan": 0, "mean": mu, "m2": m2, "m4": m4, "kurtosis": kurt,
        "gwa": mu / denom if valid else None, "valid": bool(valid),
        "reason": "ok" if valid else f"kurtosis + 1.2 = {denom:.4g} <= 0.05: GWA would explode or flip sign",
    }


def write_synthetic_run(
    path: str | Path,
    *,
    samples: int = 50_000,
    epochs: int = 40,
    noise_rate: float = 0.2,
    seed: int = 0,
    clean_labels: bool = True,
    id_base: int = 0,
) -> Path:
    """Write a finished synthetic run at ``path`` (run.json, labels, epochs, parts, and a
    dataset file): 10 classes, ``noise_rate`` of the labels flipped; clean
    samples' alignment rises over training, flipped ones start negative and are partly
    memorised late. Plausible, not simulated. Every epoch row holds what the recorder writes,
    the confidently contradicted share included.

    Returns ``path``. The dataset file is ``.<name>-dataset.npz`` beside ``path`` and run.json's
    ``dataset`` spec points at it, so ``gwa_diag.training.data.load_dataset`` finds the
    images. Sample ids are ``id_base + 0..samples-1``.
    """
    from gwa_diag.analysis.contradiction import contradicted
    from gwa_diag.store import SAMPLE_SCHEMA, RunWriter

    path = Path(path)
    rng = np.random.default_rng(seed)
    n, c = int(samples), len(CLASS_NAMES)
    clean = rng.integers(0, c, size=n)
    flipped = rng.random(n) < noise_rate
    given = np.where(flipped, (clean + rng.integers(1, c, size=n)) % c, clean)
    # Per-sample difficulty: some clean samples are hard (atypical), some flipped samples
    # get memorised early.
    difficulty = rng.beta(2, 5, size=n)
    memorise = rng.uniform(0.5, 1.3, size=n)
    npz = path.parent / f".{path.name}-dataset.npz"
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, images=_images(n, clean, rng), labels=given, sample_ids=id_base + np.arange(n),
             clean_labels=clean, class_names=np.array(CLASS_NAMES))
    spec = {"source": "npz", "path": str(npz.resolve()), "label_key": "labels", "image_key": "images",
            "id_key": "sample_ids", "clean_label_key": "clean_labels", "class_names": CLASS_NAMES,
            "num_classes": None, "steps": []}
    batch = 512
    steps_per_epoch = -(-n // batch)
    writer = RunWriter(path, meta={
        "config": {"epochs": epochs, "batch_size": batch, "mode": "scratch", "model": "synthetic"},
        "num_classes": c, "class_names": CLASS_NAMES, "num_samples": n, "dataset": spec,
        "model": "synthetic", "steps_per_epoch": steps_per_epoch,
    })
    writer.write_labels(id_base + np.arange(n), given, clean if clean_labels else None)
    for e in range(epochs):
        t = (e + 1) / epochs
        learn = 1.0 - np.exp(-4.0 * t)
        clean_a = 0.05 + 0.55 * learn * (1.0 - difficulty)
        # Memorisation starts late (past 80% of training for the quickest): before it, a
        # flipped sample is predicted as its true class, as in real runs of a few epochs.
        noisy_a = -0.35 * (1.0 - learn) - 0.25 * learn + 0.7 * np.clip(t * memorise - 0.8, 0, None)
        align = np.where(flipped, noisy_a, clean_a) + rng.normal(0, 0.12, size=n)
        align = np.clip(align, -1, 1).astype(np.float32)
        margin = (align * 8 + rng.normal(0, 0.5, size=n)).astype(np.float32)
        p_label = (1 / (1 + np.exp(-margin))).astype(np.float32)
        loss = (-np.log(np.clip(p_label, 1e-6, 1))).astype(np.float32)
        # Flipped samples are predicted as their true class until memorised.
        pred = np.where(margin > 0, given, np.where(flipped, clean, (given + 1) % c)).astype(np.int32)
        p_pred = np.where(pred == given, p_label, np.clip(1 - p_label, 0, 1) * 0.9).astype(np.float32)
        order = rng.permutation(n)
        step = e * steps_per_epoch + np.arange(n) // batch
        table = pa.table({
            "sample_id": id_base + order.astype(np.int64), "step": step.astype(np.int64), "label": given[order].astype(np.int32),
            "alignment": align[order], "margin": margin[order], "loss": loss[order], "p_label": p_label[order],
            "pred": pred[order], "p_pred": p_pred[order],
        }, schema=SAMPLE_SCHEMA)
        writer.write_samples(e, table)
        row = {"epoch": e, **_moments(align), "train_loss": float(loss.mean()),
               "train_acc": float((pred == given).mean()), "eval_acc": float(0.3 + 0.5 * learn - 0.1 * t * t),
               "lr": 0.1 * (1 - t), "seconds": 1.0, "end_step": (e + 1) * steps_per_epoch,
               "contradicted": float(contradicted(given, pred, p_label, p_pred, np.isfinite(align), c).mean())}
        writer.write_epoch(row)
    # What gwa_diag.train records at the end of a run: the GWA early-stopping choice.
    from gwa_diag.analysis.phase import selected_epoch

    writer.update_meta(status="finished", early_stopping=selected_epoch(path).as_dict())
    return path


def ensure_synthetic_run(path: str | Path, **kwargs) -> Path:
    """:func:`write_synthetic_run` unless a finished run with the same arguments is there
    (anything else at ``path`` is replaced); the arguments are kept in ``path/.synthetic.json``."""
    path = Path(path)
    marker = path / ".synthetic.json"
    wanted = json.dumps(kwargs, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return path
    shutil.rmtree(path, ignore_errors=True)
    write_synthetic_run(path, **kwargs)
    marker.write_text(wanted)
    return path
