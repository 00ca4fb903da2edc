"""The command line end to end: train with injected noise, rank/score/report, the demo."""

import json

import numpy as np
import pandas as pd

from analysis_fixtures import colour_images_npz
from gwa_diag.cli import main


def _npz(path, n=400):
    return colour_images_npz(path, n=n, size=16)


def test_train_then_rank_score_report_finds_injected_noise(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz")
    run = tmp_path / "run"
    rc = main(["train", "--data", "npz", "--data-path", str(data), "--noise-rate", "0.2", "--epochs", "4",
               "--batch-size", "50", "--lr", "0.05", "--warmup-epochs", "0.5", "--no-augment", "--quiet",
               "--out", str(run)])
    assert rc == 0
    printed = capsys.readouterr().out
    # The first screen (counts, top suspects, the app command) comes first, the details after it.
    first, details = printed.split("--- details ---\n", 1)
    assert "labels look wrong" in first and "truly wrong: 80 of 400" in first
    assert f"browse them: gwa-diag app {run}" in first
    assert "GWA-selected epoch" in details
    # How far to trust the choice and LabelWave's choice, as the report states them.
    from gwa_diag.analysis.stopping import stopping

    lines = stopping(run).lines()
    assert lines[0].startswith("trust in the GWA choice: ") and all(line in printed for line in lines)
    # And whether the model memorised its labels (four epochs: too few to read it).
    from gwa_diag.analysis.phase import training_phase

    assert f"training phase: {training_phase(run).reason}" in printed.splitlines()
    labels = pd.read_parquet(run / "labels.parquet")
    assert (labels["label"] != labels["clean_label"]).sum() == 80
    assert main(["report", str(run)]) == 0
    report = json.loads((run / "analysis" / "report.json").read_text())
    assert (run / "analysis" / "report.md").exists() and (run / "analysis" / "suspects.csv").exists()
    text = json.dumps(report)
    assert "align_mean" in text
    assert main(["score", str(run)]) == 0
    out = capsys.readouterr().out
    assert "align_mean" in out
    # The injected noisy samples are found: mean-alignment AUROC clearly above chance.
    from gwa_diag.analysis.metrics import auroc
    from gwa_diag.analysis.truth import ground_truth
    from gwa_diag.analysis.summaries import summarize

    summary = summarize(run)
    truth = ground_truth(run)
    assert auroc(summary.loc[truth.index, "align_mean"], truth) > 0.8


def test_train_refuses_existing_run_without_touching_it(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", n=100)
    args = ["train", "--data", "npz", "--data-path", str(data), "--epochs", "1", "--batch-size", "50",
            "--quiet", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    before = (tmp_path / "run" / "run.json").read_bytes()
    assert main(args) == 2
    assert "already holds run" in capsys.readouterr().err
    assert (tmp_path / "run" / "run.json").read_bytes() == before


def test_seed_makes_train_reproducible(tmp_path):
    """--seed fixes the model's initial weights too: two runs record identical rows, and a
    run with another seed (the control) records other ones."""
    data = _npz(tmp_path / "d.npz", n=100)
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert main(["train", "--data", "npz", "--data-path", str(data), "--epochs", "1", "--batch-size", "50",
                     "--seed", seed, "--quiet", "--out", str(tmp_path / name)]) == 0
    a, b, c = (pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / name / "samples").rglob("*.parquet"))])
               .sort_values("sample_id", kind="stable").reset_index(drop=True) for name in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["alignment"].to_numpy(), c["alignment"].to_numpy())


def test_demo_runs_offline_and_prints_the_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    # The first screen comes first; the detection table and the rest follow under the heading.
    first, details = out.split("--- details ---\n", 1)
    assert "labels look wrong" in first and "most suspicious" in first
    assert f"browse them: gwa-diag app {tmp_path / 'demo'}" in first and "suspects.csv" in first
    assert "align_mean" in details and "aum" in details and "run directory" in details
    assert "trust in the GWA choice: " in out and "LabelWave" in out
    assert "training phase: " in out and "scores are read from" in out
    assert (tmp_path / "demo" / "analysis" / "report.md").exists()


def _one_line_error(capsys, command):
    err = capsys.readouterr().err
    assert err.startswith(f"gwa-diag {command}: error:") and "Traceback" not in err, err
    return err


def test_train_options_and_paths_that_cannot_work_are_one_line_errors(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", n=60)
    (tmp_path / "folder" / "a").mkdir(parents=True)
    (tmp_path / "a_file").write_text("not a folder")
    base = ["train", "--epochs", "1", "--batch-size", "20", "--quiet"]
    cases = [
        (["--data", "folder", "--data-path", str(tmp_path / "folder"), "--label-set", "worst",
          "--cifar10n", str(tmp_path / "h.pt"), "--out", str(tmp_path / "r1")], "needs the CIFAR-10 images"),
        (["--data", "npz", "--data-path", str(data), "--image-size", "8", "--out", str(tmp_path / "r2")], "--image-size"),
        (["--data", "npz", "--data-path", str(data), "--device", "tpu", "--out", str(tmp_path / "r3")], "unknown device 'tpu'"),
        (["--data", "npz", "--data-path", str(data), "--out", str(tmp_path / "a_file" / "run")], "check the paths"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        assert message in _one_line_error(capsys, "train"), extra
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_interrupted_train_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import gwa_diag.training.engine as engine

    data = _npz(tmp_path / "my data.npz", n=60)
    run = tmp_path / "my run"

    def interrupted(model, train_set, out, **kwargs):
        out.mkdir(parents=True)  # the run exists, so --resume can continue it
        (out / "run.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train", interrupted)
    argv = ["train", "--data", "npz", "--data-path", str(data), "--epochs", "1", "--quiet", "--out", str(run)]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "epochs recorded so far are kept" in err
    # The command to continue, quoted for a shell, with --resume added.
    assert f"--out '{run}' --resume" in err


def test_default_run_names_do_not_collide_and_next_steps_are_quoted(tmp_path, capsys, monkeypatch):
    data = _npz(tmp_path / "d.npz", n=60)
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--data", "npz", "--data-path", str(data), "--epochs", "1", "--batch-size", "30", "--quiet"]
    assert main(argv) == 0 and main(argv) == 0  # same second: still two runs
    assert len(list((tmp_path / "runs").iterdir())) == 2
    out = capsys.readouterr().out
    # The weights file named is one that exists.
    named = [line.rsplit("weights in ", 1)[1].split(" ")[0] for line in out.splitlines() if "weights" in line]
    assert len(named) == 2 and all((tmp_path / path).exists() for path in named), out
    assert main(argv + ["--out", str(tmp_path / "with space")]) == 0
    assert f"gwa-diag app '{tmp_path / 'with space'}'" in capsys.readouterr().out
