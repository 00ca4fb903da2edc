"""Analysis subcommands of the ``gwa-diag`` CLI: ``rank``, ``score`` and ``report``.

    gwa-diag rank RUN [--scorer S] [--flag negative|topk|noise-rate] [--k K] [--noise-rate R]
    gwa-diag score RUN [--truth FILE]
    gwa-diag report RUN [--truth FILE]

Each reads only the run directory (complete epochs) and writes into RUN/analysis/.
Every path and option is checked before any work, and every expected failure is one line
``gwa-diag <cmd>: error: <what> (<path>); <fix>`` on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from gwa_diag.analysis.pipeline import Analysis, analyze
from gwa_diag.analysis.rank import write_suspects
from gwa_diag.analysis.report import json_ready, write_report
from gwa_diag.store import AnalysisError
from gwa_diag.analysis.truth import TruthCoverageWarning
from gwa_diag.checks import DEFAULT_SCORER, InputError, MissingFileError
from gwa_diag.cli.common import (
    FLAG_RULES,
    add_flag_args,
    add_run_args,
    analysis_options,
    check_output_dir,
    check_output_file,
    guarded,
)
from gwa_diag.cli.summary import DETAILS_HEADING, first_screen
from gwa_diag.store import atomic_write_bytes

__all__ = ["register"]

#: Rows of the ranking ``rank`` prints when --show is not given.
SHOW_ROWS = 10
# Why the default ranking is what it is, for --help (the measurements: docs/benchmarks).
_DEFAULT_WHY = ("-(mean margin over the window); it ranks the wrong CIFAR-10-N labels a little better than mean "
                "alignment (align_mean; docs/benchmarks/detect_cifar10n.md), because alignment leaves out the head's "
                "bias and divides by each sample's feature norm")


def _without_used_epoch(analysis: Analysis) -> dict[str, Any]:
    # scores.json (schema version 1) keeps the used epoch apart, as "selected_epoch".
    early = analysis.selection.as_dict()
    early.pop("used_epoch")
    return early


def _check_truth(path: Path | None) -> None:
    if path is None:
        return
    if path.is_dir():
        raise InputError(f"--truth is a folder, not a file ({path}); pass the CSV or Parquet file itself")
    if not path.exists():
        raise MissingFileError(
            f"--truth file not found ({path}); pass a CSV or Parquet file with columns sample_id, clean_label"
        )


def _cmd_rank(args: argparse.Namespace) -> int:
    """Flag suspicious labels and write the suspects CSV."""
    options = analysis_options(args)
    check_output_file(args.out, "--out", "suspects.csv")
    analysis = analyze(args.run, options=options)
    summary, flagged, names = analysis.summary, analysis.flagged, analysis.class_names
    out = Path(args.out) if args.out is not None else analysis.run.path / "analysis" / "suspects.csv"
    path = write_suspects(out, flagged, class_names=names)
    print(analysis.selection.note)
    print(analysis.epoch_choices.note)
    if analysis.estimate is not None:
        print(analysis.estimate.line())
        print(f"  per given class: {analysis.estimate.per_class_text(names)}")
    print(f"{len(flagged)} of {len(summary)} samples flagged (rule {options.rule}, ranked by {options.scorer}; "
          "higher = more suspicious)")
    if len(flagged):
        cols = ["rank", "label", "suggested_label", "suggested_prob", "score", "alignment_selected", "reason"]
        cols = [c for c in ("path", *cols) if c in flagged.columns]
        top = flagged.head(args.show)[cols].rename(columns={"label": "given_label"})
        if names:
            def name(v: Any) -> str:
                return names[int(v)] if not pd.isna(v) and 0 <= int(v) < len(names) else ""

            top.insert(2, "given_name", [name(v) for v in top["given_label"]])
            top.insert(4, "suggested_name", [name(v) for v in top["suggested_label"]])
        with pd.option_context("display.width", 200, "display.max_colwidth", 80, "display.float_format", "{:.3f}".format):
            print(top.to_string())
    print(f"suspects written to {path}")
    return 0


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """gwa-diag's own warnings as one plain line each, not Python's file:line format."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruthCoverageWarning)
        yield
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)


def _cmd_score(args: argparse.Namespace) -> int:
    """Detection scores of every scorer against ground truth."""
    options = analysis_options(args)
    _check_truth(options.truth)
    check_output_file(args.out, "--out", "scores.json")
    with _warnings_to_stderr():
        analysis = analyze(args.run, options=options)
    truth, cover = analysis.truth, analysis.truth_coverage
    table, per_class = analysis.detection, analysis.per_class
    if truth is None or cover is None or table is None or per_class is None:
        # Scores are what this command is for: no truth is an error here, with how to give one.
        raise AnalysisError(str(analysis.truth_reason))
    summary, run = analysis.summary, analysis.run
    n, n_noisy = len(truth), int(truth.sum())
    print(analysis.selection.note)
    print(analysis.epoch_choices.note)
    covered = "" if cover["matched"] == cover["samples"] else f" (the truth covers {cover['matched']} of {cover['samples']} samples)"
    print(f"ground truth: {n_noisy} of {n} samples mislabeled ({n_noisy / max(n, 1):.1%}){covered}; "
          f"window {options.window} (epochs {summary.attrs['window_epochs'][0]}-{summary.attrs['window_epochs'][1]}); "
          f"P@k and R@k at k = {n_noisy}")
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(table.to_string())
        if analysis.estimate is not None:
            print(f"\nestimated wrong labels: {analysis.estimate.total}, true: {n_noisy}")
        print(f"\nper given label ({options.scorer}; n_estimated = estimated wrong labels; rule = alignment < 0 at "
              f"epoch {analysis.selection.used_epoch}):")
        print(per_class.to_string())
    out = Path(args.out) if args.out is not None else run.path / "analysis" / "scores.json"
    payload = {
        "run": str(run.path),
        "window": {"name": options.window, "epochs": summary.attrs["window_epochs"]},
        "early_stopping": _without_used_epoch(analysis),
        "selected_epoch": analysis.selection.used_epoch,
        "ground_truth": {"source": str(options.truth) if options.truth else "labels.parquet", "n": n, "n_noisy": n_noisy,
                         "coverage": cover},
        "detection": table.reset_index().to_dict(orient="records"),
        "per_class": per_class.reset_index().to_dict(orient="records"),
        "per_class_scorer": options.scorer,
        "estimate": analysis.estimate.as_dict() if analysis.estimate is not None else None,
    }
    atomic_write_bytes(out, (json.dumps(json_ready(payload), indent=2) + "\n").encode("utf-8"))
    print(f"scores written to {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """Write report.md / report.json, plots, suspects.csv and ranking.parquet."""
    options = analysis_options(args)
    _check_truth(options.truth)
    check_output_dir(args.out_dir, "--out-dir")
    with _warnings_to_stderr():
        analysis = analyze(args.run, options=options)
        report = write_report(analysis, out_dir=args.out_dir)
    # What a newcomer needs first; the full output follows under the heading.
    print(first_screen(analysis, args.run, suspects=report["files"].get("suspects")))
    print(f"\n{DETAILS_HEADING}")
    print(report["early_stopping"].get("note", ""))
    print(report["training_phase"]["note"])
    print(f"{report['n_flagged']} of {report['n_samples']} samples flagged (rule {options.rule}, ranked by {options.scorer})")
    truth = report["ground_truth"]
    cover = truth.get("coverage") or {}
    if cover and cover["matched"] < cover["samples"]:
        # Also on stderr as a warning; here it stays next to the numbers it qualifies.
        print(f"ground truth: {truth['n_noisy']} of {truth['n']} samples mislabeled; the truth covers "
              f"{cover['matched']} of {cover['samples']} samples and the detection scores are over those only")
    if report["detection"]:
        row = next((r for r in report["detection"] if r["method"] == options.scorer), None)
        if row is not None and row["auroc"] is not None:
            print(f"{options.scorer}: AUROC {row['auroc']:.3f}, AP {row['ap']:.3f}")
    else:
        print(f"no detection scores: {report['ground_truth'].get('reason', 'no ground truth')}")
    print(f"report written to {report['files']['report_md']}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``rank``, ``score`` and ``report`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "rank", help="flag suspicious labels and write RUN/analysis/suspects.csv",
        description="Rank samples by a scorer (higher = more suspicious), flag them by a rule "
                    f"({', '.join(FLAG_RULES)}) and write a suspects CSV for relabeling.",
    )
    add_run_args(p, scorer_help=f"scorer to rank by (default {DEFAULT_SCORER}: {_DEFAULT_WHY})")
    add_flag_args(p)
    p.add_argument("--out", type=Path, help="suspects CSV (default RUN/analysis/suspects.csv)")
    p.add_argument("--show", type=int, default=SHOW_ROWS, help=f"rows to print (default {SHOW_ROWS})")
    p.set_defaults(func=guarded("rank", _cmd_rank))

    p = subparsers.add_parser(
        "score", help="detection scores (AUROC, AP, P@k, R@k) of every scorer against ground truth",
        description="Compare every scorer against ground truth (labels.parquet clean_label or --truth) "
                    "and write RUN/analysis/scores.json.",
    )
    add_run_args(p, scorer_help=f"scorer for the per-class breakdown (default {DEFAULT_SCORER})")
    p.add_argument("--truth", type=Path, help="CSV (or Parquet) with columns sample_id, clean_label")
    p.add_argument("--out", type=Path, help="scores JSON (default RUN/analysis/scores.json)")
    p.set_defaults(func=guarded("score", _cmd_score))

    p = subparsers.add_parser(
        "report", help="write RUN/analysis/report.md with plots, detection table and suspects",
        description="Full analysis report: early stopping, GWA curve, histograms, ROC/PR curves and "
                    "detection table (with ground truth), suspects.csv and ranking.parquet.",
    )
    add_run_args(p, scorer_help=f"scorer to rank and flag by (default {DEFAULT_SCORER})")
    add_flag_args(p)
    p.add_argument("--truth", type=Path, help="CSV (or Parquet) with columns sample_id, clean_label")
    p.add_argument("--out-dir", type=Path, help="output folder (default RUN/analysis)")
    p.set_defaults(func=guarded("report", _cmd_report))
