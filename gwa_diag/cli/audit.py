"""``gwa-diag audit``: draw a sample of labels for a person to verify, and read the answers.

    gwa-diag audit RUN --n 200 [--seed S]     # draw (or grow) the sample; writes RUN/audit/sheet.csv
    gwa-diag audit RUN --answers SHEET        # read a filled-in sheet (or any sample_id, verified_label file)
    gwa-diag audit RUN                        # where the audit stands: the count with its interval

The sample is stratified along the default ranking (:mod:`gwa_diag.analysis.audit`); the
answers give the number of wrong labels with a 95% interval, the precision of the flagged
set and a calibrated ``p_wrong`` per sample, in every later analysis. No torch is imported.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gwa_diag.analysis.audit import AUDIT_DIR, draw_sample, read_answer_file, read_design, record_answers, write_sheet
from gwa_diag.analysis.pipeline import analyze
from gwa_diag.checks import InputError
from gwa_diag.cli.common import guarded, int_in_range

__all__ = ["register"]

#: Labels to verify when --n is not given with a new audit: enough for an interval of about
#: a tenth of the count on a good ranking (bench/audit.py).
SUGGESTED_N = 200


def _status(run: Path) -> None:
    analysis = analyze(run)
    if analysis.audit is None:
        print(f"no verified sample yet: gwa-diag audit {run} --n {SUGGESTED_N}")
        return
    print(analysis.audit.line())
    if analysis.audit.count is not None:
        names = analysis.class_names
        for c, interval in analysis.audit.per_class.items():
            name = names[c] if names and c < len(names) else str(c)
            print(f"  {name}: {interval.estimate:,.0f} ({interval.low:,.0f}-{interval.high:,.0f})")
    if analysis.audit.review is not None:
        print(analysis.audit.review.line())


def _cmd_audit(args: argparse.Namespace) -> int:
    if args.n is not None and args.answers is not None:
        raise InputError("--n draws samples and --answers reads answers: give one at a time")
    if args.n is None and args.seed is not None:
        raise InputError("--seed applies to drawing: pass it with --n")
    run = args.run
    if args.n is not None:
        design = draw_sample(run, args.n, seed=args.seed)
        sheet = Path(run) / AUDIT_DIR / "sheet.csv"
        print(f"audit {design.audit_id}: {design.n} samples to verify in {len(design.population)} strata along the "
              f"ranking (seed {design.seed})")
        print(f"fill in verified_label in {sheet}, then: gwa-diag audit {run} --answers {sheet}")
        print(f"or answer them in the browser: gwa-diag app {run} (Audit page)")
        return 0
    if args.answers is not None:
        design = read_design(run)
        if design is None:
            raise InputError(f"{run} has no audit yet: draw one first (gwa-diag audit {run} --n {SUGGESTED_N})")
        answers = read_answer_file(args.answers, run, design)
        if answers.empty:
            raise InputError(f"{args.answers} answers none of the audit's {design.n} samples "
                             f"({answers.attrs.get('outside', 0)} answers are for samples outside it)")
        record_answers(run, answers, source=str(args.answers))
        write_sheet(run, design)
        outside = answers.attrs.get("outside", 0)
        print(f"{len(answers)} answers recorded" + (f"; {outside} for samples outside the audit left out" if outside else ""))
    _status(run)
    return 0


def register(subparsers: Any) -> None:
    """Add ``audit`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "audit", help="draw labels for a person to verify; read the answers (count with a 95%% interval)",
        description="Draw a stratified random sample of labels to verify (--n), read the answers back "
                    "(--answers), or show where the audit stands. The answers give the number of wrong "
                    "labels with a 95% interval, the precision of the flagged set and a calibrated "
                    "p_wrong for every sample.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (the --out of gwa-diag train)")
    p.add_argument("--n", type=int_in_range(1), help=f"samples to verify (suggested {SUGGESTED_N}); a larger n grows "
                   "an existing sample and keeps its answers")
    p.add_argument("--seed", type=int, help="seed of a new sample's draw (default: random, recorded)")
    p.add_argument("--answers", type=Path, metavar="FILE",
                   help="the filled-in sheet, or any CSV/TSV/Parquet with sample_id, verified_label")
    p.set_defaults(func=guarded("audit", _cmd_audit))
