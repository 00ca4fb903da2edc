"""The command line end to end: train with injected noise, rank/score/report, the demo."""

import json

import numpy as np
import pandas as pd
import pytest

from gwa_diag.cli import main


def _npz(path, n=400, c=4, seed=0):
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(c, 1, 1, 3))
    labels = rng.integers(0, c, size=n)
    imgs = np.clip(templates[labels] + rng.normal(0, 40, size=(n, 16, 16, 3)), 0, 255).astype(np.uint8)
    np.savez(path, images=imgs, labels=labels)
    return path


def test_train_then_rank_score_report_finds_injected_noise(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz")
    run = tmp_path / "run"
    rc = main(["train", "--data", "npz", "--data-path", str(data), "--noise-rate", "0.2", "--epochs", "4",
               "--batch-size", "50", "--lr", "0.05", "--warmup-epochs", "0.5", "--no-augment", "--quiet",
               "--out", str(run)])
    assert rc == 0
    assert "GWA-selected epoch" in capsys.readouterr().out
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
    from gwa_diag.metrics import auroc, ground_truth
    from gwa_diag.summaries import summarize

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
    """--seed fixes the model's initial weights too: two runs record identical rows."""
    data = _npz(tmp_path / "d.npz", n=100)
    for name in ("a", "b"):
        assert main(["train", "--data", "npz", "--data-path", str(data), "--epochs", "1", "--batch-size", "50",
                     "--seed", "7", "--quiet", "--out", str(tmp_path / name)]) == 0
    a = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "a" / "samples").rglob("*.parquet"))])
    b = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "b" / "samples").rglob("*.parquet"))])
    pd.testing.assert_frame_equal(a, b)


def test_demo_runs_offline_and_prints_the_table(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "align_mean" in out and "aum" in out and "run directory" in out
    assert (tmp_path / "demo" / "analysis" / "report.md").exists()
