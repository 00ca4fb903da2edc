"""Analysis at scale: ``analyze()`` and its detection table on big synthetic runs, against
the floor, a bare DuckDB scan of the same parts.

    python bench/analysis_scale.py                   # small (10M rows) and large (100M rows)
    python bench/analysis_scale.py --sizes toy       # seconds: checks the script works
    python bench/analysis_scale.py --workdir /data/bench --keep   # build once, reuse later

Each case is measured in a fresh subprocess, which reports its own peak RSS (VmHWM); the
``small`` case also as an older recording without the per-epoch contradicted share. The
targets are :data:`TARGETS`; a missed one makes the script exit with status 1. The runs
this invocation builds are removed when it ends, pass, fail or Ctrl-C, unless --keep.
The protocol: docs/benchmarks/index.md.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZES = {"small": (50_000, 200), "large": (500_000, 200), "toy": (2_000, 4)}


@dataclass(frozen=True)
class Target:
    seconds: float  # best analysis, at most
    ratio: float | None = None  # best analysis / best bare scan, at most
    peak_mb: float | None = None  # the child's peak RSS, below
    repeats: int | None = None  # analyses per case (None: --repeats)


TARGETS = {
    "small": Target(seconds=0.85, ratio=2.0),
    "large": Target(seconds=6.0, peak_mb=1536.0, repeats=1),
    "toy": Target(seconds=2.0),
}
NUM_CLASSES = 10
BATCH = 512


def build_run(path: Path, n_samples: int, n_epochs: int, *, noise: float = 0.2, seed: int = 0) -> Path:
    """A synthetic recorded run: ``n_samples`` shuffled every epoch, 20% label noise; noisy
    samples have lower alignment, margin and p(label) until they are memorised late.

    Not ``bench/synthetic.py``'s run on purpose: the targets were set on this workload (the
    analysis reads it as memorised and decodes the scores of the epochs before the onset), and
    the time grows with the number of epochs whose scores are read, so a different run would
    move the ratio without any change to the code."""
    import pyarrow as pa
    import torch

    from gwa_diag.alignment import gwa_from_scores
    from gwa_diag.analysis.contradiction import contradicted
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
            # What the recorder records per epoch: the share of rows confidently contradicted.
            "contradicted": float(contradicted(lab, pred, p_label, p_pred, np.isfinite(a), NUM_CLASSES).mean()),
            "eval_acc": float(0.5 + 0.3 * t - 0.1 * t * t),
        })
    writer.update_meta(status="finished")
    return path


def _is_built(path: Path, n_samples: int, n_epochs: int) -> bool:
    try:
        from gwa_diag.store import open_run

        run = open_run(path)
        return run.meta.get("synthetic") and run.meta["config"]["epochs"] == n_epochs and len(run.labels()) == n_samples \
            and run.completed_epochs() == list(range(n_epochs)) and "contradicted" in run.epochs().columns
    except Exception:
        return False


def bare_scan_seconds(path: Path) -> float:
    """One bare DuckDB scan of the run's parts: the mean of one float column per sample id
    (``GROUP BY sample_id``), on all cores. The floor for any per-sample analysis."""
    import duckdb

    from gwa_diag.analysis.parts import read_parquet_sql
    from gwa_diag.store import open_run

    t0 = time.perf_counter()
    files = [str(f) for f in open_run(path).sample_files()]
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET threads = {os.cpu_count() or 1}")
        con.sql(f"SELECT sample_id, avg(alignment) AS a FROM {read_parquet_sql(files)} GROUP BY sample_id").fetchnumpy()
    finally:
        con.close()
    return time.perf_counter() - t0


def analysis_seconds(path: Path) -> tuple[float, object]:
    """One ``analyze()`` of the run and its detection table: (seconds, the Analysis)."""
    from gwa_diag.analysis.pipeline import analyze

    t0 = time.perf_counter()
    result = analyze(path)
    result.detection  # computed on first use
    return time.perf_counter() - t0, result


def measure(path: Path, repeats: int) -> dict:
    """Runs in the child process: time the imports, then ``repeats`` times the analysis,
    each followed by a bare scan of the same parts (alternating, so both see the same load)."""
    t0 = time.perf_counter()
    from gwa_diag.analysis.pipeline import analyze  # noqa: F401  (the import cost)

    import_s = time.perf_counter() - t0
    rss_imports = _peak_rss_mb()
    times, cpu, bare = [], [], []
    result = None
    for _ in range(repeats):
        c0 = time.process_time()
        seconds, result = analysis_seconds(path)
        times.append(seconds)
        cpu.append(time.process_time() - c0)
        bare.append(bare_scan_seconds(path))
    assert result is not None
    summary = result.summary
    run = result.run
    traj = []
    for sid in np.linspace(0, len(summary) - 1, 7).astype(int):
        t0 = time.perf_counter()
        run.trajectory(int(summary.index[sid]))
        traj.append(time.perf_counter() - t0)
    return {
        "trajectory_s": sorted(traj)[len(traj) // 2],
        "rows": int(summary["n_epochs"].sum()), "samples": len(summary), "flagged": len(result.flagged),
        "auroc_align_mean": float(result.detection.loc["align_mean", "auroc"]),
        "note": result.epoch_choices.note,
        "import_s": import_s, "times_s": times, "cpu_s": cpu, "bare_s": bare,
        "rss_after_imports_mb": rss_imports, "peak_rss_mb": _peak_rss_mb(),
        "loadavg": os.getloadavg()[0],
    }


def without_recorded_share(path: Path, copy: Path) -> Path:
    """A copy of the run as recorded before the per-epoch ``contradicted`` share existed:
    hard links to the same parts, epochs.parquet without the column, no kept share."""
    import pyarrow.parquet as pq

    shutil.rmtree(copy, ignore_errors=True)
    for source in path.rglob("*"):
        target = copy / source.relative_to(path)
        if source.is_dir() or source.parent.name == "analysis" or source.name == "analysis":
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.name == "epochs.parquet":
            table = pq.read_table(source)
            pq.write_table(table.drop_columns(["contradicted"]), target)
        else:
            os.link(source, target)
    return copy


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
    parser.add_argument("--pages-dir", type=Path, help="folder of the page and its numbers (default docs/benchmarks)")
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
    half-written ones, for main() to remove. Returns 1 when a target was missed."""
    print(f"machine: {os.cpu_count()} cores; workdir {workdir}")
    start = time.perf_counter()
    rows, missed = [], []
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
        cases = [(size, path)]
        if size == "small":
            old = workdir / f"run_{n}x{e}_unrecorded_share"
            built.append(old)
            cases.append((f"{size}, older recording", without_recorded_share(path, old)))
        for name, run_path in cases:
            target = TARGETS[size]
            r = _child(run_path, target.repeats or args.repeats, fail=args._fail_child)
            first, best, bare = r["times_s"][0], min(r["times_s"]), min(r["bare_s"])
            ratio = best / bare
            checks = [best <= target.seconds]
            if target.ratio is not None:
                checks.append(ratio <= target.ratio)
            if target.peak_mb is not None:
                checks.append(r["peak_rss_mb"] < target.peak_mb)
            wanted = [f"<= {target.seconds:g} s"] + ([f"<= {target.ratio:g}x"] if target.ratio else []) \
                + ([f"< {target.peak_mb:.0f} MB"] if target.peak_mb else [])
            ok = all(checks)
            if not ok:
                missed.append(name)
            rows.append((name, f"{n:,} x {e}", f"{r['rows'] / 1e6:.3g}M", f"{first:.2f}", f"{best:.2f}",
                         f"{bare:.2f}", f"{ratio:.2f}", f"{min(r['cpu_s']):.2f}", f"{r['import_s']:.2f}",
                         f"{r['peak_rss_mb']:.0f}", ", ".join(wanted), "yes" if ok else "NO"))
            print(f"{name}: RSS after imports {r['rss_after_imports_mb']:.0f} MB; align_mean AUROC "
                  f"{r['auroc_align_mean']:.3f}; {r['note']}; one sample's trajectory {r['trajectory_s']:.3f} s "
                  f"(median of 7); load average {r['loadavg']:.1f}")
    # Imported here: the harness loads torch, which the measuring child must not hold.
    from harness import PAGES, markdown_table, write_page

    head = ["case", "samples x epochs", "rows", "first s", "best s", "bare s", "ratio", "cpu s", "import s",
            "peak MB", "target", "met"]
    lines = ["# Analysis at scale", "", *markdown_table(head, [list(r) for r in rows], "llrrrrrrrrll"), "",
             "time = analyze() + its detection table (imports excluded; 'first' is the first call in a fresh "
             "process); bare = a DuckDB GROUP BY sample_id mean of one column over the same parts, best of the "
             "same number of runs, alternating; ratio = best / bare. peak MB = the child's max RSS, imports included.",
             "", f"Targets: {'missed: ' + ', '.join(missed) if missed else 'all met'}."]
    print("\n".join(lines))
    headline = [{"result": f"analysis / bare DuckDB scan, {r[0]} ({r[1]})", "value": f"{r[6]}x ({r[4]} s)"} for r in rows]
    numbers = {"rows": [dict(zip(head, r)) for r in rows], "missed": missed, "headline": headline}
    write_page(__file__, "\n".join(lines), numbers, pages_dir=args.pages_dir or PAGES,
               wall_s=time.perf_counter() - start)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
