"""Detection metrics against scikit-learn, hand-computed precision/recall, ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from analysis_fixtures import noisy_rows, write_run
from gwa_diag.analysis.metrics import (
    RULE_ROW,
    auroc,
    average_precision,
    detection_table,
    ground_truth,
    per_class_table,
    pr_points,
    precision_recall_at_k,
    roc_points,
    rule_scores,
)
from gwa_diag.analysis.summaries import SCORERS, AnalysisError, summarize

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


def _run_with_truth(tmp_path, **kwargs):
    rows, given, clean = noisy_rows(n=200, epochs=8, seed=7)
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, **kwargs)
    return path, given, clean


def test_ground_truth_from_labels_parquet_and_from_a_csv(tmp_path):
    path, given, clean = _run_with_truth(tmp_path)
    truth = ground_truth(path)
    expected = pd.Series({i: given[i] != clean[i] for i in given}).sort_index()
    np.testing.assert_array_equal(truth.to_numpy(), expected.to_numpy())
    assert truth.index.name == "sample_id" and truth.dtype == bool
    # A truth file with every sample clean except two flipped ones
    csv = tmp_path / "truth.csv"
    other = {i: given[i] for i in given}
    other[3], other[5] = (given[3] + 1) % 4, (given[5] + 1) % 4
    pd.DataFrame({"sample_id": list(other), "clean_label": list(other.values())}).to_csv(csv, index=False)
    from_file = ground_truth(path, truth_file=csv)
    assert from_file[from_file].index.tolist() == [3, 5]


def test_ground_truth_errors_are_clear(tmp_path):
    rows, given, _ = noisy_rows(n=30, epochs=3, seed=7)
    path = write_run(tmp_path / "run", rows, num_classes=4, labels=given)
    with pytest.raises(AnalysisError, match="no ground truth.*no clean_label column.*--truth"):
        ground_truth(path)
    # A run recorded in a plain loop has no labels.parquet at all: the message says how to add one.
    bare = write_run(tmp_path / "bare", rows, num_classes=4)
    with pytest.raises(AnalysisError, match=r"no labels.parquet.*recorder.writer.write_labels.*--truth"):
        ground_truth(bare)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": [1], "label": [2]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="sample_id and clean_label"):
        ground_truth(path, truth_file=bad)
    with pytest.raises(FileNotFoundError):
        ground_truth(path, truth_file=tmp_path / "missing.csv")


def test_ground_truth_without_labels_parquet_reads_labels_from_the_rows(tmp_path):
    rows, given, clean = noisy_rows(n=40, epochs=3, seed=8)
    path = write_run(tmp_path / "run", rows, num_classes=4)
    csv = tmp_path / "truth.csv"
    pd.DataFrame({"sample_id": list(clean), "clean_label": list(clean.values())}).to_csv(csv, index=False)
    truth = ground_truth(path, truth_file=csv)
    assert truth.sum() == sum(given[i] != clean[i] for i in given)


def test_detection_table_matches_the_metric_functions(tmp_path):
    path, given, clean = _run_with_truth(tmp_path)
    summary = summarize(path)
    truth = ground_truth(path)
    table = detection_table(summary, truth)
    assert list(table.index) == [*SCORERS, RULE_ROW]
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
    assert table.attrs == {"n": 200, "n_noisy": int(y.sum()), "k": int(y.sum())}
    with pytest.raises(ValueError, match="valid scorers"):
        detection_table(summary, truth, scorers=["nope"])


def test_per_class_table(tmp_path):
    path, given, clean = _run_with_truth(tmp_path)
    summary = summarize(path)
    truth = ground_truth(path)
    table = per_class_table(summary, truth)
    assert table["n"].sum() == len(summary)
    for label, row in table.iterrows():
        members = summary.index[summary["label"] == label]
        y = truth.loc[members].to_numpy()
        assert row["n_noisy"] == y.sum()
        assert row["auroc"] == pytest.approx(roc_auc_score(y, summary.loc[members, "align_mean"]))
    with pytest.raises(ValueError, match="valid scorers"):
        per_class_table(summary, truth, scorer="nope")


def test_truth_files_partial_named_out_of_range_and_parquet(tmp_path):
    from gwa_diag.analysis.metrics import TruthCoverageWarning
    from gwa_diag.store import RunWriter

    path, given, clean = _run_with_truth(tmp_path)
    RunWriter(path, resume=True).update_meta(class_names=["cat", "dog", "car", "ship"])
    ids = sorted(given)
    part = tmp_path / "part.csv"
    pd.DataFrame({"sample_id": ids[:50], "clean_label": [clean[i] for i in ids[:50]]}).to_csv(part, index=False)
    with pytest.warns(TruthCoverageWarning, match="covers 50 of the run's 200 samples"):
        truth = ground_truth(path, truth_file=part)
    assert len(truth) == 50 and truth.attrs["coverage"] == {"matched": 50, "samples": 200, "truth_rows": 50}
    # Class names map through run.json's class_names; an unknown name is refused.
    names = tmp_path / "names.csv"
    pd.DataFrame({"sample_id": ids, "clean_label": [["cat", "dog", "car", "ship"][clean[i]] for i in ids]}).to_csv(names, index=False)
    by_name = ground_truth(path, truth_file=names)
    np.testing.assert_array_equal(by_name.to_numpy(), ground_truth(path).to_numpy())
    pd.DataFrame({"sample_id": ids[:2], "clean_label": ["cat", "truck"]}).to_csv(names, index=False)
    with pytest.raises(ValueError, match="'truck'.*class names are cat, dog, car, ship"):
        ground_truth(path, truth_file=names)
    # A label outside the run's classes is an error, not a mislabeled sample.
    wide = tmp_path / "wide.csv"
    pd.DataFrame({"sample_id": ids, "clean_label": [42] + [clean[i] for i in ids[1:]]}).to_csv(wide, index=False)
    with pytest.raises(ValueError, match=r"clean_label 42 .* outside the run's classes \[0, 4\)"):
        ground_truth(path, truth_file=wide)
    # Parquet by suffix, in any case, including .pq.
    frame = pd.DataFrame({"sample_id": ids, "clean_label": [clean[i] for i in ids]})
    for name in ("truth.PARQUET", "truth.pq"):
        frame.to_parquet(tmp_path / name)
        np.testing.assert_array_equal(ground_truth(path, truth_file=tmp_path / name).to_numpy(), ground_truth(path).to_numpy())
    with pytest.raises(ValueError, match="is a directory"):
        ground_truth(path, truth_file=tmp_path)


def test_truth_names_from_the_dataset_spec_unreadable_files_and_extra_ids(tmp_path):
    from gwa_diag.analysis.metrics import TruthCoverageWarning
    from gwa_diag.store import RunWriter

    path, given, clean = _run_with_truth(tmp_path)
    ids = sorted(given)
    names = ["cat", "dog", "car", "ship"]
    by_name = tmp_path / "names.csv"
    pd.DataFrame({"sample_id": ids, "clean_label": [names[clean[i]] for i in ids]}).to_csv(by_name, index=False)
    # No class names recorded: names are refused, saying labels must be class indices.
    with pytest.raises(ValueError, match=r"'(cat|dog|car|ship)'.*labels must be class indices.*0\.\.3"):
        ground_truth(path, truth_file=by_name)
    # Class names recorded only in the dataset spec (as `train --data ...` writes them) map too.
    RunWriter(path, resume=True).update_meta(dataset={"source": "npz", "class_names": names})
    np.testing.assert_array_equal(ground_truth(path, truth_file=by_name).to_numpy(), ground_truth(path).to_numpy())
    # Tab-separated by suffix; unreadable files name the file and the format tried.
    tsv = tmp_path / "truth.tsv"
    pd.DataFrame({"sample_id": ids, "clean_label": [clean[i] for i in ids]}).to_csv(tsv, index=False, sep="\t")
    np.testing.assert_array_equal(ground_truth(path, truth_file=tsv).to_numpy(), ground_truth(path).to_numpy())
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=rf"could not be read as CSV.*\({empty}\)"):
        ground_truth(path, truth_file=empty)
    broken = tmp_path / "broken.PQ"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=rf"could not be read as Parquet.*\({broken}\)"):
        ground_truth(path, truth_file=broken)
    # Every sample covered, plus rows for ids the run does not have: scored, and said.
    extra = tmp_path / "extra.csv"
    pd.DataFrame({"sample_id": ids + [900, 901], "clean_label": [clean[i] for i in ids] + [0, 1]}).to_csv(extra, index=False)
    with pytest.warns(TruthCoverageWarning, match="^2 truth rows name sample ids the run does not have"):
        truth = ground_truth(path, truth_file=extra)
    assert truth.attrs["coverage"] == {"matched": 200, "samples": 200, "truth_rows": 202}
