"""gwa_diag.analyze -> Analysis: its parts agree with each other, bad options are refused
before any data is read, and the report / score / rank commands print and write the same
numbers as the Analysis of the same run."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

import gwa_diag
from analysis_fixtures import noisy_rows, write_run
from gwa_diag.analysis.pipeline import LABELS_SOURCE, Analysis, analyze
from gwa_diag.analysis.rank import read_suspects
from gwa_diag.analysis.report import write_report
from gwa_diag.analysis.phase import selected_epoch
from gwa_diag.analysis.summaries import summarize
from gwa_diag.checks import DEFAULT_RULE, DEFAULT_SCORER, InputError, MissingFileError
from gwa_diag.cli import main

NAMES = ["cat", "dog", "car", "ship"]


@pytest.fixture
def run(tmp_path):
    rows, given, clean = noisy_rows(n=200, epochs=6, num_classes=4, noise=0.2, seed=21)
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean,
                     meta={"class_names": NAMES, "config": {"epochs": 6, "mode": "scratch"}})
    return path, given, clean


def test_the_parts_of_an_analysis_agree_with_each_other(run):
    path, given, clean = run
    default = analyze(path)
    assert default.options.scorer == DEFAULT_SCORER and default.options.rule == DEFAULT_RULE
    # the default rule flags a top slice of the ranking, as many as the estimated count
    assert default.flagged.index.tolist() == default.ranking.index[: default.estimate.total].tolist()
    a = analyze(path, scorer="align_mean", rule="negative")
    assert isinstance(a, Analysis)
    # ranking: every sample, most suspicious (highest score) first, ranks 1..N
    assert len(a.ranking) == len(a.summary) == 200
    assert a.ranking["rank"].tolist() == list(range(1, 201))
    scores = a.ranking["score"].to_numpy()
    assert np.all(np.diff(scores[~np.isnan(scores)]) <= 0)
    np.testing.assert_array_equal(scores, a.summary.loc[a.ranking.index, "align_mean"].to_numpy())
    # flagged: the ranking's rows the rule picks, in ranking order (negative: raw alignment < 0)
    in_order = a.ranking.index[a.ranking.index.isin(a.flagged.index)]
    assert a.flagged.index.tolist() == in_order.tolist() and len(a.flagged) > 0
    assert (a.flagged["alignment_selected"] < 0).all()
    assert len(a.flagged) == int((a.summary["alignment_selected"] < 0).sum())
    # selection: the GWA epoch of the run, and the epoch the flags read
    assert a.selection.epoch == selected_epoch(path).epoch
    assert a.selection.used_epoch == a.summary.attrs["selected_epoch"]
    assert a.selection.fallback == (a.selection.epoch is None)
    assert a.selection.as_dict()["used_epoch"] == a.selection.used_epoch
    # truth: from labels.parquet, over every sample; detection tables present with it
    expected = pd.Series({i: given[i] != clean[i] for i in given}).sort_index()
    np.testing.assert_array_equal(a.truth.to_numpy(), expected.to_numpy())
    assert a.truth_source == LABELS_SOURCE and a.truth_reason is None
    assert a.truth_coverage == {"matched": 200, "samples": 200, "truth_rows": 200}
    assert a.detection is not None and a.per_class is not None
    assert a.detection.attrs["n_noisy"] == int(a.truth.sum())
    assert a.detection.loc["align_mean", "auroc"] > 0.9
    assert a.class_names == tuple(NAMES) == a.run.class_names
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.ranking = a.flagged  # type: ignore[misc]


def test_no_truth_is_not_an_error_unless_a_truth_file_was_given(tmp_path):
    rows, given, _ = noisy_rows(n=60, epochs=4, seed=12)
    path = write_run(tmp_path / "run", rows, num_classes=4, labels=given)
    a = analyze(path, rule="topk", k=5)
    assert a.truth is None and a.detection is None and a.per_class is None
    assert a.truth_source is None and a.truth_coverage is None and "clean_label" in a.truth_reason
    assert a.flagged.index.tolist() == a.ranking.index[:5].tolist()
    with pytest.raises(MissingFileError, match="missing.csv"):
        analyze(path, truth=tmp_path / "missing.csv")


def test_rules_and_a_truth_file(run, tmp_path):
    path, given, clean = run
    top = analyze(path, scorer="aum", rule="topk", k=15)
    assert top.flagged.index.tolist() == top.ranking.index[:15].tolist()
    assert set(top.flagged["scorer"]) == {"aum"} and top.per_class.attrs["scorer"] == "aum"
    rate = analyze(path, rule="noise_rate", noise_rate=0.1, window="all")
    assert len(rate.flagged) == 20 and rate.summary.attrs["window"] == "all"
    ids = sorted(given)[:50]
    part = tmp_path / "part.csv"
    pd.DataFrame({"sample_id": ids, "clean_label": [clean[i] for i in ids]}).to_csv(part, index=False)
    with pytest.warns(UserWarning, match="covers 50"):
        a = analyze(path, truth=part)
    assert a.truth_source == str(part) and a.truth_coverage["matched"] == 50 and len(a.truth) == 50
    assert a.detection.attrs["n"] == 50


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"scorer": "nope"}, "scorer 'nope'"),
        ({"window": "late"}, "window 'late'"),
        ({"rule": "nope"}, "rule 'nope'"),
        ({"rule": "topk"}, "k"),
        ({"rule": "topk", "k": -1}, "-1"),
        ({"rule": "topk", "k": 2.5}, "2.5"),
        ({"k": 3}, "k"),
        ({"rule": "noise_rate", "noise_rate": 1.5}, "noise_rate"),
        ({"rule": "noise_rate"}, "noise_rate"),
        ({"rule": "topk", "k": 2, "noise_rate": 0.1}, "noise_rate"),
    ],
)
def test_bad_options_are_refused_before_any_data_is_read(tmp_path, options, named):
    # The run does not exist: an option error proves the options were checked first.
    with pytest.raises(InputError, match=named):
        analyze(tmp_path / "no-run-here", **options)


def test_a_summary_can_be_reused_but_only_for_its_own_window(run):
    path, _, _ = run
    summary = summarize(path)
    a = analyze(path, summary=summary)
    assert a.summary is summary
    pd.testing.assert_frame_equal(a.ranking, analyze(path).ranking)
    with pytest.raises(InputError, match="window"):
        analyze(path, window="all", summary=summary)


def test_analyze_and_Analysis_are_exported_at_the_package_top():
    assert gwa_diag.analyze is analyze and gwa_diag.Analysis is Analysis
    assert {"analyze", "Analysis"} <= set(gwa_diag.__all__)


def _same(records: list[dict], table: pd.DataFrame, key: str) -> None:
    """JSON rows (NaN written as null) against a table, value by value."""
    assert [r[key] for r in records] == table.index.tolist()
    for record in records:
        for column, expected in table.loc[record[key]].items():
            got = record[column]
            if pd.isna(expected):
                assert got is None or (isinstance(got, float) and math.isnan(got)), (record[key], column)
            else:
                assert got == pytest.approx(float(expected), rel=1e-12, abs=1e-12), (record[key], column)


def test_report_score_and_rank_commands_give_the_numbers_of_analyze(run, tmp_path, capsys):
    path, _, _ = run
    out = path / "analysis"
    a = analyze(path, scorer="aum", rule="topk", k=15)
    assert main(["report", str(path), "--scorer", "aum", "--k", "15"]) == 0
    report = json.loads((out / "report.json").read_text())
    _same(report["detection"], a.detection, "method")
    _same(report["per_class"], a.per_class, "label")
    assert report["early_stopping"] == a.selection.as_dict()
    assert report["ground_truth"]["n_noisy"] == int(a.truth.sum()) and report["n_flagged"] == len(a.flagged)
    suspects = read_suspects(out / "suspects.csv")
    assert suspects["sample_id"].tolist() == a.flagged.index.tolist()
    assert suspects["rank"].tolist() == a.flagged["rank"].tolist()
    np.testing.assert_array_equal(suspects["score"].to_numpy(), a.flagged["score"].to_numpy())
    assert suspects["reason"].tolist() == a.flagged["reason"].tolist()
    assert suspects["given_name"].tolist() == [NAMES[v] for v in a.flagged["label"]]
    ranking = pd.read_parquet(out / "ranking.parquet").set_index("sample_id")
    assert ranking.index.tolist() == a.ranking.index.tolist()

    assert main(["score", str(path), "--scorer", "aum"]) == 0
    scores = json.loads((out / "scores.json").read_text())
    _same(scores["detection"], a.detection, "method")
    _same(scores["per_class"], a.per_class, "label")
    assert scores["selected_epoch"] == a.selection.used_epoch

    top = tmp_path / "top.csv"
    assert main(["rank", str(path), "--scorer", "aum", "--k", "15", "--out", str(top)]) == 0
    pd.testing.assert_frame_equal(read_suspects(top), suspects)
    assert "15 of 200 samples flagged (rule topk, ranked by aum" in capsys.readouterr().out


def test_write_report_takes_an_analysis_and_refuses_options_that_disagree(run):
    path, _, _ = run
    a = analyze(path, scorer="aum", rule="topk", k=4)
    with pytest.raises(InputError, match="scorer"):
        write_report(a, scorer="loss_mean")
    with pytest.raises(InputError, match="k=5"):
        write_report(a, rule="topk", k=5)
    # A default spelled out is an option asked for, and it disagrees too.
    other = analyze(path, scorer="align_mean")
    with pytest.raises(InputError, match="scorer='aum'"):
        write_report(other, scorer="aum")
    with pytest.raises(InputError, match="window='phase'"):
        write_report(analyze(path, window="all"), window="phase")
    assert not (path / "analysis").exists()
    report = write_report(a, scorer="aum")  # agreeing options are fine
    assert report["n_flagged"] == 4 and report["scorer"] == "aum"
    assert read_suspects(path / "analysis" / "suspects.csv")["sample_id"].tolist() == a.flagged.index.tolist()


def test_commands_print_the_training_phase_they_read_the_scores_from(tmp_path, capsys):
    from gwa_diag.cli.train import _phase_line

    from analysis_fixtures import MEMORISING_EPOCHS

    rows, _, clean = noisy_rows(n=120, epochs=10, num_classes=4, noise=0.2, seed=22)
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, extra_epoch=MEMORISING_EPOCHS)
    a = analyze(path)
    choices = a.epoch_choices
    assert choices.phase.memorised and choices.phase.onset == 6 and choices.window == (1, 2, 3, 4, 5)
    assert "epoch 6" in a.epoch_choices.note and "1-5" in a.epoch_choices.note
    for command in ("rank", "score"):
        assert main([command, str(path)]) == 0
        assert a.epoch_choices.note in capsys.readouterr().out.splitlines(), command
    # `gwa-diag train` closes with the phase read from the run it recorded.
    line = _phase_line(path)
    assert line.startswith("training phase: ") and "from epoch 6" in line
    assert main(["rank", str(path), "--window", "all"]) == 0
    assert "(window all)" in capsys.readouterr().out
