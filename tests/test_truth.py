"""Ground truth: which samples are mislabeled, from labels.parquet or a truth file (CSV,
TSV, Parquet; class indices or names), with coverage warnings and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import noisy_rows, run_with_truth, write_run
from gwa_diag.store import AnalysisError
from gwa_diag.analysis.truth import TruthCoverageWarning, ground_truth
from gwa_diag.store import RunWriter


def test_ground_truth_from_labels_parquet_and_from_a_csv(tmp_path):
    path, given, clean = run_with_truth(tmp_path)
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


def test_truth_files_partial_named_out_of_range_and_parquet(tmp_path):
    path, given, clean = run_with_truth(tmp_path)
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
    path, given, clean = run_with_truth(tmp_path)
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
