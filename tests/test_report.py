"""End to end: a synthetic run with injected label noise through the analysis CLI
(rank, score, report), the report files, and clear errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import MEMORISING_EPOCHS, noisy_rows, write_run
from gwa_diag.cli.analysis import register
from gwa_diag.analysis.rank import read_suspects
from gwa_diag.analysis.report import markdown_table, write_report
from gwa_diag.checks import InputError
from gwa_diag.store import RunWriter

PNG = b"\x89PNG\r\n\x1a\n"


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gwa-diag")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def noisy_run(tmp_path):
    rows, given, clean = noisy_rows(n=400, epochs=10, num_classes=4, noise=0.2, seed=11)
    # eval accuracy on a second axis, and one epoch whose GWA is undefined (a gap in the curve)
    extra = {e: {"eval_acc": 0.5 + 0.03 * e} for e in range(10)}
    path = write_run(
        tmp_path / "run", rows, num_classes=4, clean_labels=clean, gwa={3: None}, extra_epoch=extra,
        meta={"class_names": ["cat", "dog", "car", "ship"], "config": {"epochs": 10, "mode": "scratch"}},
    )
    return path, given, clean


def test_cli_report_rank_and_score_on_a_noisy_run(noisy_run, capsys):
    path, given, clean = noisy_run
    assert _cli(["report", str(path), "--flag", "negative"]) == 0
    out = capsys.readouterr().out
    assert "report written to" in out and "report.md" in out
    analysis = path / "analysis"
    report = json.loads((analysis / "report.json").read_text())
    auroc = {row["method"]: row["auroc"] for row in report["detection"]}
    assert auroc["align_mean"] > 0.9  # the injected noise has clearly lower alignment
    assert report["ground_truth"]["n_noisy"] == sum(given[i] != clean[i] for i in given)
    assert report["early_stopping"]["used_epoch"] == report["early_stopping"]["gwa_epoch"] != 3
    md = (analysis / "report.md").read_text()
    assert "| align_mean |" in md and "Early stopping" in md and "![ROC curves](roc.png)" in md
    for name in ("gwa_curve.png", "alignment_hist.png", "roc.png", "pr.png"):
        assert (analysis / name).read_bytes()[:8] == PNG, name
    ranking = pd.read_parquet(analysis / "ranking.parquet")
    assert len(ranking) == 400 and ranking["rank"].tolist() == list(range(1, 401))
    suspects = read_suspects(analysis / "suspects.csv")
    assert len(suspects) == report["n_flagged"] > 0
    flagged_noisy = np.mean([given[i] != clean[i] for i in suspects["sample_id"]])
    assert flagged_noisy > 0.5  # negative alignment mostly marks the injected noise

    assert _cli(["rank", str(path), "--k", "25", "--scorer", "aum", "--out", str(path / "top.csv")]) == 0
    out = capsys.readouterr().out
    assert "25 of 400 samples flagged (rule topk, ranked by aum" in out
    top = read_suspects(path / "top.csv")
    assert len(top) == 25 and set(top["scorer"]) == {"aum"}
    assert set(top["given_name"]) <= {"cat", "dog", "car", "ship"}

    assert _cli(["score", str(path), "--window", "all"]) == 0
    out = capsys.readouterr().out
    assert "align_mean" in out and "per given label" in out
    scores = json.loads((analysis / "scores.json").read_text())
    assert scores["window"]["name"] == "all"
    assert {row["method"] for row in scores["detection"]} >= {"align_mean", "forgetting", "el2n"}


def test_report_without_ground_truth_says_so(tmp_path):
    rows, given, _ = noisy_rows(n=60, epochs=4, seed=12)
    path = write_run(tmp_path / "run", rows, num_classes=4, labels=given)
    report = write_report(path, rule="noise_rate", noise_rate=0.1)
    assert report["ground_truth"]["available"] is False
    assert report["detection"] is None and report["n_flagged"] == 6
    assert "roc" not in report["files"] and not (path / "analysis" / "roc.png").exists()
    assert "No ground truth" in (path / "analysis" / "report.md").read_text()
    # a truth file that is asked for but broken is an error, not a silent skip
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,2\n")
    with pytest.raises(ValueError, match="sample_id and clean_label"):
        write_report(path, truth_file=bad)


def test_report_when_the_rule_flags_nothing(tmp_path):
    """A well-fit run where no sample has negative alignment: the rule's precision is
    undefined, and the report says so instead of failing."""
    rows, given, clean = noisy_rows(n=200, epochs=4, num_classes=3, noise=0.2, seed=5)
    rows["alignment"] = rows["alignment"].abs() + 0.01
    rows["pred"] = rows["label"]  # every label fitted: the estimate counts none either
    path = write_run(tmp_path / "run", rows, num_classes=3, clean_labels=clean)
    result = write_report(path)
    assert result["n_flagged"] == 0 and result["n_alignment_negative"] == 0
    report = json.loads((path / "analysis" / "report.json").read_text())
    rule = next(r for r in report["detection"] if r["method"].startswith("rule"))
    assert rule["precision"] is None and rule["recall"] == 0
    assert (path / "analysis" / "pr.png").read_bytes().startswith(PNG)


def test_empty_run_is_a_clear_cli_error(tmp_path, capsys):
    RunWriter(tmp_path / "empty", meta={"num_classes": 3})
    for command in ("rank", "score", "report"):
        assert _cli([command, str(tmp_path / "empty")]) == 2
        err = capsys.readouterr().err
        assert f"gwa-diag {command}: error:" in err and "no complete epoch" in err
    assert _cli(["rank", str(tmp_path / "nowhere")]) == 2
    assert "not a gwa-diag run directory" in capsys.readouterr().err


def test_cli_rejects_unknown_scorer(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _cli(["rank", str(tmp_path), "--scorer", "nope"])
    assert "invalid choice" in capsys.readouterr().err


def test_write_report_validates_names(noisy_run):
    path, _, _ = noisy_run
    with pytest.raises(InputError, match="scorer 'nope'"):
        write_report(path, scorer="nope")
    with pytest.raises(InputError, match="rule 'nope'"):
        write_report(path, rule="nope")
    with pytest.raises(InputError, match="window 'nope'"):
        write_report(path, window="nope")
    assert not (path / "analysis").exists()


def test_markdown_table():
    frame = pd.DataFrame({"a": [0.12345, np.nan], "b": ["x|y", "z"]}, index=pd.Index(["r1", "r2"], name="m"))
    assert markdown_table(frame).splitlines() == [
        "| m | a | b |", "|---|---|---|", "| r1 | 0.123 | x\\|y |", "| r2 | - | z |",
    ]


def test_refused_report_leaves_the_previous_files_together(noisy_run, tmp_path, capsys):
    path, _, _ = noisy_run
    assert _cli(["report", str(path)]) == 0
    analysis = path / "analysis"
    before = {p.name: p.read_bytes() for p in analysis.iterdir()}
    assert _cli(["report", str(path), "--scorer", "aum", "--flag", "topk", "--k", "5",
                 "--truth", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in analysis.iterdir()} == before


def test_partial_truth_is_reported_and_bad_paths_are_one_line_errors(noisy_run, tmp_path, capsys):
    path, given, clean = noisy_run
    ids = sorted(given)[:100]
    part = tmp_path / "part.csv"
    pd.DataFrame({"sample_id": ids, "clean_label": [clean[i] for i in ids]}).to_csv(part, index=False)
    assert _cli(["score", str(path), "--truth", str(part)]) == 0
    out, err = capsys.readouterr()
    assert "the truth covers 100 of 400 samples" in out and "warning: the ground truth covers 100" in err
    assert json.loads((path / "analysis" / "scores.json").read_text())["ground_truth"]["coverage"]["matched"] == 100
    assert _cli(["report", str(path), "--truth", str(part)]) == 0
    assert "covers 100 of the run's 400 samples" in (path / "analysis" / "report.md").read_text()
    capsys.readouterr()
    for argv in (["score", str(path), "--out", str(tmp_path)], ["rank", str(path), "--out", str(tmp_path)],
                 ["report", str(path), "--out-dir", str(part)]):
        assert _cli(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"gwa-diag {argv[0]}: error:") and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_alignment_histograms_span_the_data_not_a_fixed_axis():
    from gwa_diag.analysis.plots import hist_bins as _hist_bins

    rng = np.random.default_rng(0)
    narrow = _hist_bins(rng.uniform(-0.15, 0.2, 5000))
    # alignments within +-0.2 fill the axis instead of a few bars of [-1, 1]
    assert -0.2 < narrow[0] < -0.14 and 0.19 < narrow[-1] < 0.22 and len(narrow) == 51
    positive = _hist_bins(rng.uniform(0.3, 0.6, 5000))
    assert positive[0] == pytest.approx(0.0, abs=0.02) and positive[-1] < 0.65  # 0 stays in view
    assert _hist_bins(np.array([np.nan]))[[0, -1]].tolist() == [-1.0, 1.0]
    assert _hist_bins(np.array([-1.0, 1.0]))[[0, -1]].tolist() == [-1.0, 1.0]  # never beyond [-1, 1]




def test_report_states_the_training_phase_and_plots_it(tmp_path, capsys):
    from gwa_diag.analysis.pipeline import analyze
    from gwa_diag.store import file_sha256

    rows, _, clean = noisy_rows(n=200, epochs=10, num_classes=4, noise=0.2, seed=3)
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, extra_epoch=MEMORISING_EPOCHS)
    a = analyze(path)
    assert a.epoch_choices.phase.onset == 6 and a.epoch_choices.window == (1, 2, 3, 4, 5)
    assert _cli(["report", str(path)]) == 0
    printed = capsys.readouterr().out
    assert a.epoch_choices.note in printed and "epoch 6" in a.epoch_choices.note
    out = path / "analysis"
    report = json.loads((out / "report.json").read_text())
    phase = report["training_phase"]
    assert phase["memorised"] is True and phase["onset"] == 6 and phase["plateau"] == 4
    assert phase["noise"] == pytest.approx(0.22) and phase["note"] == a.epoch_choices.note
    assert phase["window_epochs"] == list(a.epoch_choices.window)
    assert report["window"] == {"name": "phase", "epochs": [1, 5], "description": report["window"]["description"]}
    curve = phase["curve"]
    assert curve["epoch"] == list(range(10)) and curve["fit"][6] == pytest.approx(0.84)
    assert curve["contradicted"][4] == pytest.approx(0.22)
    assert curve["onset_fit"] == pytest.approx([0.78] * 10) and curve["memorised_fit"] == pytest.approx([0.89] * 10)
    assert (out / "phase.png").read_bytes()[:8] == PNG
    assert report["files"]["phase"] == str(out / "phase.png")
    assert report["sha256"]["phase"] == file_sha256(out / "phase.png")
    md = (out / "report.md").read_text()
    # First among the findings, before early stopping.
    assert md.index("## Training phase") < md.index("## Early stopping") < md.index("## Flagged samples")
    section = md[md.index("## Training phase"):md.index("## Early stopping")]
    assert "epoch 6" in section and "epochs 1-5" in section and "![training phase](phase.png)" in section
    assert "78.0%" in section and "89.0%" in section  # the thresholds


def test_report_without_a_plateau_still_reports_the_phase(tmp_path):
    # Four epochs: too few to read the phase, so no plateau and no thresholds.
    rows, given, _ = noisy_rows(n=60, epochs=4, seed=12)
    path = write_run(tmp_path / "run", rows, num_classes=4, labels=given)
    report = write_report(path)
    phase = report["training_phase"]
    assert phase["memorised"] is False and phase["plateau"] is None and phase["noise"] is None
    assert "onset_fit" not in phase["curve"] and phase["curve"]["epoch"] == [0, 1, 2, 3]
    assert phase["window_epochs"] == [2, 3] and report["window"]["epochs"] == [2, 3]
    out = path / "analysis"
    assert (out / "phase.png").read_bytes()[:8] == PNG and "phase" in report["sha256"]
    section = (out / "report.md").read_text().split("## Early stopping")[0]
    assert "too few epochs" in section.lower() and "No fit thresholds" in section


def test_the_app_shows_the_reports_own_figures(tmp_path):
    # One drawing for both: the Overview's PNGs are the report's files, byte for byte.
    pytest.importorskip("streamlit")
    from gwa_diag.app.views.charts import gwa_curve_png, phase_png
    from gwa_diag.analysis.pipeline import analyze

    rows, _, clean = noisy_rows(n=150, epochs=8, seed=3)
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean)
    a = analyze(path)
    report = write_report(a)
    phase = a.epoch_choices.phase
    drawn = phase_png(a.epoch_choices.phase.curve, window=list(a.epoch_choices.window), plateau=phase.plateau,
                      onset=phase.onset if phase.memorising else None, memorised=phase.memorised, weight=phase.weight)
    assert drawn == Path(report["files"]["phase"]).read_bytes()
    curve = gwa_curve_png(a.run.epochs(), a.selection.used_epoch, fallback=a.selection.fallback,
                          labelwave=a.stopping.labelwave.epoch)
    assert curve == Path(report["files"]["gwa_curve"]).read_bytes()
