"""Local minima of a per-epoch curve, the one shape both epoch rules look for: the GWA rules
(:mod:`gwa_diag.early_stopping`: fine-tuning's first fall of GWA, LabelWave's first dip in
prediction changes) and the training phase's plateau (:mod:`gwa_diag.phase_rule`).

Pure Python on sequences of numbers; part of the recording core, it imports nothing of
gwa_diag.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["first_local_minimum", "local_minima"]


def local_minima(values: Sequence[float], *, first: bool = False) -> list[int]:
    """Index of the last point of every run of equal values that is lower than the run before
    it and the run after it (a flat step inside a fall is not a minimum); with ``first``,
    also the first run when the run after it is higher."""
    runs: list[tuple[int, int]] = []  # (first, last) index of each run of equal values
    for i, v in enumerate(values):
        if runs and values[runs[-1][0]] == v:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    out = [runs[0][1]] if first and len(runs) > 1 and values[runs[0][0]] < values[runs[1][0]] else []
    out += [run[1] for before, run, after in zip(runs, runs[1:], runs[2:])
            if values[before[0]] > values[run[0]] < values[after[0]]]
    return out


def first_local_minimum(values: Sequence[float]) -> int | None:
    """Index of the first interior local minimum (:func:`local_minima`), None if none."""
    return next(iter(local_minima(values)), None)
