"""How far to trust the GWA-selected epoch (clear peak, rising, flat, edge), LabelWave's
choice from prediction changes, and the rank correlation they are reported with."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gwa_diag.checks import InputError
from gwa_diag.early_stopping import (
    EarlyStopResult,
    assess_choice,
    labelwave_epoch,
    rank_correlation,
    select_epoch,
)

EPOCHS = list(range(30))


def _assess(curve: list[float]):
    selected = select_epoch(EPOCHS, curve, total_epochs=len(EPOCHS))
    return selected, assess_choice(EPOCHS, curve, selected)


def test_a_clear_interior_peak_is_trusted():
    rng = np.random.default_rng(0)
    curve = [math.exp(-(((e - 15) / 5) ** 2)) + 0.01 * rng.standard_normal() for e in EPOCHS]
    selected, trust = _assess(curve)
    assert 13 <= selected.epoch <= 17
    assert trust.level == "clear" and trust.reasons == ()
    assert trust.peak_margin > 3


def test_a_monotone_rising_curve_is_not_trusted():
    # Memorisation: fitted wrong labels turn positive, so mean alignment only climbs.
    curve = [0.002 * e + 0.0003 * math.sin(3 * e) for e in EPOCHS]
    selected, trust = _assess(curve)
    assert selected.epoch == 29
    assert trust.level == "none"
    assert trust.rising_correlation > 0.95
    assert any("rank correlation" in r for r in trust.reasons) and any("last epoch" in r for r in trust.reasons)


def test_a_flat_noisy_curve_has_no_clear_peak():
    rng = np.random.default_rng(1)
    curve = list(0.05 + 0.002 * rng.standard_normal(len(EPOCHS)))
    selected, trust = _assess(curve)
    assert trust.level == "weak"
    assert any("no clear peak" in r for r in trust.reasons)
    assert trust.peak_margin < 3


def test_a_choice_at_the_first_epoch_after_warmup_is_weak():
    curve = [1.0, 1.0, 1.0] + [0.9 - 0.02 * i for i in range(27)]  # falls from the end of warm-up on
    selected, trust = _assess(curve)
    assert selected.epoch == selected.candidates[0] == 3
    assert trust.level == "weak" and any("first epoch after the warm-up" in r for r in trust.reasons)


def test_no_selection_means_no_trust():
    trust = assess_choice(EPOCHS, [None] * 30, EarlyStopResult(None, "scratch", "nothing defined", []))
    assert trust.level == "none" and "nothing defined" in trust.reasons[0]


def test_rank_correlation_matches_a_reference_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    for _ in range(20):
        x = rng.integers(0, 6, size=15).astype(float)  # many ties
        y = x + rng.integers(-3, 4, size=15)
        assert rank_correlation(list(x), list(y)) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert rank_correlation([1, 2], [2, 1]) is None  # too short
    assert rank_correlation([1, 1, 1], [1, 2, 3]) is None  # constant
    with pytest.raises(InputError):
        rank_correlation([1, 2, 3], [1, 2])


def test_labelwave_stops_at_the_first_minimum_of_smoothed_prediction_changes():
    # Changes fall while the clean patterns are learnt, then rise as wrong labels are fitted.
    changes = [None] + [1000 * math.exp(-e / 4) + 30 * max(0, e - 12) for e in EPOCHS[1:]]
    raw_min = 1 + int(np.argmin(changes[1:]))
    chosen = labelwave_epoch(EPOCHS, changes)
    assert chosen.mode == "labelwave"
    assert abs(chosen.epoch - raw_min) <= 1  # the 3-epoch average lags by at most one epoch
    assert labelwave_epoch(EPOCHS, changes, window=1).epoch == raw_min
    # A single noisy dip early on does not stop it with the default window.
    bumpy = list(changes)
    bumpy[4] = bumpy[5] * 0.8
    assert labelwave_epoch(EPOCHS, bumpy, window=1).epoch == 4
    assert labelwave_epoch(EPOCHS, bumpy).epoch > 6


def test_labelwave_without_a_minimum_selects_nothing():
    falling = [None] + [100.0 / e for e in EPOCHS[1:]]
    assert labelwave_epoch(EPOCHS, falling).epoch is None
    with pytest.raises(InputError, match="window"):
        labelwave_epoch(EPOCHS, falling, window=0)
