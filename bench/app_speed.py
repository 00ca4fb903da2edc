"""How fast the app's data paths are on a CIFAR-sized synthetic run, on a cold cache.

    python bench/app_speed.py [--samples 50000] [--epochs 40] [--dir /tmp/gwa-app-bench]

Times summaries, the analysis, one epoch's alignment, one browse page (filter, sort, slice,
thumbnails) and one sample's trajectory. The run is built with :func:`write_synthetic_run`
(which the app's tests use too) in a temporary folder removed at the end, or once in --dir.
The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
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
    """Write a finished synthetic run at ``path`` (run.json, labels, epochs, parts, .npz): 10
    classes, ``noise_rate`` of the labels flipped; clean samples' alignment rises over training,
    flipped ones start negative and are partly memorised late. Plausible, not simulated.

    Returns ``path``. The dataset file is ``path/dataset.npz`` and run.json's ``dataset``
    spec points at it, so ``gwa_diag.training.data.load_dataset`` finds the images. Sample ids are
    ``id_base + 0..samples-1``.
    """
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
               "lr": 0.1 * (1 - t), "seconds": 1.0}
        writer.write_epoch(row)
    # What gwa_diag.train records at the end of a run: the GWA early-stopping choice.
    from gwa_diag.analysis.phase import selected_epoch

    writer.update_meta(status="finished", early_stopping=selected_epoch(path).as_dict())
    return path


def ensure_synthetic_run(path: str | Path, **kwargs) -> Path:
    """:func:`write_synthetic_run` unless a finished run with the same parameters is there."""
    path = Path(path)
    marker = path / ".synthetic.json"
    wanted = json.dumps(kwargs, sort_keys=True)
    if marker.exists() and marker.read_text() == wanted:
        return path
    if path.exists():
        import shutil

        shutil.rmtree(path)
    write_synthetic_run(path, **kwargs)
    marker.write_text(wanted)
    return path


def _time(label: str, fn, results: dict) -> object:
    t0 = time.perf_counter()
    out = fn()
    results[label] = time.perf_counter() - t0
    print(f"{label:<40s} {results[label] * 1000:8.1f} ms", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--dir", type=Path, default=None,
                        help="build the run here once and keep it for later calls (default: a temporary folder)")
    parser.add_argument("--pages-dir", type=Path, help="folder of the page and its numbers (default docs/benchmarks)")
    args = parser.parse_args(argv)
    if args.dir is not None:
        return _bench(args.dir, args)
    # The run (about 300 MB at the default size) goes when this ends, pass, fail or Ctrl-C.
    with tempfile.TemporaryDirectory(prefix="gwa-app-bench-") as tmp:
        return _bench(Path(tmp), args)


def _bench(workdir: Path, args: argparse.Namespace) -> int:
    from streamlit.logger import set_log_level

    # Outside `streamlit run` the caches fall back to memory and say so on every call.
    set_log_level("error")
    from gwa_diag.app.views import images, jobs, results, samples, table
    from gwa_diag.app.views.state import load_run_state
    from gwa_diag.analysis.options import AnalysisOptions
    from gwa_diag.checks import DEFAULT_WINDOW

    timings: dict[str, float] = {}
    run_dir = _time("build synthetic run (first time only)", lambda: ensure_synthetic_run(
        workdir / f"run-{args.samples}x{args.epochs}", samples=args.samples, epochs=args.epochs), timings)
    state = _time("open run + epochs", lambda: load_run_state(run_dir), timings)
    path, gen = state.path, state.generation
    _time("summaries (all scorers, DuckDB)", lambda: jobs.compute_summary(path, gen), timings)
    window = DEFAULT_WINDOW
    analysis = _time("analysis (rank, flag) on the summaries", lambda: results.analysis(path, gen, AnalysisOptions(window=window)), timings)
    epoch = state.completed[-1]
    at = _time("one epoch's alignment", lambda: samples.compute_epoch_alignment(path, gen, epoch), timings)
    dataset, why = _time("load dataset (images)", lambda: jobs.open_dataset(state), timings)
    if why:
        print(why)
        return 1
    rows = _time("browse table (sort by alignment)",
                 lambda: table.browse_order(analysis, at, sort_by=table.SORT_ALIGNMENT), timings)
    # Another scorer is another analysis (the ranking and flags are the analysis's own).
    other = _time("analysis ranked by align_mean", lambda: results.analysis(path, gen, AnalysisOptions(window=window, scorer="align_mean")), timings)
    _time("browse table (that ranking)", lambda: table.browse_order(other, at, sort_by="align_mean"), timings)
    shown = _time("filter (flagged, given label 3)", lambda: table.apply_filters(
        rows, table.Filters(given=(3,), flagged_only=True)), timings)
    page = table.page_slice(shown, 2, 48)
    _time("48 thumbnails (decode + upscale)", lambda: images.thumbnails(dataset, page.index.to_numpy()), timings)
    _time(f"one trajectory ({len(state.completed)} epochs)",
          lambda: samples.compute_trajectory(path, gen, int(page.index[0])), timings)
    from harness import PAGES, markdown_table, write_page  # torch and the package: after the timed imports

    lines = ["# App data paths", "", f"A synthetic run of {args.samples:,} samples x {args.epochs} epochs, cold caches.",
             "", *markdown_table(["step", "ms"], [[k, f"{v * 1000:.1f}"] for k, v in timings.items()], "lr")]
    write_page(__file__, "\n".join(lines), {"samples": args.samples, "epochs": args.epochs,
                                            "ms": {k: v * 1000 for k, v in timings.items()}},
               pages_dir=args.pages_dir or PAGES, wall_s=sum(timings.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
