"""The whole loop offline: train on noisy labels, rank, review a few suspects, export
corrected labels, and train again on them without the dropped samples."""

from __future__ import annotations

import json

import pandas as pd

from analysis_fixtures import colour_images_npz
from gwa_diag.analysis import relabel
from gwa_diag.analysis.rank import read_suspects
from gwa_diag.cli import main

FAST = ["--batch-size", "50", "--lr", "0.05", "--warmup-epochs", "0.5", "--no-augment", "--quiet"]


def _wrong(labels: pd.Series, clean: pd.Series) -> int:
    return int((labels != clean.loc[labels.index]).sum())


def test_train_rank_review_export_and_retrain(tmp_path, capsys):
    data = colour_images_npz(tmp_path / "d.npz")
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--data", "npz", "--data-path", str(data), "--noise-rate", "0.2", "--epochs", "4",
                 *FAST, "--out", str(first)]) == 0
    assert main(["rank", str(first)]) == 0
    trained = pd.read_parquet(first / "labels.parquet").set_index("sample_id")
    given, clean = trained["label"], trained["clean_label"]
    suspects = read_suspects(first / "analysis" / "suspects.csv").set_index("sample_id")
    noisy = suspects[suspects["given_label"] != clean.loc[suspects.index]]
    assert len(noisy) >= 2, "the run should flag noisy samples"
    # A flagged sample whose label is right, else any right one (a reviewer may open any sample).
    right = suspects.index[suspects["given_label"] == clean.loc[suspects.index]]
    fine = int(right[0]) if len(right) else int(given.index[given == clean][0])

    # A reviewer: accepts one suggestion, gives one sample its true label, confirms a right one.
    accepted, relabeled = int(noisy.index[0]), int(noisy.index[1])
    relabel.record_decision(first, accepted, "accept", given_label=int(given[accepted]),
                            suggested_label=int(suspects.loc[accepted, "suggested_label"]))
    relabel.record_decision(first, relabeled, "relabel", new_label=int(clean[relabeled]))
    relabel.record_decision(first, fine, "fine")
    decided = {accepted: int(suspects.loc[accepted, "suggested_label"]), relabeled: int(clean[relabeled]),
               fine: int(given[fine])}

    # Policy relabel: the suggestions of the undecided suspects.
    fixed = tmp_path / "fixed.csv"
    assert main(["labels", str(first), "--out", str(fixed), "--auto", "relabel"]) == 0
    out = pd.read_csv(fixed, keep_default_na=False).set_index("sample_id")
    assert out.index.equals(given.sort_index().index)
    for sid, want in decided.items():
        assert out.loc[sid, "label"] == want and out.loc[sid, "changed_by"].startswith("decision:")
    untouched = out.index.difference(suspects.index)
    assert (out.loc[untouched, "label"] == given.loc[untouched]).all()
    assert _wrong(out["label"], clean) < _wrong(given, clean)

    # Policy drop: the undecided suspects go to the exclusion list; the next run trains without them.
    dropped = tmp_path / "dropped.csv"
    assert main(["labels", str(first), "--out", str(dropped), "--auto", "drop"]) == 0
    printed = capsys.readouterr().out
    excluded_file = tmp_path / "dropped.excluded.csv"
    excluded = pd.read_csv(excluded_file)["sample_id"]
    assert sorted(excluded) == sorted(suspects.index.difference(list(decided))) and len(excluded)
    assert f"--labels {dropped} --exclude {excluded_file}" in printed
    kept = pd.read_csv(dropped, keep_default_na=False).set_index("sample_id").drop(index=excluded)
    assert _wrong(kept["label"], clean) < _wrong(given, clean)

    assert main(["train", "--data", "npz", "--data-path", str(data), "--labels", str(dropped),
                 "--exclude", str(excluded_file), "--epochs", "2", *FAST, "--out", str(second)]) == 0
    meta = json.loads((second / "run.json").read_text())
    parent = json.loads((first / "run.json").read_text())
    assert meta["label_provenance"]["parent_run_id"] == parent["run_id"]
    assert meta["label_provenance"]["label_file"] == str(dropped.resolve())
    assert meta["label_provenance"]["label_file_matches"] is True
    assert meta["exclusion"]["count"] == len(excluded) and meta["exclusion"]["path"] == str(excluded_file.resolve())
    again = pd.read_parquet(second / "labels.parquet").set_index("sample_id")
    assert not again.index.isin(excluded).any() and len(again) == len(given) - len(excluded)
    assert (again["label"] == kept.loc[again.index, "label"]).all()

    # The report of the new run says where its labels came from.
    assert main(["report", str(second)]) == 0
    report = json.loads((second / "analysis" / "report.json").read_text())
    line = report["label_provenance"]["line"]
    assert line.startswith(f"trained on corrected labels from run {parent['run_id']}")
    assert f"{len(excluded)} excluded" in line
    assert line[1:] in (second / "analysis" / "report.md").read_text()
