"""The first screen (gwa_diag.cli.summary): counts, the top five suspects, the app command;
and `gwa-diag report` prints it before its full output."""

import argparse
import shlex

import pandas as pd

from analysis_fixtures import noisy_rows, run_with_truth, write_run
from gwa_diag.analysis.pipeline import analyze
from gwa_diag.cli.analysis import register
from gwa_diag.cli.summary import DETAILS_HEADING, TOP, first_screen

NAMES = ["cat", "dog", "car", "ship"]


def _cli(argv):
    parser = argparse.ArgumentParser(prog="gwa-diag")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _rows(text):
    """The suspect rows of the block: (rank, sample_id, given, suggested, p[, path])."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "sample_id"]) + 1
    return [line.split() for line in lines[start:start + TOP]]


def test_first_screen_counts_top_five_class_names_and_app_command(tmp_path):
    path, given, clean = run_with_truth(tmp_path / "with space", meta={"class_names": NAMES})
    a = analyze(path)
    suspects = path / "analysis" / "suspects.csv"
    text = first_screen(a, path, suspects=suspects)
    lines = text.splitlines()
    assert len(lines) <= 15
    n_true = sum(given[i] != clean[i] for i in given)
    assert lines[0] == (f"{a.estimate.total} of 200 labels look wrong ({a.estimate.total / 200:.1%}); "
                        f"truly wrong: {n_true} of 200 ({n_true / 200:.1%})")
    # Which way the count can be off, then which epochs the scores read.
    assert lines[1].strip() == f"an estimate: {a.estimate.caveat}" and "too high" in lines[1]
    # How to get a count with an interval instead (the path quoted for the shell).
    assert lines[2].strip() == f"for a count with a 95% interval, verify 200 labels: gwa-diag audit {shlex.quote(str(path))} --n 200"
    assert lines[3].strip() == a.epoch_choices.note
    rows = _rows(text)
    top = a.ranking.head(TOP)
    assert len(a.flagged) >= TOP and [int(r[1]) for r in rows] == top.index.tolist()
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    assert [r[2] for r in rows] == [NAMES[v] for v in top["label"]]
    assert [r[3] for r in rows] == [NAMES[int(v)] for v in top["suggested_label"]]
    assert [float(r[4]) for r in rows] == [round(float(v), 2) for v in top["suggested_prob"]]
    assert f"browse them: gwa-diag app {shlex.quote(str(path))}" in lines
    assert "'" in shlex.quote(str(path))  # the space is quoted for the shell
    assert lines[-1].endswith(str(suspects))


def test_first_screen_without_truth_or_names_shows_indices_paths_and_the_ranking(tmp_path):
    rows, given, _ = noisy_rows(n=60, epochs=6, seed=3)
    path = write_run(tmp_path / "run", rows, num_classes=4, labels=given)
    a = analyze(path)
    assert a.truth is None and a.class_names is None
    text = first_screen(a, "run")
    assert "truly wrong" not in text and "suspects" not in text.splitlines()[-1]
    assert text.splitlines()[-1] == "browse them: gwa-diag app run"
    got = _rows(text)
    top = (a.flagged if len(a.flagged) else a.ranking).head(TOP)
    assert [int(r[1]) for r in got] == top.index.tolist()
    assert [int(r[2]) for r in got] == top["label"].tolist()


def test_first_screen_shows_file_paths_when_the_run_has_them(tmp_path):
    path, _, _ = run_with_truth(tmp_path)
    labels = pd.read_parquet(path / "labels.parquet")
    labels["path"] = [f"img/{i}.png" for i in labels["sample_id"]]
    labels.to_parquet(path / "labels.parquet", index=False)
    a = analyze(path)
    got = _rows(first_screen(a, path))
    assert [r[-1] for r in got] == [f"img/{i}.png" for i in a.ranking.head(TOP).index]


def test_report_prints_the_first_screen_first(tmp_path, capsys):
    path, _, _ = run_with_truth(tmp_path, meta={"class_names": NAMES})
    assert _cli(["report", str(path)]) == 0
    out = capsys.readouterr().out
    block = first_screen(analyze(path), path, suspects=path / "analysis" / "suspects.csv")
    assert out.startswith(block + "\n\n" + DETAILS_HEADING + "\n")
    assert "report written to" in out.split(DETAILS_HEADING, 1)[1]
