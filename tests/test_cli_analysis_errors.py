"""The analysis subcommands (rank, score, report) through the real CLI entry point: bad
paths, options and truth files give one line ``gwa-diag <cmd>: error: <what> (<path>);
<fix>`` and exit status 2 (never a traceback), a refused command writes nothing, a report
states how much of the run its ground truth covers, and two reports never mix files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis_fixtures import noisy_rows, write_run
from gwa_diag.cli import main


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, dict[int, int], dict[int, int]]:
    rows, given, clean = noisy_rows(n=120, epochs=4, num_classes=4, noise=0.25, seed=3)
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean,
                     meta={"class_names": ["cat", "dog", "car", "ship"]})
    return path, given, clean


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.exists() else {}


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    out, err = capsys.readouterr()
    assert out == "", f"printed before failing: {out!r}"
    assert err.startswith(f"gwa-diag {command}: error: "), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_bad_paths_are_one_line_errors_naming_the_path(run, tmp_path, capsys):
    path, _, _ = run
    folder = tmp_path / "a folder"
    folder.mkdir()
    afile = tmp_path / "afile.txt"
    afile.write_text("precious\n")
    cases = [
        (["rank", str(path), "--out", str(folder)], folder),
        (["score", str(path), "--out", str(folder)], folder),
        (["rank", str(path), "--out", str(afile / "s.csv")], afile / "s.csv"),
        (["score", str(path), "--out", str(afile / "s.json")], afile / "s.json"),
        (["score", str(path), "--truth", str(folder)], folder),
        (["report", str(path), "--truth", str(folder)], folder),
        (["report", str(path), "--out-dir", str(afile)], afile),
        (["report", str(path), "--out-dir", str(afile / "sub")], afile / "sub"),
    ]
    for argv, named in cases:
        assert main(argv) == 2, argv
        err = _one_line_error(capsys, argv[0])
        # The user's own path, in parentheses, then what to do; never an internal temp name.
        assert f"({named}); " in err and ".tmp" not in err, err
    assert list(folder.iterdir()) == [] and afile.read_text() == "precious\n"
    assert not (path / "analysis").exists()


@pytest.mark.parametrize(
    ("command", "options", "flags"),
    [
        ("rank", ["--k", "-1"], ["--k"]),
        ("rank", ["--flag", "topk"], ["--flag topk", "--k"]),
        ("report", ["--flag", "negative", "--k", "3"], ["--k", "--flag topk"]),
        ("report", ["--noise-rate", "1.5"], ["--noise-rate", "1.5"]),
        ("rank", ["--flag", "noise-rate"], ["--flag noise-rate", "--noise-rate"]),
        ("report", ["--flag", "topk", "--k", "3", "--noise-rate", "0.1"], ["--noise-rate", "--flag noise-rate"]),
    ],
)
def test_option_errors_name_the_cli_flags(run, capsys, command, options, flags):
    path, _, _ = run
    assert main([command, str(path), *options]) == 2
    err = _one_line_error(capsys, command)
    for flag in flags:
        assert flag in err, err
    # Python argument and rule names (k=, noise_rate, rule 'topk') mean nothing to a CLI user.
    assert "noise_rate" not in err and "rule '" not in err, err
    assert not (path / "analysis").exists()


def test_a_refused_report_writes_nothing(run, tmp_path, capsys):
    path, given, clean = run
    assert main(["report", str(path)]) == 0
    capsys.readouterr()
    analysis = path / "analysis"
    before = _snapshot(analysis)
    ids = sorted(given)
    wide = tmp_path / "wide.csv"
    pd.DataFrame({"sample_id": ids, "clean_label": [7] + [clean[i] for i in ids[1:]]}).to_csv(wide, index=False)
    elsewhere = tmp_path / "elsewhere.csv"
    pd.DataFrame({"sample_id": [10_000 + i for i in ids], "clean_label": [clean[i] for i in ids]}).to_csv(elsewhere, index=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    refused = {
        "clean_label 7": ["--truth", str(wide)],
        "shares no sample_id": ["--truth", str(elsewhere)],
        f"({empty})": ["--truth", str(empty)],
        "--k": ["--scorer", "aum", "--k", "-2"],
    }
    for message, options in refused.items():
        assert main(["report", str(path), *options]) == 2, options
        assert message in _one_line_error(capsys, "report")
        assert _snapshot(analysis) == before, options


def test_report_states_how_much_of_the_run_the_truth_covers(run, tmp_path, capsys):
    path, given, clean = run
    ids = sorted(given)
    part = tmp_path / "part.csv"
    # 30 of the run's samples and 5 ids the run does not have
    pd.DataFrame({"sample_id": ids[:30] + [5_000 + i for i in range(5)],
                  "clean_label": [clean[i] for i in ids[:30]] + [0] * 5}).to_csv(part, index=False)
    assert main(["report", str(path), "--truth", str(part)]) == 0
    out, err = capsys.readouterr()
    assert "the truth covers 30 of 120 samples" in out, out
    assert err.startswith("warning: the ground truth covers 30 of the run's 120 samples") and "5 truth rows" in err, err
    report = json.loads((path / "analysis" / "report.json").read_text())
    assert report["ground_truth"]["coverage"] == {"matched": 30, "samples": 120, "truth_rows": 35}
    assert report["ground_truth"]["n"] == 30
    assert report["ground_truth"]["n_noisy"] == sum(given[i] != clean[i] for i in ids[:30])

    assert main(["report", str(path)]) == 0  # labels.parquet covers every sample: no warning, no note
    out, err = capsys.readouterr()
    assert "covers" not in out and err == ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_report_files_carry_one_id_and_record_the_options(run, capsys):
    path, _, _ = run
    analysis = path / "analysis"
    assert main(["report", str(path), "--scorer", "aum", "--k", "7"]) == 0
    report = json.loads((analysis / "report.json").read_text())
    rid = report["report_id"]
    assert len(rid) == 32 and report["scorer"] == "aum" and report["rule"]["k"] == 7 and report["n_flagged"] == 7
    assert pq.read_schema(analysis / "ranking.parquet").metadata[b"gwa_diag.report_id"].decode() == rid
    md = (analysis / "report.md").read_text()
    assert rid in md and "k = 7" in md and "`aum`" in md
    for key, name in (("suspects", "suspects.csv"), ("ranking", "ranking.parquet"), ("gwa_curve", "gwa_curve.png")):
        assert report["sha256"][key] == _sha256(analysis / name), key
    first_suspects = _sha256(analysis / "suspects.csv")

    assert main(["report", str(path), "--scorer", "loss_mean", "--k", "11"]) == 0
    again = json.loads((analysis / "report.json").read_text())
    assert again["report_id"] != rid and again["rule"]["k"] == 11
    # A reader can tell which report suspects.csv came from: the checksum moved with it.
    assert again["sha256"]["suspects"] == _sha256(analysis / "suspects.csv") != first_suspects
    assert len(pd.read_csv(analysis / "suspects.csv")) == 11


_HOLD_LOCK = """
import fcntl, sys, time
fh = open(sys.argv[1], "a")
fcntl.flock(fh, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_a_report_while_another_runs_is_refused_and_a_killed_one_does_not_block(run, capsys):
    path, _, _ = run
    assert main(["report", str(path)]) == 0
    capsys.readouterr()
    analysis = path / "analysis"
    before = _snapshot(analysis)
    # Another process holds the report lock (as a running `gwa-diag report` does) ...
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(analysis / ".report.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert main(["report", str(path), "--scorer", "aum", "--k", "5"]) == 2
        err = _one_line_error(capsys, "report")
        assert "another `gwa-diag report` is writing" in err and str(analysis) in err, err
        assert _snapshot(analysis) == before
    finally:
        # ... and is killed: the OS drops its lock, so the lock file left behind blocks nothing.
        holder.kill()
        holder.wait()
    assert (analysis / ".report.lock").exists()
    assert main(["report", str(path), "--scorer", "aum", "--k", "5"]) == 0
    assert json.loads((analysis / "report.json").read_text())["n_flagged"] == 5


# --------------------------------------------------------------------------------------
# the analysis options: built once from the flags, passed on as one object
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    (["rank", "R"], {}),
    (["rank", "R", "--scorer", "align_mean", "--window", "all", "--k", "5"],
     {"scorer": "align_mean", "window": "all", "rule": "topk", "k": 5}),
    (["report", "R", "--flag", "noise-rate", "--noise-rate", "0.2", "--truth", "t.csv"],
     {"rule": "noise_rate", "noise_rate": 0.2, "truth": Path("t.csv")}),
    (["score", "R", "--scorer", "el2n", "--window", "second_half", "--truth", "t.csv"],
     {"scorer": "el2n", "window": "second_half", "truth": Path("t.csv")}),
    (["labels", "R", "--out", "x.csv", "--flag", "negative", "--scorer", "loss_mean"],
     {"rule": "negative", "scorer": "loss_mean"}),
])
def test_the_cli_builds_the_analysis_options_from_its_flags(argv, expected):
    from gwa_diag.analysis.options import AnalysisOptions
    from gwa_diag.cli import build_parser
    from gwa_diag.cli.common import analysis_options

    assert analysis_options(build_parser().parse_args(argv)) == AnalysisOptions(**expected)


def test_each_command_passes_one_options_object_on(run, tmp_path, monkeypatch, capsys):
    import gwa_diag.cli.analysis as cli_analysis
    import gwa_diag.cli.labels as cli_labels
    from gwa_diag.analysis.options import AnalysisOptions

    path, _, _ = run
    seen: list[dict] = []

    def spy(real):
        def call(*args, **kwargs):
            seen.append(kwargs)
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(cli_analysis, "analyze", spy(cli_analysis.analyze))
    monkeypatch.setattr(cli_labels, "corrected_labels", spy(cli_labels.corrected_labels))
    flags = ["--scorer", "align_mean", "--window", "all", "--k", "7"]
    expected = AnalysisOptions(scorer="align_mean", window="all", rule="topk", k=7)
    assert main(["rank", str(path), *flags, "--out", str(tmp_path / "s.csv")]) == 0
    assert main(["report", str(path), *flags, "--out-dir", str(tmp_path / "report")]) == 0
    assert main(["labels", str(path), *flags, "--out", str(tmp_path / "fixed.csv"), "--auto", "drop"]) == 0
    assert main(["score", str(path), "--scorer", "align_mean", "--window", "all", "--out", str(tmp_path / "s.json")]) == 0
    # No loose option travels beside the object; the label export's own policy does.
    assert seen == [{"options": expected}, {"options": expected},
                    {"auto": "drop", "min_prob": None, "options": expected},
                    {"options": AnalysisOptions(scorer="align_mean", window="all")}]
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert AnalysisOptions.from_report(saved) == expected
    provenance = json.loads((tmp_path / "fixed.provenance.json").read_text())["analysis"]
    assert {k: provenance[k] for k in ("scorer", "window", "rule", "k", "noise_rate")} == \
        {"scorer": "align_mean", "window": "all", "rule": "topk", "k": 7, "noise_rate": None}
    capsys.readouterr()
