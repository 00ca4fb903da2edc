"""Analysis at scale: per-sample summaries + ranking + detection scoring on big runs.

    python bench/analysis_scale.py                   # 50,000 x 200 (10M rows) and 500,000 x 200 (100M rows)
    python bench/analysis_scale.py --sizes small     # only the 10M-row case
    python bench/analysis_scale.py --workdir /data/bench --keep   # build once, reuse later
    python bench/analysis_scale.py --sizes toy       # 2,000 x 4: seconds, checks the script works

Each case builds a synthetic run directory in the store layout (sample parts written with
RunWriter, as the recorder writes them), then measures in a fresh subprocess: the imports, and ``--repeats`` times
summarize() + rank() + flag() + detection_table() against the injected ground truth, and
reads of single samples' trajectories (what the app does when a sample is opened). The
child reports its own peak RSS from /proc/self/status VmHWM (imports included). (Not
ru_maxrss / RUSAGE_CHILDREN: on Linux those carry the forking parent's high-water mark
across exec, and the parent here holds torch and the data generator.)

Targets on a 2-core machine: 10M rows in under 2 s; 100M rows in under 2 GB peak RSS.
A run is reused when its directory already holds the requested size. The runs this
invocation builds (up to 3 GB) are removed when it ends, pass, fail or Ctrl-C, unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"small": (50_000, 200), "large": (500_000, 200), "toy": (2_000, 4)}
TARGETS = {"small": ("time", 2.0), "large": ("rss", 2048.0), "toy": ("time", 2.0)}
NUM_CLASSES = 10
BATCH = 512


def build_run(path: Path, n_samples: int, n_epochs: int, *, noise: float = 0.2, seed: int = 0) -> Path:
    """A synthetic recorded run: ``n_samples`` shuffled every epoch, 20% label noise; noisy
    samples have lower alignment, margin and p(label) until they are memorised late."""
    import pyarrow as pa
    import torch

    from gwa_diag.alignment import gwa_from_scores
    from gwa_diag.store import SAMPLE_SCHEMA, RunWriter

    rng = np.random.default_rng(seed)
    clean = rng.integers(0, NUM_CLASSES, n_samples).astype(np.int32)
    noisy = rng.random(n_samples) < noise
    label = np.where(noisy, (clean + rng.integers(1, NUM_CLASSES, n_samples)) % NUM_CLASSES, clean).astype(np.int32)
    writer = RunWriter(path, meta={
        "num_classes": NUM_CLASSES, "class_names": [f"class{i}" for i in range(NUM_CLASSES)],
        "config": {"epochs": n_epochs, "mode": "scratch", "batch_size": BATCH}, "synthetic": True,
    })
    writer.write_labels(np.arange(n_samples), label, clean)
    difficulty = rng.standard_normal(n_samples).astype(np.float32) * 0.15
    steps_per_epoch = -(-n_samples // BATCH)
    for epoch in range(n_epochs):
        t = (epoch + 1) / n_epochs
        perm = rng.permutation(n_samples)
        nz, lab = noisy[perm], label[perm]
        # Noisy samples start negative and are memorised towards the end (as in real runs).
        mu = np.where(nz, -0.3 + 0.55 * t * t, 0.05 + 0.45 * t) - difficulty[perm]
        a = np.clip(mu + 0.25 * rng.standard_normal(n_samples, dtype=np.float32), -1, 1).astype(np.float32)
        p_label = (1 / (1 + np.exp(-(4 * a + rng.standard_normal(n_samples, dtype=np.float32))))).astype(np.float32)
        wrong = p_label < 0.5
        pred = np.where(wrong, np.where(nz, clean[perm], rng.integers(0, NUM_CLASSES, n_samples)), lab).astype(np.int32)
        p_pred = np.where(pred == lab, p_label, 0.8 * (1 - p_label)).astype(np.float32)
        margin = (np.log(p_label) - np.log1p(-np.minimum(p_label, 0.999999))).astype(np.float32)
        table = pa.Table.from_arrays(
            [pa.array(perm.astype(np.int64)), pa.array(epoch * steps_per_epoch + np.arange(n_samples, dtype=np.int64) // BATCH),
             pa.array(lab), pa.array(a), pa.array(margin), pa.array((-np.log(p_label)).astype(np.float32)),
             pa.array(p_label), pa.array(pred), pa.array(p_pred)],
            schema=SAMPLE_SCHEMA,
        )
        writer.write_samples(epoch, table)  # the recorder's layout: sorted by id, row groups
        result = gwa_from_scores(torch.from_numpy(a))
        writer.write_epoch({
            "epoch": epoch, **result.as_dict(), "train_loss": float(-np.log(p_label).mean()),
            "train_acc": float((pred == lab).mean()), "end_step": (epoch + 1) * steps_per_epoch, "seconds": 1.0,
            "eval_acc": float(0.5 + 0.3 * t - 0.1 * t * t),
        })
    writer.update_meta(status="finished")
    return path


def _is_built(path: Path, n_samples: int, n_epochs: int) -> bool:
    try:
        from gwa_diag.store import open_run

        run = open_run(path)
        return run.meta.get("synthetic") and run.meta["config"]["epochs"] == n_epochs and len(run.labels()) == n_samples \
            and run.completed_epochs() == list(range(n_epochs))
    except Exception:
        return False


def measure(path: Path, repeats: int) -> dict:
    """Runs in the child process: time the imports, then the analysis ``repeats`` times."""
    t0 = time.perf_counter()
    import gwa_diag.alignment  # noqa: F401  (select_epoch's module imports torch: an import cost)
    from gwa_diag.analysis.metrics import detection_table
    from gwa_diag.analysis.truth import ground_truth
    from gwa_diag.analysis.rank import flag, rank
    from gwa_diag.analysis.summaries import summarize

    import_s = time.perf_counter() - t0
    rss_imports = _peak_rss_mb()
    times, cpu, parts = [], [], []
    for _ in range(repeats):
        c0 = time.process_time()
        t0 = time.perf_counter()
        summary = summarize(path)
        t1 = time.perf_counter()
        ranked = rank(summary, scorer="align_mean")
        flagged = flag(summary, rule="negative")
        t2 = time.perf_counter()
        truth = ground_truth(path, given=summary["label"])
        table = detection_table(summary, truth)
        t3 = time.perf_counter()
        times.append(t3 - t0)
        cpu.append(time.process_time() - c0)
        parts.append((t1 - t0, t2 - t1, t3 - t2))
    from gwa_diag.store import open_run

    run = open_run(path)
    traj = []
    for sid in np.linspace(0, len(summary) - 1, 7).astype(int):
        t0 = time.perf_counter()
        run.trajectory(int(sid))
        traj.append(time.perf_counter() - t0)
    return {
        "trajectory_s": sorted(traj)[len(traj) // 2],
        "rows": int(summary["n_epochs"].sum()), "samples": len(summary), "flagged": len(flagged), "ranked": len(ranked),
        "auroc_align_mean": float(table.loc["align_mean", "auroc"]),
        "import_s": import_s, "times_s": times, "cpu_s": cpu, "parts_s": parts,
        "rss_after_imports_mb": rss_imports, "peak_rss_mb": _peak_rss_mb(),
        "loadavg": os.getloadavg()[0],
    }


def _peak_rss_mb() -> float:
    """High-water resident set of this process (VmHWM), in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(path: Path, repeats: int, *, fail: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--_measure", str(path), "--repeats", str(repeats)]
    if fail:
        # Stands in for a crashed measurement (tests check that the runs are removed anyway).
        cmd = [sys.executable, "-c", "import sys; sys.exit('forced failure of the measuring child')"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        # Stopped (Ctrl-C, SIGTERM): ask the child to stop too, so that its own clean-up (the
        # analysis' DuckDB spill folder) runs; kill it only if it does not.
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    if proc.returncode != 0:
        raise SystemExit(f"the measuring child failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _exit_on_term(signum: int, frame) -> None:
    # SIGTERM (a time limit, a job scheduler, the parent stopping its child) ends the process
    # through its clean-up (main()'s finally, the analysis' own), as Ctrl-C does.
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,large", help="comma list of: " + ", ".join(SIZES))
    parser.add_argument("--workdir", type=Path, help="where to build the runs (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the built runs (with --workdir: reuse them)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per case (default 3)")
    parser.add_argument("--_measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--_fail-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_term)
    if args._measure is not None:
        print(json.dumps(measure(args._measure, args.repeats)), flush=True)
        # The result is out: skip interpreter teardown, where torch together with Arrow's
        # reader threads has aborted ("terminate called without an active exception") in
        # about half the runs on this 10M-row case.
        os._exit(0)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {unknown}; valid sizes: {', '.join(SIZES)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gwa-analysis-bench-"))
    built: list[Path] = []
    try:
        return _run_cases(args, sizes, workdir, built)
    finally:
        # Whatever this invocation made goes, however it ended: the temporary workdir whole,
        # or, in a --workdir, the runs it built (reused ones stay).
        if args.keep:
            print(f"runs kept in {workdir}")
        elif args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            for path in built:
                shutil.rmtree(path, ignore_errors=True)


def _run_cases(args: argparse.Namespace, sizes: list[str], workdir: Path, built: list[Path]) -> int:
    """Build (or reuse) and measure each case; ``built`` collects the runs made here, even
    half-written ones, for main() to remove."""
    print(f"machine: {os.cpu_count()} cores; workdir {workdir}")
    rows = []
    for size in sizes:
        n, e = SIZES[size]
        path = workdir / f"run_{n}x{e}"
        if not _is_built(path, n, e):
            shutil.rmtree(path, ignore_errors=True)
            built.append(path)
            t0 = time.perf_counter()
            build_run(path, n, e)
            print(f"built {size}: {n:,} samples x {e} epochs in {time.perf_counter() - t0:.0f} s "
                  f"({sum(f.stat().st_size for f in path.rglob('*.parquet')) / 2**20:.0f} MiB)")
        r = _child(path, args.repeats, fail=args._fail_child)
        kind, limit = TARGETS[size]
        first, best = r["times_s"][0], min(r["times_s"])
        ok = best < limit if kind == "time" else r["peak_rss_mb"] < limit
        target = f"< {limit:.0f} s" if kind == "time" else f"< {limit:.0f} MB"
        rows.append((size, f"{n:,} x {e}", f"{r['rows'] / 1e6:.3g}M", f"{first:.2f}", f"{best:.2f}",
                     f"{min(r['cpu_s']):.2f}", f"{r['import_s']:.2f}", f"{r['peak_rss_mb']:.0f}", target,
                     "yes" if ok else "NO"))
        s, rk, sc = (min(p[i] for p in r["parts_s"]) for i in range(3))
        print(f"{size}: best split summarize {s:.2f} s, rank+flag {rk:.2f} s, ground truth+scoring {sc:.2f} s; "
              f"RSS after imports {r['rss_after_imports_mb']:.0f} MB; align_mean AUROC {r['auroc_align_mean']:.3f}; "
              f"one sample's trajectory {r['trajectory_s']:.3f} s (median of 7); load average {r['loadavg']:.1f}")
    header = ("case", "samples x epochs", "rows", "first s", "best s", "cpu s", "import s", "peak MB", "target", "met")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    print("\ntime = summarize + rank + flag + ground truth + detection table (imports excluded; "
          "'first' is the first call in a fresh process). peak MB = the child's max RSS, imports included.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
