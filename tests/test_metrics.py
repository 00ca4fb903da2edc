"""Detection metrics against scikit-learn and hand-computed precision/recall; the tables on a run."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from analysis_fixtures import run_with_truth
from gwa_diag.checks import InputError
from gwa_diag.analysis.metrics import (
    ESTIMATE_ROW,
    RULE_ROW,
    auroc,
    average_precision,
    curve_points,
    detection_table,
    per_class_table,
    pr_points,
    precision_recall_at_k,
    roc_points,
    rule_scores,
)
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.analysis.summaries import summarize
from gwa_diag.analysis.truth import ground_truth

CASES = [
    # (scores, is_noisy): hand-made, with ties inside and across classes
    ([0.9, 0.8, 0.7, 0.6, 0.5], [1, 1, 0, 1, 0]),
    ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]),
    ([1.0, 1.0, 0.2, 0.2, 0.2, -3.0], [1, 0, 1, 0, 0, 1]),
    ([3, 2, 2, 2, 1, 1, 0], [0, 1, 1, 0, 1, 0, 0]),
    ([0.1, 0.9], [0, 1]),
]


@pytest.mark.parametrize("scores, y", CASES)
def test_auroc_and_ap_agree_with_sklearn_on_hand_made_cases(scores, y):
    assert auroc(scores, y) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert average_precision(scores, y) == pytest.approx(average_precision_score(y, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_and_ap_agree_with_sklearn_on_random_tied_scores(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.2
    scores = np.round(rng.standard_normal(500) + y, 1)  # coarse rounding: many ties
    assert auroc(scores, y) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert average_precision(scores, y) == pytest.approx(average_precision_score(y, scores), abs=1e-12)
    fpr, tpr = roc_points(scores, y)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    recall, precision = pr_points(scores, y)
    assert np.sum(np.diff(np.r_[0, recall]) * precision) == pytest.approx(average_precision_score(y, scores), abs=1e-12)


def test_curve_points_thin_the_curves_keeping_their_ends():
    rng = np.random.default_rng(0)
    y = rng.random(5000) < 0.2
    scores = rng.standard_normal(5000) + y
    for kind, full in (("roc", roc_points(scores, y)), ("pr", pr_points(scores, y))):
        x, v = curve_points(scores, y, kind=kind, points=100)
        assert x.size == v.size == 100 and full[0].size > 100
        assert (x[0], v[0], x[-1], v[-1]) == (full[0][0], full[1][0], full[0][-1], full[1][-1])
        # every kept point is a point of the full curve, in the curve's order
        positions = [int(np.flatnonzero((full[0] == a) & (full[1] == b))[0]) for a, b in zip(x, v)]
        assert positions == sorted(positions)
        # a short curve comes back whole
        whole = curve_points(scores[:20], y[:20], kind=kind)
        short = (roc_points if kind == "roc" else pr_points)(scores[:20], y[:20])
        assert all(np.array_equal(a, b) for a, b in zip(whole, short))
    with pytest.raises(ValueError, match="unknown curve kind 'det'"):
        curve_points(scores, y, kind="det")
    with pytest.raises(ValueError, match="at least 2 points"):
        curve_points(scores, y, points=1)


def test_nan_scores_count_as_least_suspicious():
    y = [1, 0, 1, 0]
    assert auroc([0.9, np.nan, 0.8, 0.1], y) == pytest.approx(roc_auc_score(y, [0.9, -1e9, 0.8, 0.1]))


def test_precision_recall_at_k_by_hand():
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    y = [1, 0, 1, 1, 0, 0]
    # k defaults to the number of noisy samples (3): top 3 hold 2 noisy
    assert precision_recall_at_k(scores, y) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert precision_recall_at_k(scores, y, k=1) == (1.0, pytest.approx(1 / 3))
    assert precision_recall_at_k(scores, y, k=6) == (0.5, 1.0)


def test_rule_scores_by_hand():
    out = rule_scores([True, True, False, False, True], [True, False, True, False, True])
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["n_flagged"] == 3
    assert np.isnan(rule_scores([False, False], [True, False])["precision"])


def test_single_class_and_bad_inputs_raise():
    with pytest.raises(ValueError, match="both noisy and clean"):
        auroc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="same length"):
        auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="boolean"):
        auroc([0.1, 0.2], [0, 2])


def test_detection_table_matches_the_metric_functions(tmp_path):
    path, given, clean = run_with_truth(tmp_path)
    summary = summarize(path)
    truth = ground_truth(path)
    table = detection_table(summary, truth)
    assert list(table.index) == [*SCORERS, ESTIMATE_ROW, RULE_ROW]
    y = truth.loc[summary.index].to_numpy()
    for name in SCORERS:
        s = summary[name].to_numpy(float)
        assert table.loc[name, "auroc"] == pytest.approx(roc_auc_score(y, np.nan_to_num(s, nan=-np.inf)))
        assert table.loc[name, "ap"] == pytest.approx(average_precision_score(y, np.nan_to_num(s, nan=-np.inf)))
        p, r = precision_recall_at_k(s, y)
        assert table.loc[name, "p_at_k"] == pytest.approx(p) and table.loc[name, "r_at_k"] == pytest.approx(r)
    rule = rule_scores(summary["alignment_selected"].to_numpy() < 0, y)
    assert table.loc[RULE_ROW, "precision"] == pytest.approx(rule["precision"])
    assert table.loc[RULE_ROW, "n_flagged"] == rule["n_flagged"]
    # the injected noise has lower alignment: the default scorer finds it
    assert table.loc["align_mean", "auroc"] > 0.9
    estimated = int((summary["unfitted"] > 0.5).sum())
    assert table.attrs == {"n": 200, "n_noisy": int(y.sum()), "k": int(y.sum()), "estimated": estimated}
    # the default rule flags the top of the default ranking, as many as the estimate
    top = set(summary.sort_values(["aum"], ascending=False).index[:estimated])
    assert table.loc[ESTIMATE_ROW, "n_flagged"] == estimated
    assert table.loc[ESTIMATE_ROW, "precision"] == pytest.approx(rule_scores(summary.index.isin(top), y)["precision"], nan_ok=True)
    with pytest.raises(InputError, match="scorer 'nope'"):
        detection_table(summary, truth, scorers=["nope"])


def test_per_class_table(tmp_path):
    path, given, clean = run_with_truth(tmp_path)
    summary = summarize(path)
    truth = ground_truth(path)
    table = per_class_table(summary, truth, scorer="align_mean")
    assert table["n"].sum() == len(summary)
    for label, row in table.iterrows():
        members = summary.index[summary["label"] == label]
        y = truth.loc[members].to_numpy()
        assert row["n_noisy"] == y.sum()
        assert row["auroc"] == pytest.approx(roc_auc_score(y, summary.loc[members, "align_mean"]))
    with pytest.raises(InputError, match="scorer 'nope'"):
        per_class_table(summary, truth, scorer="nope")
