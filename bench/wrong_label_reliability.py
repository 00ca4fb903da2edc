"""Would a per-sample "probability that this label is wrong" be calibrated? A reliability
table of the two per-sample shares gwa-diag records, against the truth.

    python bench/wrong_label_reliability.py                 # the two GPU recordings
    python bench/wrong_label_reliability.py RUN [RUN ...]   # any runs with clean labels

Samples are binned by ``unfitted`` and ``disagreement`` (:data:`BINS`), each bin with the
share of them truly wrong; runs without ``clean_label`` are skipped. The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from gwa_diag import analyze
from gwa_diag.checks import InputError
from gwa_diag.store import AnalysisError
from harness import add_common_args, markdown_table, write_page

COLUMNS = ("unfitted", "disagreement")
BINS = ("0", "(0, 0.5)", "[0.5, 1)", "1")


def bin_of(share: pd.Series) -> pd.Series:
    """The bin label of each share (NaN: no bin)."""
    out = pd.Series(pd.NA, index=share.index, dtype="object")
    out[share == 0] = BINS[0]
    out[(share > 0) & (share < 0.5)] = BINS[1]
    out[(share >= 0.5) & (share < 1)] = BINS[2]
    out[share == 1] = BINS[3]
    return out


def reliability(share: pd.Series, wrong: pd.Series) -> pd.DataFrame:
    """Per bin of ``share``: ``n`` samples and the ``wrong`` share among them (NaN if empty).
    Both series are indexed by sample id; samples missing from either are left out."""
    both = pd.concat({"bin": bin_of(share), "wrong": wrong.astype("float64")}, axis=1, join="inner").dropna()
    grouped = both.groupby("bin")["wrong"]
    return pd.DataFrame({"n": grouped.size(), "wrong": grouped.mean()}).reindex(list(BINS)).fillna({"n": 0})


def run_table(run: Path) -> dict[str, pd.DataFrame] | None:
    """The reliability table of each column for one run; None without ground truth."""
    a = analyze(run)
    if a.truth is None:
        return None
    return {c: reliability(a.summary[c], a.truth) for c in COLUMNS if c in a.summary}


def main(argv: list[str] | None = None) -> int:
    t0 = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path,
                        help="run directories (default: DATA/gpu_runs/dec_worst and mem_worst)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    runs = args.runs or [args.data / "gpu_runs" / "dec_worst", args.data / "gpu_runs" / "mem_worst"]
    at_one: dict[str, list[float]] = {c: [] for c in COLUMNS}
    rows = []
    for run in runs:
        try:
            tables = run_table(run)
        except (AnalysisError, InputError) as e:
            print(f"{run}: skipped ({e})", file=sys.stderr)
            continue
        if tables is None:
            print(f"{run}: skipped (no clean_label)", file=sys.stderr)
            continue
        name = f"{run.parent.name}/{run.name}"
        for column, t in tables.items():
            noise = float((t["n"] * t["wrong"].fillna(0)).sum() / t["n"].sum())
            rows.append([name, f"{noise:.1%}", column,
                         *(f"{int(n):,} ({w:.2f})" if n else "0 (-)" for n, w in zip(t["n"], t["wrong"]))])
            if t.loc[BINS[-1], "n"]:
                at_one[column].append(float(t.loc[BINS[-1], "wrong"]))
    lines = markdown_table(["run", "noise", "column", *(f"{b}: n (wrong)" for b in BINS)], rows, "lrl" + "r" * len(BINS))
    lines += [f"{column} = 1: wrong share {min(values):.2f}-{max(values):.2f} over {len(values)} runs"
              for column, values in at_one.items() if values]
    print("\n".join(lines))
    write_page(__file__, "\n".join(["# Wrong-label reliability of the recorded shares", "", *lines]),
               {"at_one": at_one}, pages_dir=args.pages_dir, wall_s=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
