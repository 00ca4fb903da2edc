"""AnalysisOptions: one checked object for the options of an analysis. Its defaults, its
refusals (each naming the option), its round trip through report.json, and the rule that an
option given beside an Analysis must agree with the Analysis's own, a default spelled out
included, for the report and for the label export alike."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from analysis_fixtures import noisy_rows, write_run
from gwa_diag.analysis import relabel
from gwa_diag.analysis.corrected import corrected_labels
from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.pipeline import analyze
from gwa_diag.analysis.report import write_report
from gwa_diag.checks import DEFAULT_RULE, DEFAULT_SCORER, DEFAULT_WINDOW, InputError, InputTypeError


@pytest.fixture
def run(tmp_path):
    rows, given, clean = noisy_rows(n=120, epochs=5, num_classes=4, noise=0.2, seed=31)
    return write_run(tmp_path / "run", rows, num_classes=4, labels=given, clean_labels=clean)


def _named(err: pytest.ExceptionInfo, option: str) -> bool:
    return option in str(err.value)


# --------------------------------------------------------------------------------------
# the object
# --------------------------------------------------------------------------------------


def test_defaults_are_the_documented_ones_and_the_object_is_frozen():
    options = AnalysisOptions()
    assert (options.scorer, options.window, options.rule) == (DEFAULT_SCORER, DEFAULT_WINDOW, DEFAULT_RULE)
    assert options.k is None and options.noise_rate is None and options.truth is None
    assert AnalysisOptions.names() == ("scorer", "window", "rule", "k", "noise_rate", "truth")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.scorer = "align_mean"  # type: ignore[misc]
    with pytest.raises(TypeError):
        AnalysisOptions("aum")  # type: ignore[misc]  # keyword-only, as every option


def test_values_are_normalised_so_equal_choices_compare_equal(tmp_path):
    assert AnalysisOptions(rule="topk", k=5.0) == AnalysisOptions(rule="topk", k=5)  # type: ignore[arg-type]
    assert isinstance(AnalysisOptions(rule="topk", k=5.0).k, int)  # type: ignore[arg-type]
    assert AnalysisOptions(rule="noise_rate", noise_rate=1).noise_rate == 1.0
    assert AnalysisOptions(truth=str(tmp_path / "t.csv")).truth == tmp_path / "t.csv"
    # replace() makes a new object, checked again
    with pytest.raises(InputError):
        dataclasses.replace(AnalysisOptions(), k=3)


@pytest.mark.parametrize("kwargs, option", [
    ({"scorer": "nope"}, "scorer"),
    ({"scorer": 3}, "scorer"),
    ({"window": "late"}, "window"),
    ({"rule": "nope"}, "rule"),
    ({"rule": "topk"}, "k"),
    ({"rule": "topk", "k": -1}, "k"),
    ({"rule": "topk", "k": 2.5}, "k"),
    ({"rule": "topk", "k": True}, "k"),
    ({"k": 5}, "k"),
    ({"rule": "noise_rate"}, "noise_rate"),
    ({"rule": "noise_rate", "noise_rate": 1.5}, "noise_rate"),
    ({"rule": "noise_rate", "noise_rate": float("nan")}, "noise_rate"),
    ({"noise_rate": 0.1}, "noise_rate"),
    ({"truth": 3}, "truth"),
])
def test_bad_values_are_input_errors_naming_the_option(kwargs, option):
    with pytest.raises(InputError) as err:
        AnalysisOptions(**kwargs)
    assert _named(err, option)
    assert isinstance(err.value, ValueError)


def test_a_value_of_the_wrong_kind_is_also_a_type_error():
    with pytest.raises(InputTypeError) as err:
        AnalysisOptions(truth=3)  # type: ignore[arg-type]
    assert isinstance(err.value, TypeError) and _named(err, "truth")


def test_options_or_the_keywords_never_both():
    given = AnalysisOptions(scorer="align_mean")
    assert AnalysisOptions.from_call(given) is given
    assert AnalysisOptions.from_call(scorer="align_mean", k=None) == given  # None: not given
    assert AnalysisOptions.from_call() == AnalysisOptions()
    with pytest.raises(InputError) as err:
        AnalysisOptions.from_call(given, rule="negative")
    assert _named(err, "rule")
    with pytest.raises(InputError) as err:
        AnalysisOptions.from_call(scorerr="aum")
    assert _named(err, "scorerr")
    with pytest.raises(InputTypeError):
        AnalysisOptions.from_call({"scorer": "aum"})  # type: ignore[arg-type]


def test_check_agrees_compares_what_was_given():
    made = AnalysisOptions(scorer="align_mean", rule="topk", k=4)
    made.check_agrees()
    made.check_agrees(scorer="align_mean", k=4)  # k beside a topk analysis needs no rule
    made.check_agrees(made)
    for kwargs, option in (({"scorer": "aum"}, "scorer"), ({"k": 5}, "k"), ({"window": "phase", "scorer": "aum"}, "scorer"),
                           ({"rule": "estimate", "k": None}, "rule"), ({"rule": "nope"}, "'nope'")):
        with pytest.raises(InputError) as err:
            made.check_agrees(**kwargs)
        assert _named(err, option), kwargs
    # An options object states every option: its defaults disagree too.
    with pytest.raises(InputError) as err:
        made.check_agrees(AnalysisOptions(scorer="align_mean"))
    assert _named(err, "rule")


# --------------------------------------------------------------------------------------
# report.json
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {},
    {"scorer": "align_mean", "window": "all", "rule": "topk", "k": 7},
    {"rule": "noise_rate", "noise_rate": 0.25, "window": "second_half"},
    {"rule": "negative", "scorer": "el2n"},
])
def test_round_trip_through_report_json(run, tmp_path, kwargs):
    options = AnalysisOptions(**kwargs)
    a = analyze(run, options=options)
    assert a.options == options
    report = write_report(a, out_dir=tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    # The report records what the options describe, in the places it always has.
    described = options.as_report(a.summary.attrs["window_epochs"])
    assert {key: saved[key] for key in described} == json.loads(json.dumps(described))
    assert saved["rule"] == {"name": options.rule, "k": options.k, "noise_rate": options.noise_rate,
                             "description": saved["rule"]["description"]}
    assert AnalysisOptions.from_report(saved) == options == AnalysisOptions.from_report(report)


def test_round_trip_keeps_a_truth_file(run, tmp_path):
    truth = tmp_path / "truth.csv"
    labels = pd.read_parquet(run / "labels.parquet")
    labels[["sample_id", "clean_label"]].to_csv(truth, index=False)
    options = AnalysisOptions(truth=truth)
    report = write_report(run, options=options, out_dir=tmp_path / "out")
    assert AnalysisOptions.from_report(report) == options


def test_from_report_refuses_what_is_not_a_report():
    with pytest.raises(InputError) as err:
        AnalysisOptions.from_report({"scorer": "aum"})
    assert "report.json" in str(err.value)


# --------------------------------------------------------------------------------------
# options beside an Analysis: refused when they disagree, a default included
# --------------------------------------------------------------------------------------


def test_write_report_refuses_options_that_disagree_with_the_analysis(run, tmp_path):
    out = tmp_path / "out"
    a = analyze(run, scorer="align_mean")
    # The default spelled out is an option asked for: it disagrees with align_mean.
    with pytest.raises(InputError) as err:
        write_report(a, scorer="aum", out_dir=out)
    assert _named(err, "scorer")
    with pytest.raises(InputError) as err:
        write_report(a, options=AnalysisOptions(), out_dir=out)
    assert _named(err, "scorer")
    with pytest.raises(InputError) as err:
        write_report(analyze(run, window="all"), window=DEFAULT_WINDOW, out_dir=out)
    assert _named(err, "window")
    with pytest.raises(InputError) as err:
        write_report(a, truth_file=tmp_path / "t.csv", out_dir=out)
    assert _named(err, "truth")
    with pytest.raises(InputError) as err:
        write_report(run, options=AnalysisOptions(), scorer="aum", out_dir=out)
    assert _named(err, "scorer")
    assert not out.exists()
    # The Analysis's own options agree with it.
    assert write_report(a, options=a.options, out_dir=out)["scorer"] == "align_mean"


def test_label_export_refuses_options_that_disagree_with_the_analysis(run):
    relabel.record_decision(run, 0, "fine")
    a = analyze(run, scorer="align_mean", rule="topk", k=10)
    with pytest.raises(InputError) as err:
        corrected_labels(a, scorer="aum")  # the default, spelled out
    assert _named(err, "scorer")
    with pytest.raises(InputError) as err:
        corrected_labels(a, k=11)
    assert _named(err, "k")
    with pytest.raises(InputError) as err:
        corrected_labels(a, options=AnalysisOptions(rule="topk", k=10))
    assert _named(err, "scorer")
    with pytest.raises(InputError) as err:
        corrected_labels(run, options=a.options, rule="topk")
    assert _named(err, "rule")
    # Agreeing options, or none, take the Analysis's flagged set as it is.
    from_analysis = corrected_labels(a, auto="drop", scorer="align_mean", k=10)
    from_options = corrected_labels(run, auto="drop", options=a.options)
    assert from_analysis.excluded["sample_id"].tolist() == from_options.excluded["sample_id"].tolist()
    assert sorted(from_options.excluded["sample_id"]) == sorted(set(a.flagged.index) - {0})
    assert from_analysis.provenance["analysis"]["scorer"] == "align_mean"
    assert from_analysis.provenance["analysis"]["k"] == 10


def test_analyze_takes_options_or_keywords_not_both(run):
    options = AnalysisOptions(scorer="align_mean", rule="topk", k=3)
    assert analyze(run, options=options).flagged.index.tolist() == \
        analyze(run, scorer="align_mean", rule="topk", k=3).flagged.index.tolist()
    with pytest.raises(InputError) as err:
        analyze(run, options=options, k=3)
    assert _named(err, "k")
    with pytest.raises(InputError) as err:
        analyze(Path("/nonexistent/run"), scorer="nope")  # options are checked before the run is read
    assert _named(err, "scorer")


def test_the_options_type_is_exported_at_the_package_top():
    import gwa_diag

    assert gwa_diag.AnalysisOptions is AnalysisOptions and "AnalysisOptions" in gwa_diag.__all__
    assert gwa_diag.analyze is analyze
