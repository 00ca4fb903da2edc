"""``gwa-diag labels``: corrected labels out of a reviewed run, for a new run to train on.

    gwa-diag labels RUN --out FILE.csv [--auto keep|drop|relabel] [--min-prob P]
                    [--scorer S] [--window W] [--flag negative|topk|noise-rate] [--k K] [--noise-rate R]

Writes FILE.csv, FILE.excluded.csv and FILE.provenance.json
(:func:`gwa_diag.analysis.corrected.write_corrected_labels`) and prints the command that
trains on them. The analysis options are those of ``gwa-diag rank`` (the same parser
helpers and rule checks, from :mod:`gwa_diag.cli.common`), so the flagged set is the one
suspects.csv lists. No torch is imported.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from gwa_diag.analysis.corrected import (
    AUTO_POLICIES,
    check_new_outputs,
    check_policy,
    corrected_labels,
    write_corrected_labels,
)
from gwa_diag.checks import DEFAULT_SCORER, AutoPolicy, InputError, values
from gwa_diag.cli.common import (
    add_flag_args,
    add_run_args,
    analysis_options,
    check_output_file,
    default_of,
    guarded,
)

__all__ = ["register"]

# The library's defaults, so `gwa-diag labels` and corrected_labels() treat unreviewed
# flagged samples alike: the policy, and the threshold --auto relabel takes without --min-prob.
DEFAULT_AUTO: str = default_of(corrected_labels, "auto")
DEFAULT_MIN_PROB: float | None = check_policy("relabel", None)


def _threshold(args: argparse.Namespace) -> None:
    """Check --auto/--min-prob here so that errors name the CLI's flags."""
    if args.min_prob is not None and args.auto != "relabel":
        raise InputError(f"--min-prob applies only to --auto relabel, not --auto {args.auto}: pass --auto relabel "
                         "or drop --min-prob")
    if args.min_prob is not None and not 0.0 <= args.min_prob <= 1.0:  # False for NaN too
        raise InputError(f"--min-prob must be a probability in [0, 1], got {args.min_prob}")
    check_policy(args.auto, args.min_prob)


def _cmd_labels(args: argparse.Namespace) -> int:
    """Export corrected labels: review decisions, then the policy for flagged samples."""
    # Built as `rank` builds them, so the flagged set is the one suspects.csv lists.
    options = analysis_options(args)
    _threshold(args)
    check_output_file(args.out, "--out", "corrected.csv")
    check_new_outputs(args.out)  # before the analysis, which takes a while on a large run
    result = corrected_labels(args.run, auto=args.auto, min_prob=args.min_prob, options=options)
    written = write_corrected_labels(result, args.out)
    counts, prov = result.provenance["counts"], result.provenance
    threshold = f", min prob {prov['min_prob']:g}" if prov["auto"] == "relabel" else ""
    print(f"{counts['flagged']} flagged (rule {options.rule}, ranked by {options.scorer}), {counts['decisions']} reviewed; "
          f"{counts['flagged_without_decision']} flagged without a decision go to --auto {args.auto}{threshold}")
    print(f"{counts['rows']} rows: {counts['changed_by_decisions']} labels changed by review decisions, "
          f"{counts['changed_by_auto']} by the auto policy, {counts['dropped']} dropped")
    print(f"labels written to {written.labels} (exclusions: {written.excluded}; provenance: {written.provenance})")
    data = _data_options(result.provenance, args)
    print(f"next: gwa-diag train {data} --labels {shlex.quote(str(written.labels))} "
          f"--exclude {shlex.quote(str(written.excluded))} --out NEW_RUN")
    return 0


# run.json dataset source -> (--data, the source option that is --data-path)
_DATA_OPTION = {"npz": ("npz", "path"), "cifar10": ("cifar10", "root"), "image_folder": ("folder", "root"),
                "manifest": ("manifest", "path")}


def _data_options(provenance: dict[str, Any], args: argparse.Namespace) -> str:
    """The parent run's data options for the next command, read from its dataset spec; a
    placeholder when the spec is of a source the CLI cannot name."""
    from gwa_diag.store import open_run

    spec = open_run(args.run).meta.get("dataset")
    source = spec.get("source") if isinstance(spec, dict) else None
    if source == "sample_data":
        return "--data sample"
    if source in _DATA_OPTION and spec.get(_DATA_OPTION[source][1]):
        flag, key = _DATA_OPTION[source]
        return f"--data {flag} --data-path {shlex.quote(str(spec[key]))}"
    return f"<the data options of {shlex.quote(str(provenance['parent_run']))}>"


def register(subparsers: Any) -> None:
    """Add ``labels`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "labels", help="export corrected labels (review decisions + a policy for flagged samples) to train on",
        description="Start from the labels RUN trained on, apply the review decisions under RUN/relabels/ "
                    "(the latest per sample wins), then a policy for flagged samples nobody reviewed; write "
                    "FILE.csv (for train --labels), FILE.excluded.csv (for train --exclude) and "
                    "FILE.provenance.json.",
    )
    add_run_args(p, scorer_help=f"scorer to rank and flag by, as for gwa-diag rank (default {DEFAULT_SCORER})")
    add_flag_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="FILE.csv",
                   help="label file to write (with FILE.excluded.csv and FILE.provenance.json next to it); "
                        "never replaced")
    p.add_argument("--auto", default=DEFAULT_AUTO, choices=list(values(AutoPolicy)),
                   help="flagged samples without a decision: " + "; ".join(f"{k}: {v}" for k, v in AUTO_POLICIES.items())
                        + f" (default {DEFAULT_AUTO})")
    p.add_argument("--min-prob", type=float, metavar="P",
                   help="with --auto relabel: lowest suggested_prob (mean predicted probability of the suggestion) "
                        f"taken, in [0, 1] (default {DEFAULT_MIN_PROB:g})")
    p.set_defaults(func=guarded("labels", _cmd_labels))
