"""The first screen of ``demo``, ``report`` and ``train``: what a newcomer needs first.

Three things, in about a dozen lines: how many labels look wrong (and, with ground truth,
how many truly are), the five most suspicious samples with the label the model suggests,
and the exact command to browse them. The full output of each command follows it.

Reads only an :class:`~gwa_diag.analysis.pipeline.Analysis` (pandas; no torch).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from gwa_diag.analysis.pipeline import Analysis

__all__ = ["first_screen", "DETAILS_HEADING", "TOP"]

#: Suspects the first screen lists.
TOP = 5
#: The line between the first screen and a command's full output.
DETAILS_HEADING = "--- details ---"


def _label(value: Any, names: Sequence[str] | None) -> str:
    if value is None or pd.isna(value):
        return "?"
    v = int(value)
    return names[v] if names and 0 <= v < len(names) else str(v)


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def first_screen(analysis: Analysis, run_dir: str | os.PathLike, *, suspects: str | os.PathLike | None = None) -> str:
    """A short block (about 12 lines, no trailing newline) for the top of a command's output.

    Args:
        analysis: the run's analysis.
        run_dir: the run directory as the user named it (shown in the ``gwa-diag app`` command,
            quoted for the shell).
        suspects: where suspects.csv was written, if it was; None leaves that line out.
    """
    names = analysis.class_names
    n_samples = len(analysis.summary)
    est = analysis.estimate
    if est is not None:
        head = f"{est.total:,} of {est.n:,} labels look wrong ({est.rate:.1%})"
    else:
        head = f"{len(analysis.flagged):,} of {n_samples:,} labels flagged (rule {analysis.options.rule})"
    if analysis.truth is not None:
        n_true, n_cover = int(analysis.truth.sum()), len(analysis.truth)
        head += f"; truly wrong: {n_true:,} of {n_cover:,} ({n_true / max(n_cover, 1):.1%})"
    lines = [head]
    if analysis.audit is not None:
        # A verified sample answers what one recording cannot: the count with an interval.
        lines.append(f"  {analysis.audit.line()}")
    elif est is not None:
        # The count is the flagged set's size: say at once which way it can be off.
        lines.append(f"  an estimate: {est.caveat}")
        lines.append(f"  for a count with a 95% interval, verify 200 labels: gwa-diag audit {shlex.quote(str(run_dir))} --n 200")
    lines.append(f"  {analysis.epoch_choices.note}")

    flagged = analysis.flagged
    source = flagged if len(flagged) else analysis.ranking
    top = source.head(TOP)
    if len(top):
        if len(flagged):
            lines.append(f"the {len(top)} most suspicious of the {len(flagged):,} flagged (ranked by {analysis.options.scorer}):")
        else:
            lines.append(f"none flagged; the {len(top)} most suspicious (ranked by {analysis.options.scorer}):")
        has_path = "path" in top.columns
        rows = [["rank", "sample_id", "given", "suggested", "p(suggested)"] + (["path"] if has_path else [])]
        for sid, r in top.iterrows():
            prob = r.get("suggested_prob")
            row = [str(int(r["rank"])), str(sid), _label(r["label"], names), _label(r.get("suggested_label"), names),
                   "" if prob is None or pd.isna(prob) else f"{float(prob):.2f}"]
            if has_path:
                row.append("" if pd.isna(r["path"]) else str(r["path"]))
            rows.append(row)
        lines += _table(rows, right={0, 1, 4})
    lines.append(f"browse them: gwa-diag app {shlex.quote(str(run_dir))}")
    if suspects is not None:
        lines.append(f"all suspects (relabeling list): {Path(suspects)}")
    return "\n".join(lines)
