"""How fast the app's data paths are on a CIFAR-sized synthetic run, on a cold cache.

    python bench/app_speed.py [--samples 50000] [--epochs 40] [--dir /tmp/gwa-app-bench]

Times summaries, the analysis, one epoch's alignment, one browse page (filter, sort, slice,
thumbnails) and one sample's trajectory. The run is built by ``bench/synthetic.py`` (which
the app's tests use too) in a temporary folder removed at the end, or once in --dir.
The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from synthetic import ensure_synthetic_run


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
