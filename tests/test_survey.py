"""The statistics of a verified sample against slow references: every stratified sample of a
toy population enumerated, the exact beta-binomial quantiles, coverage on a synthetic
population with a known count, the allocation's bounds, and a calibrated p_wrong."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gwa_diag.analysis.audit import allocate
from gwa_diag.analysis.survey import fit_p_wrong, recall_bound, stratified_total
from gwa_diag.checks import InputError


def test_the_point_estimate_is_unbiased_over_every_possible_sample():
    # Two strata (5 and 4 units, 3 and 1 wrong), 2 verified in each: enumerate all 60 samples.
    strata = [np.array([1, 1, 0, 1, 0]), np.array([0, 1, 0, 0])]
    truth = sum(int(s.sum()) for s in strata)
    estimates, covered = [], 0
    samples = [list(itertools.combinations(range(len(s)), 2)) for s in strata]
    for picks in itertools.product(*samples):
        hits = [int(s[list(p)].sum()) for s, p in zip(strata, picks)]
        # Slow reference: N_h times the sampled share, summed.
        slow = sum(len(s) * h / 2 for s, h in zip(strata, hits))
        interval = stratified_total([5, 4], [2, 2], hits)
        assert interval.estimate == pytest.approx(slow)
        estimates.append(interval.estimate)
        covered += interval.low <= truth <= interval.high
    assert np.mean(estimates) == pytest.approx(truth)  # Horvitz-Thompson: unbiased
    assert covered / len(estimates) >= 0.95


def test_one_stratum_gives_the_beta_binomial_quantiles():
    # 120 units, 30 verified, 9 wrong: the unverified count is BetaBinomial(90, 9.5, 21.5).
    interval = stratified_total([120], [30], [9])
    exact = stats.betabinom(90, 9 + 0.5, 21 + 0.5)
    low, high = 9 + exact.ppf(0.025), 9 + exact.ppf(0.975)
    assert (interval.low, interval.high) == (low, high)
    assert interval.estimate == pytest.approx(120 * 9 / 30)


def test_a_stratum_verified_in_full_adds_no_uncertainty():
    exact = stratified_total([40, 60], [40, 60], [7, 11])
    assert exact.estimate == exact.low == exact.high == 18


def test_intervals_cover_a_known_count():
    # 6,000 samples, wrong labels concentrated at the top of a noisy ranking; 200 audits of 200.
    rng = np.random.default_rng(0)
    n_pop, strata = 6000, 5
    score = rng.normal(size=n_pop)
    wrong = rng.random(n_pop) < 1 / (1 + np.exp(-(2.5 * score - 1.5)))
    order = np.argsort(-score)
    stratum = np.empty(n_pop, dtype=int)
    stratum[order] = (np.arange(n_pop) * strata) // n_pop
    sizes = np.bincount(stratum)
    guess = np.clip([wrong[stratum == h].mean() for h in range(strata)], 0.05, 0.95)
    n_h = allocate(200, sizes, guess, np.full(strata, 2))
    covered, widths = 0, []
    for sim in range(200):
        hits = [int(rng.choice(wrong[stratum == h], n_h[h], replace=False).sum()) for h in range(strata)]
        interval = stratified_total(sizes, n_h, hits)
        covered += interval.low <= wrong.sum() <= interval.high
        widths.append((interval.high - interval.low) / 2 / wrong.sum())
    assert covered / 200 >= 0.92
    assert 0.02 < np.mean(widths) < 0.25  # an interval, neither a point nor everything


def test_allocation_respects_floors_sizes_and_neyman_shares():
    sizes = np.array([100, 100, 100, 10])
    out = allocate(150, sizes, np.array([0.5, 0.1, 0.05, 0.5]), np.array([2, 2, 2, 2]))
    assert out.sum() == 150 and (out >= 2).all() and (out <= sizes).all()
    assert out[0] > out[1] > out[2]  # the most uncertain stratum gets the most
    grown = allocate(250, sizes, np.array([0.5, 0.1, 0.05, 0.5]), out)
    assert grown.sum() == 250 and (grown >= out).all()
    assert allocate(310, sizes, np.full(4, 0.5), np.zeros(4, dtype=int)).tolist() == [100, 100, 100, 10]


def test_the_interval_holds_its_estimate_when_nothing_wrong_was_verified():
    none = stratified_total([100, 200], [10, 20], [0, 0])
    assert none.estimate == none.low == 0 and none.high > 0


def test_bad_counts_are_refused():
    with pytest.raises(InputError, match="stratum 1"):
        stratified_total([10, 10], [3, 0], [1, 0])
    with pytest.raises(InputError, match="hits <= sampled"):
        stratified_total([10], [3], [4])


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    edges = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[edges == b].mean() - y[edges == b].mean()) * (edges == b).mean()
                     for b in range(bins) if (edges == b).any()))


def test_p_wrong_is_calibrated_with_design_weights():
    # The share of wrong labels among unfitted samples differs from what the score alone
    # says; a verified sample that over-represents the top must still describe the whole run.
    rng = np.random.default_rng(1)
    n = 8000
    score = rng.normal(size=n)
    unfitted = (rng.random(n) < 1 / (1 + np.exp(-2 * score))).astype(float)
    truth_p = 1 / (1 + np.exp(-(1.5 * score + 1.2 * unfitted - 2.0)))
    wrong = rng.random(n) < truth_p
    summary = pd.DataFrame({"unfitted": unfitted, "disagreement": unfitted * 0.8}, index=pd.RangeIndex(n, name="sample_id"))
    top = np.argsort(-score)[: n // 5]
    rest = np.setdiff1d(np.arange(n), top)
    picked_top, picked_rest = rng.choice(top, 150, replace=False), rng.choice(rest, 150, replace=False)
    verified = pd.Series(wrong[np.r_[picked_top, picked_rest]], index=np.r_[picked_top, picked_rest])
    weights = pd.Series(np.r_[np.full(150, len(top) / 150), np.full(150, len(rest) / 150)], index=verified.index)
    p = fit_p_wrong(summary, pd.Series(score, index=summary.index), verified, weights).to_numpy()
    unverified = np.setdiff1d(np.arange(n), verified.index)
    assert _ece(p[unverified], wrong[unverified]) <= 0.05
    assert abs(p.mean() - wrong.mean()) < 0.03
    unweighted = fit_p_wrong(summary, pd.Series(score, index=summary.index), verified,
                             pd.Series(1.0, index=verified.index)).to_numpy()
    assert abs(p.mean() - wrong.mean()) < abs(unweighted.mean() - wrong.mean())


def test_recall_bound_adds_the_remaining_count():
    # 80 found in the reviewed top; below it 900 units, 60 verified, 3 wrong: about 45 remain.
    bound = recall_bound(80, 300, [900], [60], [3], target=0.6)
    assert bound.remaining.estimate == pytest.approx(45)
    assert bound.recall == pytest.approx(80 / 125)
    assert bound.recall_low == pytest.approx(80 / (80 + bound.remaining.high))
    assert bound.recall_low < bound.recall and bound.reached == (bound.recall_low >= 0.6)
    assert "reviewed the top 300" in bound.line()
    with pytest.raises(InputError, match="target"):
        recall_bound(1, 1, [10], [2], [0], target=1.5)
    assert math.isclose(recall_bound(5, 10, [10], [10], [0]).recall_low, 1.0)
