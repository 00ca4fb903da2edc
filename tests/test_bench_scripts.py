"""The benchmark scripts run end to end at toy sizes, write their pages, and leave no
temporary files behind, also when a step fails; they import only from gwa_diag and the
harness; the harness writes pages atomically and the same numbers to the same bytes.

Their timings are not checked here (they are noise on a shared machine); what is checked is
that each script finishes, prints its table, and that background writes it starts succeed
(a failed write surfaces as a non-zero exit once the recorder is closed).
"""
from __future__ import annotations

import ast
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folders that libraries (not the scripts) keep under TMPDIR between runs.
FOREIGN_CACHES = ("torchinductor_",)


def _run_bench(script: str, args: list[str], tmp_path: Path, *, expect_fail: bool | None = False) -> str:
    """Run one script with its page written under ``tmp_path / "pages"`` unless ``args`` says
    where (never into docs/). ``expect_fail``: True, a non-zero exit; None, either, with the
    exit status appended to the output as ``exit N``."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args,
         *([] if "--pages-dir" in args else ["--pages-dir", str(tmp_path / "pages")])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    if expect_fail:
        assert proc.returncode != 0, proc.stdout + proc.stderr
    elif expect_fail is not None:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # Everything a script leaves in TMPDIR counts, whatever its name, except the caches that
    # libraries keep there on purpose (torch's compiled kernels).
    leftovers = sorted(p.name for p in scratch.iterdir() if not p.name.startswith(FOREIGN_CACHES))
    assert leftovers == [], f"{script} left temporary files behind: {leftovers}"
    if expect_fail is None:
        return f"{proc.stdout}{proc.stderr}\nexit {proc.returncode}"
    return proc.stdout + proc.stderr if expect_fail else proc.stdout


def test_recorder_overhead_runs_and_cleans_up(tmp_path: Path) -> None:
    # A toy size measures noise, so either verdict may come out; it must match the exit status.
    out = _run_bench("recorder_overhead.py", ["--repeats", "2", "--steps", "2", "--cpu-batch", "32"], tmp_path,
                     expect_fail=None)
    assert ("* targets met" in out and out.endswith("exit 0")) or \
        ("* target missed: tiny CNN" in out and out.endswith("exit 1")), out[-400:]
    row = next(line for line in out.splitlines() if line.startswith("| tiny CNN"))
    # The flush column counts every row the "on" blocks recorded: 2 repeats x 2 steps x 32 x 2.
    assert row.rstrip().endswith("/ 256 rows |"), row
    page = (tmp_path / "pages" / "recorder_overhead.md").read_text()
    numbers = json.loads((tmp_path / "pages" / "recorder_overhead.json").read_text())
    assert "| tiny CNN, batch 32, fp32 |" in page and "256 rows |" in page
    assert numbers["numbers"]["cases"][0]["flush_rows"] == 256
    assert "- command: `python bench/recorder_overhead.py --repeats 2" in page.split(RUN_INFO)[1]


def test_recorder_scale_runs_and_cleans_up(tmp_path: Path) -> None:
    out = _run_bench("recorder_scale.py", ["--n", "5000", "--batch", "512", "--dim", "16", "--epochs", "2"], tmp_path)
    assert "rows in the last epoch's part: 5,000 (expected 5,000)" in out


def test_train_speed_compares_the_engine_with_its_bare_step(tmp_path: Path) -> None:
    # Random images stand in for a missing data file; the last line relates the two throughputs.
    import re

    out = _run_bench("train_speed.py", ["--data", str(tmp_path / "none.npz"), "--cpu-n", "300", "--cpu-epochs", "2",
                                        "--repeats", "2", "--steps", "1", "--warmup-steps", "1"], tmp_path)
    assert "300 random uint8 images" in out, out
    engine = float(re.search(r"-> ([\d,]+) images/s", out).group(1).replace(",", ""))
    raw = float(re.search(r"recorder off \(median of blocks\): ([\d,]+) images/s", out).group(1).replace(",", ""))
    share = float(re.search(r"engine end to end / raw step: ([\d.]+)", out).group(1))
    assert share == pytest.approx(engine / raw, abs=0.01), out
    assert "recorder on :" not in out  # the recorder's cost is recorder_overhead.py's page, not this one


def test_analysis_scale_runs_and_cleans_up(tmp_path: Path) -> None:
    out = _run_bench("analysis_scale.py", ["--sizes", "toy", "--repeats", "1"], tmp_path)
    row = next(line for line in out.splitlines() if line.startswith("| toy |"))
    assert "| 2,000 x 4 |" in row, row
    assert row in (tmp_path / "pages" / "analysis_scale.md").read_text()


def test_analysis_scale_cleans_up_when_its_child_fails(tmp_path: Path) -> None:
    # The synthetic runs (up to 3 GB at full size) must go even when the measurement crashes.
    out = _run_bench("analysis_scale.py", ["--sizes", "toy", "--_fail-child"], tmp_path, expect_fail=True)
    assert "the measuring child failed" in out and "forced failure" in out, out


def test_app_speed_runs_and_cleans_up(tmp_path: Path) -> None:
    pytest.importorskip("streamlit")
    out = _run_bench("app_speed.py", ["--samples", "300", "--epochs", "3"], tmp_path)
    assert "48 thumbnails" in out and "one trajectory (3 epochs)" in out, out


DATA = ROOT.parent / "shared" / "data"
DETECT_FILES = ("cifar10/train_first20000.npz", "cifar10/test_first1000.npz", "cifar10n/CIFAR-10_human.pt")


def _cifar_data_and_cleanlab() -> object | None:
    """Skip without the shared CIFAR files; the cleanlab module, or None when it is not
    installed (the benchmarks then skip its rows)."""
    if not all((DATA / f).is_file() for f in DETECT_FILES):
        pytest.skip(f"the CIFAR-10 / CIFAR-10-N files are not under {DATA}")
    try:
        import cleanlab
    except ImportError:
        return None
    return cleanlab


def test_detect_cifar10n_runs_with_kfold_and_reuses_it(tmp_path: Path) -> None:
    # The real-data benchmark at toy size: 300 images, 1 epoch, cleanlab's K-fold row with 2 folds;
    # then --reuse analyses again from the cached out-of-fold probabilities, without training.
    cleanlab = _cifar_data_and_cleanlab()
    import numpy as np

    out_dir = tmp_path / "out"
    args = ["--n", "300", "--epochs", "1", "--folds", "2", "--label-sets", "worst", "--out", str(out_dir)]
    out = _run_bench("detect_cifar10n.py", args, tmp_path)
    assert "true count k = " in out and "| worst (" in out, out
    header = next(line for line in out.splitlines() if line.startswith("| method |"))
    assert header.rstrip(" |").split(" | ")[-2:] == ["count", "passes"], header
    numbers = json.loads((tmp_path / "pages" / "detect_cifar10n.json").read_text())["numbers"]
    assert list(numbers["label_sets"]) == ["worst"] and numbers["headline"][0]["result"].startswith("worst (")
    assert header in (tmp_path / "pages" / "detect_cifar10n.md").read_text()
    if cleanlab is None:
        assert "cleanlab is not installed" in out and not (out_dir / "kfold").exists(), out
        return
    kfold_row = next(line for line in out.splitlines() if line.startswith("| cleanlab (K-fold, out-of-sample)"))
    assert kfold_row.rstrip(" |").split(" | ")[-1] == "2", kfold_row  # passes = K
    in_sample = next(line for line in out.splitlines() if line.startswith("| cleanlab (in-sample"))
    assert in_sample.rstrip(" |").split(" | ")[-1] == "1", in_sample
    assert "fold 2/2 trained on 150 samples" in out and "K-fold (2 stratified folds" in out, out
    kdir = out_dir / "kfold" / "worst"
    probs, folds = np.load(kdir / "oof_probs.npy"), np.load(kdir / "folds.npy")
    assert probs.shape == (300, 10) and np.allclose(probs.sum(axis=1), 1.0), probs.shape
    assert sorted(np.bincount(folds).tolist()) == [150, 150]
    assert all((kdir / f"fold{i}" / "checkpoints" / "last.pt").is_file() for i in range(2))

    (tmp_path / "scratch").rename(tmp_path / "scratch_first")
    again = _run_bench("detect_cifar10n.py", [*args, "--reuse"], tmp_path)
    assert "fold 1/2 trained" not in again and "reused; when made" in again, again
    assert next(line for line in again.splitlines() if line.startswith("| cleanlab (K-fold")) == kfold_row


def test_clean_and_retrain_prints_every_policy_row(tmp_path: Path) -> None:
    # Clean-and-retrain at toy size: 300 images, 1 epoch, one label set; every policy retrains.
    cleanlab = _cifar_data_and_cleanlab()
    out_dir = tmp_path / "out"
    args = ["--n", "300", "--epochs", "1", "--label-sets", "worst", "--out", str(out_dir)]
    notes = out_dir / "runs" / "worst" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("not a run")  # refused before any training, nothing removed
    refused = _run_bench("clean_and_retrain.py", args, tmp_path, expect_fail=True)
    assert "is not a gwa-diag run" in refused and notes.is_file(), refused
    notes.unlink()
    (tmp_path / "scratch").rename(tmp_path / "scratch_refused")
    no_gpu = _run_bench("clean_and_retrain.py", [*args, "--mode", "gpu"], tmp_path, expect_fail=True)
    assert "needs a CUDA device" in no_gpu, no_gpu  # the tests hide any GPU
    (tmp_path / "scratch").rename(tmp_path / "scratch_no_gpu")
    out = _run_bench("clean_and_retrain.py", args, tmp_path)
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("| policy |"))
    for column in ("test acc (last epoch)", "test acc at GWA epoch", "labels changed", "labels dropped",
                   "precision (acted on)", "recall (acted on)", "wrong labels left"):
        assert column in header, header
    rows = ["no cleaning", "drop flagged (gwa-diag)", "relabel flagged (gwa-diag)", "oracle (true labels)"]
    rows += ["drop flagged (cleanlab)", "relabel flagged (cleanlab)"] if cleanlab is not None else []
    for row in rows:
        assert any(line.startswith(f"| {row} |") for line in lines), (row, out)
    if cleanlab is None:
        assert "cleanlab is not installed" in out, out
    oracle = next(line for line in lines if line.startswith("| oracle (true labels) |")).rstrip(" |").split(" | ")
    assert oracle[-3:] == ["1.000", "1.000", "0 (0.0%)"], oracle  # precision, recall, no wrong label left
    page = (tmp_path / "pages" / "clean_and_retrain.md").read_text()
    assert "total wall time" in out and "| oracle (true labels) |" in page
    assert (out_dir / "labels" / "worst" / "gwa_drop.provenance.json").is_file()


def test_why_defaults_counts_with_the_phase_and_late(tmp_path: Path) -> None:
    # Part 2 trains on generated images (no shared data needed) and prints both counts.
    out = _run_bench("why_defaults.py", ["--part", "window"], tmp_path)
    wrong = int(re.search(r"\((\d+) of 600 labels wrong", out).group(1))
    around = int(re.search(r"the analysis' estimate \(the default, read with the training phase\): (\d+)", out).group(1))
    late = int(re.search(r"over the second half of training \(\d+\.\.\d+\): (\d+)", out).group(1))
    assert wrong == 150 and 0 <= late < around <= 600, out
    numbers = json.loads((tmp_path / "pages" / "why_defaults.json").read_text())["numbers"]
    assert numbers["window"]["estimate"] == around and numbers["window"]["second_half_count"] == late
    page = (tmp_path / "pages" / "why_defaults.md").read_text()
    assert f"the analysis' estimate (the default, read with the training phase): {around}" in page


def test_regimes_prints_one_row_per_cell_and_removes_its_runs(tmp_path: Path) -> None:
    # The regime x label set table at toy size: the finetune regime (pretraining 1 epoch, then
    # 3 epochs from those weights) on 300 images of worst; the GPU recordings left out.
    _cifar_data_and_cleanlab()
    import json

    out_dir = tmp_path / "out"
    refused = _run_bench("regimes.py", ["--label-sets", "random2", "--out", str(out_dir)], tmp_path, expect_fail=True)
    assert "run only with --held-out" in refused, refused
    (tmp_path / "scratch").rename(tmp_path / "scratch_refused")
    args = ["--n", "300", "--epochs", "3", "--pretrain-epochs", "1", "--test-extra", "0", "--regimes", "finetune",
            "--label-sets", "worst", "--skip-gpu-runs", "--out", str(out_dir), "--pages-dir", str(out_dir)]
    out = _run_bench("regimes.py", args, tmp_path)
    lines = out.splitlines()
    rows = [line for line in lines if line.startswith("| finetune | worst")]
    assert len(rows) == 2, out  # one row in the ranking/count table, one in the stopping table
    ranking = rows[0].split(" | ")
    dump = json.loads((out_dir / "regimes.json").read_text())["numbers"]
    assert ranking[-5] == str(dump["rows"][0]["cell"]["count"]["true"])
    run_info = (out_dir / "regimes.md").read_text().split(RUN_INFO)[1]
    assert "- hardware: CPU" in run_info and "- command: `python bench/regimes.py" in run_info, run_info
    assert "- wall time: " in run_info and "- training: " in run_info, run_info
    assert "GWA choice rated clear but more than 2 points below the best epoch" in out, out
    cell = dump["rows"][0]["cell"]
    assert dump["rows"][0]["n_train"] == 270 and dump["rows"][0]["n_val"] == 30
    assert cell["stopping"]["has_val"] and len(cell["curves"]["val_acc"]) == 3
    # The small validation split (val 1%): the first tenth of the 30, read from the same run.
    assert cell["stopping"]["has_val1"] and len(cell["curves"]["val1_acc"]) == 3
    assert all(round(v * 3) == v * 3 for v in cell["curves"]["val1_acc"])  # accuracies of 3 images
    from gwa_diag.early_stopping import rank_correlation

    curves = cell["curves"]
    pairs = [(g, t) for g, t in zip(curves["gwa"], curves["eval_acc"]) if g is not None]
    spearman = rank_correlation(*zip(*pairs)) if len(pairs) >= 3 else None
    assert cell["stopping"]["spearman_gwa_test"] == spearman
    assert rows[1].rstrip(" |").endswith("-" if spearman is None else f"{spearman:+.2f}"), rows[1]
    assert set(cell["windows"]) == {"second_half", "after_warmup", "all"} and cell["oracle"]["windows_tried"] == 6
    # The oracle window is the best of every window, the fixed ones included.
    assert cell["oracle"]["auroc"] >= max(w["aum"] for w in cell["windows"].values()) - 1e-12
    assert (out_dir / "regimes.md").read_text().count("| finetune | worst") == 2
    # Each rule against the validation split's choice, in points, over the one cell.
    acc = cell["stopping"]["acc"]
    versus = next(line for line in lines if line.startswith("Test accuracy against the validation split's choice"))
    for key, head in (("kept", "kept"), ("last", "last"), ("best", "best"), ("val1", "val 1%")):
        assert f"{head} {100 * (acc[key] - acc['val']):+.2f} (1)" in versus, versus
    assert sorted(p.name for p in out_dir.iterdir()) == ["regimes.json", "regimes.md"]  # runs removed
    assert "t_analysis" not in cell and "t_train" not in dump["rows"][0]  # seconds: in the run information only


def test_regimes_reanalyses_kept_runs_to_the_same_numbers(tmp_path: Path) -> None:
    # A GPU machine trains with --keep-runs and its run directories come back: --runs must
    # re-analyse them to the numbers the training command printed.
    _cifar_data_and_cleanlab()
    import json

    refused = _run_bench("regimes.py", ["--mode", "gpu", "--regimes", "finetune", "--device", "cpu", "--out",
                                        str(tmp_path / "x")], tmp_path, expect_fail=True)
    assert "no finetune regime" in refused, refused
    (tmp_path / "scratch").rename(tmp_path / "scratch_refused")
    trained = tmp_path / "trained"
    _run_bench("regimes.py", ["--n", "200", "--epochs", "6", "--test-extra", "0", "--regimes", "memorise",
                              "--label-sets", "worst", "--skip-gpu-runs", "--keep-runs", "--out", str(trained),
                              "--pages-dir", str(trained)], tmp_path)
    (tmp_path / "scratch").rename(tmp_path / "scratch_trained")
    runs = sorted(trained.glob("runs-*/*"))
    assert [p.name for p in runs] == ["memorise-worst-seed0"]
    again = tmp_path / "again"
    out = _run_bench("regimes.py", ["--n", "200", "--test-extra", "0", "--skip-gpu-runs", "--runs", str(runs[0]),
                                    "--verified", "20,40", "--verified-repeats", "5",
                                    "--out", str(again), "--pages-dir", str(again)], tmp_path)
    assert "| memorise | worst" in out and "re-analysed here" in out, out
    # --verified: draws of the audit's design on the run, which is never written into.
    assert "## A verified sample chooses the window" in out and "Verified n=40, mean AUROC gain" in out, out
    assert not (runs[0] / "audit").exists()
    again_cell = json.loads((again / "regimes.json").read_text())["numbers"]["rows"][0]["cell"]
    verified = again_cell["verified"]
    assert sorted(verified["n"]) == ["20", "40"] and verified["repeats"] == 5
    for got in verified["n"].values():
        for k in ("plain", "guarded"):
            assert got[k]["p10"] <= got[k]["mean"] <= again_cell["oracle"]["auroc"] + 1e-12
            assert 0 <= got[k]["beats"] <= 1
    first, second = (json.loads((d / "regimes.json").read_text())["numbers"]["rows"][0] for d in (trained, again))
    for key in ("default", "phase", "count", "oracle", "flags", "prefixes"):
        assert first["cell"][key] == second["cell"][key], key
    assert first["cell"]["stopping"]["acc"] == second["cell"]["stopping"]["acc"]
    # --prefixes: every prefix from a quarter of the run to its end, read as a run that
    # stopped there; the exit status says whether one ranked more than the target below the
    # best fixed window of its prefix.
    prefixed = tmp_path / "prefixed"
    (tmp_path / "scratch").rename(tmp_path / "scratch_again")
    (tmp_path / "scratch").mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "regimes.py"), "--n", "200", "--test-extra", "0",
                           "--skip-gpu-runs", "--prefixes", "--runs", str(runs[0]), "--out", str(prefixed),
                           "--pages-dir", str(prefixed)],
                          cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp_path / "scratch"), "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=300)
    dump = json.loads((prefixed / "regimes.json").read_text())["numbers"]
    cell = dump["rows"][0]["cell"]
    pre = cell["prefixes"]
    assert [p["epochs"] for p in pre] == [2, 3, 4, 5, 6] and pre[-1]["best"] == cell["oracle"]["auroc"]
    for p in pre:
        assert p["window"][0] <= p["window"][1] <= p["last_epoch"] == p["epochs"] - 1
        assert p["best"] >= p["default"] and p["gap"] == pytest.approx(p["best"] - p["default"])
    missed = [p for p in pre if p["gap"] > dump["prefix_target"]]
    assert (proc.returncode != 0) == bool(missed), proc.stderr
    assert dump["prefix_missed"] == (["memorise / worst"] if missed else [])
    assert "## Prefixes: the run stopped after each epoch" in proc.stdout and "| memorise | worst | 2-6 |" in proc.stdout
    # The plateau constants' table: the shipped pair reproduces the prefix table, and the
    # constants are restored after the other pairs were read.
    from gwa_diag import phase_rule

    shipped = cell["plateau_grid"][f"{phase_rule.PLATEAU_HORIZON}/{phase_rule.PLATEAU_RISE:g}"]
    assert shipped["worst"] == pytest.approx(max(p["gap"] for p in pre))
    assert shipped["mean"] == pytest.approx(sum(p["gap"] for p in pre) / len(pre))
    assert len(cell["plateau_grid"]) == 12 and "## The plateau constants, every prefix again" in proc.stdout
    assert f"| {phase_rule.PLATEAU_HORIZON} (shipped) | {phase_rule.PLATEAU_RISE:g} |" in proc.stdout


def test_the_prefix_table_names_every_cell_that_missed() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from regimes import PREFIX_TARGET, prefix_table

    def row(regime: str, gaps: list[float]) -> dict:
        pre = [{"epochs": k + 4, "last_epoch": k + 3, "window": [1, k + 3], "default": 0.9 - g, "best": 0.9,
                "best_window": [0, 1], "gap": g} for k, g in enumerate(gaps)]
        return {"regime": regime, "label_set": "worst", "seed": 0, "cell": {"prefixes": pre}}

    lines, missed = prefix_table([row("a", [0.0, PREFIX_TARGET]), row("b", [0.0, PREFIX_TARGET + 0.001, 0.01])], 1)
    assert missed == ["b / worst"]
    assert lines[2].endswith("| 0 of 2 |") and lines[3].endswith("| 1 of 3 ! |")
    assert "+0.021: 5, 0.879 [1-4] vs 0.900 [0-1]" in lines[3]


def test_the_weighted_window_auroc_matches_sklearn_and_chooses_the_known_window() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    sys.path.insert(0, str(ROOT / "bench"))
    from regimes import choose_window, weighted_aurocs, window_pairs, window_scores

    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.3
    w = rng.choice([1.0, 2.5, 7.0], size=60)
    scores = np.round(rng.normal(size=(8, 60)) + y, 1)  # rounded: many ties between wrong and right labels
    scores[3, :5] = np.nan  # NaN counts as the lowest score, as metrics.auroc
    got = weighted_aurocs(scores, y, w)
    for row, value in zip(scores, got):
        want = sklearn_metrics.roc_auc_score(y, np.where(np.isnan(row), np.nanmin(scores) - 1, row), sample_weight=w)
        assert value == pytest.approx(want, abs=1e-12)
    assert np.isnan(weighted_aurocs(scores[:2], np.zeros(60, bool), w)).all()  # no wrong label: no AUROC

    # Margins of 6 epochs where only epochs 2..3 separate the wrong labels: the choice is [2, 3].
    margins = rng.normal(size=(80, 6))
    wrong = np.arange(80) < 20
    margins[:, 2:4] -= 3.0 * wrong[:, None]
    first, last = window_pairs(6)
    av = weighted_aurocs(window_scores(margins, first, last), wrong, np.ones(80))
    k = choose_window(av, first, last)
    assert (first[k], last[k]) == (2, 3) and av[k] == 1.0
    # Ties go to the window ending latest, then the shortest.
    assert choose_window(np.array([0.9, 0.9, 0.9, np.nan]), np.array([0, 0, 1, 2]), np.array([1, 2, 2, 2])) == 2
    assert choose_window(np.full(3, np.nan), np.zeros(3, int), np.zeros(3, int)) is None


def test_wrong_label_reliability_bins_each_share_against_the_truth(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import numpy as np
    import pandas as pd
    from analysis_fixtures import noisy_rows, write_run
    from wrong_label_reliability import BINS, reliability

    from gwa_diag import analyze

    # The bins against a hand count: 0 | (0, .5) | [.5, 1) | 1, NaN shares and unknown samples left out.
    share = pd.Series([0.0, 0.0, 0.25, 0.5, 2 / 3, 1.0, 1.0, np.nan, 1.0], index=range(9))
    wrong = pd.Series([False, True, True, False, True, True, True, True], index=range(8))
    table = reliability(share, wrong)
    assert table.index.tolist() == list(BINS) and table["n"].tolist() == [2, 1, 2, 2]
    assert table["wrong"].tolist() == [0.5, 1.0, 0.5, 1.0]
    # End to end on a run with clean labels: every sample lands in one bin, and the printed
    # wrong share at 1 is the run's own.
    rows, _, clean = noisy_rows(n=200, epochs=8, noise=0.3, seed=5)
    run = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean)
    out = _run_bench("wrong_label_reliability.py", [str(run)], tmp_path)
    a = analyze(run)
    ref = reliability(a.summary["unfitted"], a.truth)
    assert ref["n"].sum() == a.summary["unfitted"].notna().sum()
    row = next(line for line in out.splitlines() if "| unfitted |" in line)
    assert row.rstrip(" |").endswith(f"{int(ref.loc['1', 'n']):,} ({ref.loc['1', 'wrong']:.2f})"), out
    assert re.search(r"unfitted = 1: wrong share [\d.]+-[\d.]+ over 1 runs", out), out


def test_audit_simulates_verified_samples_on_a_toy_run(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import numpy as np
    from analysis_fixtures import noisy_rows, write_run
    import pandas as pd
    from audit import MISSED, ece, labels_needed

    # The helpers against hand counts: ECE of two bins, and the labels needed on log-log axes.
    assert ece(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1])) == pytest.approx(0.5 * 0.45 + 0.5 * 0.05)
    half = pd.Series([0.4, 0.2, 0.1, 0.05], index=[50, 100, 200, 400])
    assert labels_needed(half, 0.2) == "100"
    assert labels_needed(half, 0.15) == f"~{round(100 * 2 ** (np.log2(0.2 / 0.15)))}"
    assert labels_needed(half, 0.025) == ">400 (~1600)"
    # End to end at toy size: a 600-sample run with clean labels, 3 audits per size; the
    # table has a row per size, and the target lines are printed (a toy run may miss them).
    rows, _, clean = noisy_rows(n=600, epochs=6, noise=0.3, seed=3)
    run = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "audit.py"), "--gpu-runs", "--runs", str(run), "--sims", "3",
         "--sizes", "50,100,200", "--workers", "1", "--pages-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode in (0, MISSED), proc.stdout + proc.stderr
    out = proc.stdout
    page = (tmp_path / "audit.md").read_text()
    assert page.split(RUN_INFO)[0].rstrip() in out
    assert json.loads((tmp_path / "audit.json").read_text())["numbers"]["sims"] == 3
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| cell |") and len(table) == 1 + 3, out
    assert re.search(r"\| run \| \d+ / 600 \| 50 \| ", out), out
    assert ("Targets: all met." in out) == (proc.returncode == 0), out


# -- the harness ------------------------------------------------------------------------------
def _harness():
    sys.path.insert(0, str(ROOT / "bench"))
    import harness

    return harness


RUN_INFO = "<!-- run info -->"


def test_bench_scripts_import_only_the_package_and_the_harness() -> None:
    # Every bench script is a thin table on the harness (and the torch-free synthetic runs):
    # no script imports another one, and the two shared modules import no script.
    libraries = {"harness", "synthetic"}
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py")}
    bad = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                if top in scripts and not (top in libraries and path.stem not in libraries):
                    bad.append(f"{path.name}:{node.lineno} imports {name}")
    assert bad == [], "bench scripts import each other (use gwa_diag, bench/harness.py or bench/synthetic.py):\n" + "\n".join(bad)


def test_write_page_is_atomic_stable_and_keeps_run_info_apart(tmp_path: Path, monkeypatch) -> None:
    harness = _harness()
    numbers = {"b": [1, 2.5, None], "a": {"x": 0.125}}
    when = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
    one = tmp_path / "one"
    page, data = harness.write_page("bench/demo.py", "# Demo\n\n| a |\n|---|\n| 1 |\n", numbers, pages_dir=one,
                                    wall_s=1.5, now=when, argv=["--quick"], timings={"training": "3 s"})
    assert (page.name, data.name) == ("demo.md", "demo.json") and sorted(p.name for p in one.iterdir()) == [
        "demo.json", "demo.md"]  # no temporary file left beside them
    text = page.read_text()
    table, info = text.split(RUN_INFO)
    assert table == "# Demo\n\n| a |\n|---|\n| 1 |\n\n"
    assert info.splitlines()[1:] == ["- command: `python " + os.path.relpath(sys.argv[0], ROOT) + " --quick`",
                                     f"- hardware: {harness.hardware()}", "- date: 2026-01-02 03:04 UTC",
                                     "- wall time: 1.5 s", "- training: 3 s"]
    assert json.loads(data.read_text()) == {"numbers": numbers, "run_info": json.loads(data.read_text())["run_info"]}
    # The same numbers on another day, after another wall time: the same bytes but for the run info.
    two = tmp_path / "two"
    later = harness.write_page("demo", "# Demo\n\n| a |\n|---|\n| 1 |\n", dict(reversed(numbers.items())),
                               pages_dir=two, wall_s=99.0, argv=["--quick"], timings={"training": "4 s"})
    for first, second in ((page, later[0]), (data, later[1])):
        assert first.read_bytes() != second.read_bytes()
        assert harness.without_run_info(first.read_text()) == harness.without_run_info(second.read_text())
    assert harness.without_run_info(data.read_text()).startswith('{\n "numbers": {')
    # Atomic: a failing write leaves the old page whole.
    monkeypatch.setattr(harness, "numbers_text", lambda *a: (_ for _ in ()).throw(TypeError("no JSON")))
    with pytest.raises(TypeError):
        harness.write_page("demo", "# Other", numbers, pages_dir=two, wall_s=1.0)
    assert later[1].read_text().startswith('{\n "numbers"') and (two / "demo.md").read_text().startswith("# Other")
    assert sorted(p.name for p in two.iterdir()) == ["demo.json", "demo.md"]


def test_headline_collects_the_pages_and_fills_only_a_marked_readme(tmp_path: Path) -> None:
    harness = _harness()
    pages = tmp_path / "pages"
    harness.write_page("detect_cifar10n", "# D", {"headline": [{"result": "AUROC default vs best other",
                                                                 "value": "0.92 vs 0.90"}]}, pages_dir=pages, wall_s=1)
    harness.write_page("audit", "# A", {"headline": [{"result": "half-width at n=200", "value": "+-9%"}]},
                       pages_dir=pages, wall_s=1)
    harness.write_page("why_defaults", "# W", {"gap": {}}, pages_dir=pages, wall_s=1)  # no headline: no row
    readme = tmp_path / "README.md"
    readme.write_text("# Tool\n\n<!-- headline:start -->\nold table\n<!-- headline:end -->\n\nmore\n")
    subprocess.run([sys.executable, str(ROOT / "bench" / "harness.py"), "headline", "--pages-dir", str(pages),
                    "--readme", str(readme)], check=True, cwd=ROOT, capture_output=True)
    table = (pages / "headline.md").read_text()
    assert table.count("\n| [") == 2 and "| [audit](audit.md) | half-width at n=200 | +-9% |" in table
    text = readme.read_text()
    assert text.startswith("# Tool\n\n<!-- headline:start -->\n| benchmark |") and text.endswith(
        "<!-- headline:end -->\n\nmore\n")
    assert "old table" not in text and "](docs/benchmarks/detect_cifar10n.md)" in text
    plain = tmp_path / "PLAIN.md"
    plain.write_text("# No markers\n")
    harness.write_headline(pages, plain)
    assert plain.read_text() == "# No markers\n"


def test_recipes_name_each_training_once() -> None:
    harness = _harness()
    memorise = harness.recipe("memorise", epochs=3)
    assert (memorise.optimizer, memorise.lr, memorise.batch_size, memorise.augment) == ("adamw", 3e-3, 128, False)
    assert harness.recipe("memorise", epochs=3, hw="gpu", device="cuda").lr == 1e-3
    assert harness.recipe("finetune", epochs=1).mode == "finetune"
    # The slow memorisers are ``memorise`` with one knob changed each.
    slow = {name: harness.recipe(name, epochs=3) for name in ("slow_lr", "slow_wd", "slow_batch")}
    assert [(c.lr, c.weight_decay, c.batch_size) for c in slow.values()] == [(3e-4, 0.0, 128), (1e-3, 0.3, 128),
                                                                           (1e-3, 0.0, 1024)]
    assert all((c.optimizer, c.schedule, c.augment) == ("adamw", "constant", False) for c in slow.values())
    decay = harness.recipe("decay", epochs=2)
    from gwa_diag.training.config import TrainConfig

    assert (decay.lr, decay.batch_size, decay.schedule, decay.precision) == (TrainConfig().lr, TrainConfig().batch_size,
                                                                             TrainConfig().schedule, "fp32")
    with pytest.raises(ValueError, match="unknown recipe 'memorize': choose from decay, memorise"):
        harness.recipe("memorize", epochs=1)
    # A script's options over the recipe: what is unset comes from the recipe on its machine.
    import argparse

    args = argparse.Namespace(mode="cpu", epochs=None, n=None, batch_size=None, lr=0.05, warmup_epochs=None, seed=3,
                              progress=False)
    cfg = harness.decay_config(args, {"n": 500, "epochs": 4})
    assert (args.n, args.epochs, args.model, args.batch_size, args.lr) == (500, 4, "tiny", TrainConfig().batch_size, 0.05)
    assert (cfg.epochs, cfg.lr, cfg.seed, cfg.device, cfg.precision) == (4, 0.05, 3, "cpu", "fp32")
    assert harness.label_set_names(" worst,pair30 ") == ["worst", "pair30"]
    with pytest.raises(SystemExit, match=r"unknown label set\(s\) \['pair30'\]"):
        harness.label_set_names("worst,pair30", pairs=False)
