"""The GWA early-stopping rules (no validation set). Pure Python: no torch needed."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Sequence
from gwa_diag.checks import InputError

__all__ = ["EarlyStopResult", "select_epoch"]


@dataclass(frozen=True)
class EarlyStopResult:
    """Which epoch the GWA rule keeps. ``epoch`` is None when no defined epoch qualifies."""

    epoch: int | None
    mode: str
    reason: str
    candidates: list[int]

    def as_dict(self) -> dict:
        return asdict(self)


def select_epoch(
    epochs: Sequence[int],
    gwa: Sequence[float | None],
    *,
    mode: Literal["scratch", "finetune"] = "scratch",
    total_epochs: int | None = None,
    warmup_fraction: float = 0.1,
) -> EarlyStopResult:
    """Pick the early-stopping epoch from the GWA curve (no validation set).

    ``scratch``: ignore epochs inside the first ``warmup_fraction`` of training (by the
    planned ``total_epochs``, default the number of epochs given), then take the highest
    GWA. ``finetune``: GWA of a pre-trained model first falls, then rises: find the first
    local minimum and take the highest GWA after it. Undefined epochs (None/NaN) are
    skipped, never selected.
    """
    if mode not in ("scratch", "finetune"):
        raise InputError(f"unknown mode {mode!r}; valid modes: 'scratch', 'finetune'")
    if len(epochs) != len(gwa):
        raise InputError(f"{len(epochs)} epochs but {len(gwa)} GWA values")
    if not 0.0 <= warmup_fraction < 1.0:
        raise InputError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    pairs = sorted(
        (int(e), float(g))
        for e, g in zip(epochs, gwa)
        if g is not None and not (isinstance(g, float) and math.isnan(g)) and math.isfinite(float(g))
    )
    if mode == "scratch":
        total = total_epochs if total_epochs is not None else (max(epochs) + 1 if len(epochs) else 0)
        # Epoch e (0-based) ends after (e + 1) / total of training; skip those within warm-up.
        cands = [(e, g) for e, g in pairs if (e + 1) > warmup_fraction * total + 1e-9]
        if not cands:
            return EarlyStopResult(None, mode, "no defined GWA after the warm-up fraction", [])
        best = max(cands, key=lambda eg: (eg[1], -eg[0]))
        return EarlyStopResult(best[0], mode, f"highest GWA ({best[1]:.4g}) after warm-up", [e for e, _ in cands])
    minimum = _first_local_minimum([g for _, g in pairs])
    if minimum is None:
        rising = len(pairs) > 1 and all(b[1] >= a[1] for a, b in zip(pairs, pairs[1:])) and pairs[-1][1] > pairs[0][1]
        why = "GWA has only risen since the first epoch, no fall seen" if rising else "curve still falling or too short"
        return EarlyStopResult(None, mode, f"no local minimum of GWA yet ({why})", [])
    cands = pairs[minimum + 1 :]
    best = max(cands, key=lambda eg: (eg[1], -eg[0]))
    return EarlyStopResult(
        best[0], mode, f"highest GWA ({best[1]:.4g}) after the first local minimum at epoch {pairs[minimum][0]}",
        [e for e, _ in cands],
    )


def _first_local_minimum(values: Sequence[float]) -> int | None:
    """Index of the last point of the first run of equal values that is lower than the run
    before it and the run after it (a flat step inside a fall is not a minimum)."""
    runs: list[tuple[int, int]] = []  # (first, last) index of each run of equal values
    for i, v in enumerate(values):
        if runs and values[runs[-1][0]] == v:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    for before, run, after in zip(runs, runs[1:], runs[2:]):
        if values[before[0]] > values[run[0]] < values[after[0]]:
            return run[1]
    return None
