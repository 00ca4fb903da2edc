"""The estimated number of wrong labels: on recorded rows with a known noise rate, on a real
training run with injected noise, and the default rule that flags the top of the ranking
down to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import colour_images_npz, noisy_rows, write_run
from test_phase import memorising_fit, slow_fit
from gwa_diag.analysis.estimate import THRESHOLD, estimate_wrong_labels
from gwa_diag.analysis.pipeline import analyze
from gwa_diag.analysis.rank import flag, read_suspects
from gwa_diag.analysis.summaries import summarize
from gwa_diag.checks import InputError
from gwa_diag.phase_rule import MEMORISED_AT, MEMORISING_FROM
from gwa_diag.cli import main

# The estimate must come within this fraction of the true count on the recorded rows below,
# which imitate a model that has fitted the correctly labelled samples but still misses a
# random 10% of them in each epoch (the estimate counts the 2.8% missed in two of three
# epochs too: at 10% noise that is about +23%).
TOLERANCE = 0.25


def _fitted_model_rows(n: int, noise: float, *, classes: int = 5, epochs: int = 10, seed: int = 0):
    """Rows of a model that predicts the true class: right (and confident) for a clean label
    in 90% of epochs, else a low-confidence other class; for a wrong label it predicts the
    true class, confidently, in 90% of epochs, else it has memorised the given label."""
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, classes, n)
    wrong = rng.random(n) < noise
    given = np.where(wrong, (clean + rng.integers(1, classes, n)) % classes, clean)
    frames = []
    for epoch in range(epochs):
        hit = rng.random(n) < 0.9
        pred = np.where(hit, clean, np.where(wrong, given, (clean + 1) % classes))
        p_pred = np.where(hit, rng.uniform(0.8, 0.99, n), np.where(wrong, rng.uniform(0.5, 0.9, n), rng.uniform(0.2, 0.45, n)))
        p_label = np.where(pred == given, p_pred, rng.uniform(0.01, 0.2, n))
        frames.append(pd.DataFrame({
            "epoch": epoch, "sample_id": np.arange(n), "step": epoch * n + np.arange(n), "label": given,
            "alignment": np.where(pred == given, 0.2, -0.2), "margin": np.log(p_label / (1 - p_label)),
            "loss": -np.log(p_label), "p_label": p_label, "pred": pred, "p_pred": p_pred,
        }))
    return pd.concat(frames, ignore_index=True), given, clean


@pytest.mark.parametrize("noise", [0.1, 0.3])
def test_estimate_finds_the_known_number_of_wrong_labels(tmp_path, noise):
    rows, given, clean = _fitted_model_rows(2000, noise, seed=int(noise * 10))
    path = write_run(tmp_path / "run", rows, num_classes=5, clean_labels=dict(enumerate(clean.tolist())),
                     labels=dict(enumerate(given.tolist())))
    est = estimate_wrong_labels(summarize(path))
    true = int((given != clean).sum())
    # Both rates within the tolerance: an estimator blind to the data (a constant, or a fixed
    # share of the samples) cannot meet it at 10% and at 30% noise.
    assert abs(est.total - true) <= TOLERANCE * true, (est.total, true)
    assert est.n == 2000 and est.rate == pytest.approx(est.total / 2000)
    for c in range(5):
        in_class = given == c
        true_c = int((given != clean)[in_class].sum())
        assert abs(est.per_class[c] - true_c) <= max(10, 0.35 * true_c), (c, est.per_class[c], true_c)
    assert sum(est.per_class.values()) == est.total


def test_disagreement_uses_each_class_threshold(tmp_path):
    # Class 1 is predicted with p(label) 0.3 on its own samples: 0.35 for class 1 is confident,
    # the same 0.35 for class 0 (whose samples have p(label) 0.9) is not.
    spec = []
    for epoch in range(4):
        spec += [
            {"epoch": epoch, "sample_id": i, "label": 0, "pred": 0, "p_label": 0.9, "p_pred": 0.9} for i in range(6)
        ] + [
            {"epoch": epoch, "sample_id": 10 + i, "label": 1, "pred": 1, "p_label": 0.3, "p_pred": 0.3} for i in range(6)
        ] + [
            {"epoch": epoch, "sample_id": 20, "label": 0, "pred": 1, "p_label": 0.1, "p_pred": 0.35},  # counts
            {"epoch": epoch, "sample_id": 21, "label": 1, "pred": 0, "p_label": 0.1, "p_pred": 0.35},  # below 0.9
        ]
    rows = pd.DataFrame(spec)
    rows["step"] = rows["epoch"] * 100 + rows["sample_id"]
    rows["alignment"], rows["margin"] = 0.1, 0.0
    rows["loss"] = -np.log(rows["p_label"])
    summary = summarize(write_run(tmp_path / "run", rows, num_classes=2))
    assert summary.loc[20, "disagreement"] == 1.0 and summary.loc[21, "disagreement"] == 0.0
    assert (summary.loc[range(6), "disagreement"] == 0).all()
    # Both are unfitted (another class predicted), confidently or not: both count.
    assert summary.loc[[20, 21], "unfitted"].tolist() == [1.0, 1.0]
    est = estimate_wrong_labels(summary)
    assert est.total == 2 and est.per_class == {0: 1, 1: 1}


def test_estimate_needs_the_unfitted_column():
    with pytest.raises(InputError, match="unfitted"):
        estimate_wrong_labels(pd.DataFrame({"label": [0, 1]}))


def test_the_default_rule_flags_the_top_of_the_ranking_down_to_the_estimate(tmp_path):
    rows, given, clean = _fitted_model_rows(600, 0.2, seed=5)
    path = write_run(tmp_path / "run", rows, num_classes=5, clean_labels=dict(enumerate(clean.tolist())))
    a = analyze(path)
    n = a.estimate.total
    assert n == int((a.summary["unfitted"] > THRESHOLD).sum()) > 0
    # ranks 1..n, never a gap: the flagged set and the ranking agree
    assert a.flagged["rank"].tolist() == list(range(1, n + 1))
    assert a.flagged.index.tolist() == a.ranking.index[:n].tolist()
    assert flag(a.summary).index.tolist() == a.flagged.index.tolist()
    assert all("estimated number of wrong labels" in r for r in a.flagged["reason"])


def test_rank_command_prints_the_estimate_and_writes_unfitted(tmp_path, capsys):
    rows, given, clean = _fitted_model_rows(300, 0.2, seed=6)
    path = write_run(tmp_path / "run", rows, num_classes=5, clean_labels=dict(enumerate(clean.tolist())))
    assert main(["rank", str(path)]) == 0
    out = capsys.readouterr().out
    est = analyze(path).estimate
    assert f"estimated wrong labels: {est.total} of 300" in out
    suspects = read_suspects(path / "analysis" / "suspects.csv")
    assert len(suspects) == est.total and suspects["rank"].tolist() == list(range(1, est.total + 1))
    # The flagged top of the AUM ranking is mostly the samples the estimate counted.
    assert (suspects["unfitted"] > THRESHOLD).mean() > 0.8


def test_a_real_run_that_memorises_its_labels_is_still_flagged(tmp_path):
    # AdamW at a constant rate without augmentation: the model fits the clean 75% within a few
    # epochs, then memorises the 25% injected wrong labels (92% of all labels by epoch 9).
    data = colour_images_npz(tmp_path / "d.npz", n=600, classes=4, seed=3)
    out = tmp_path / "run"
    assert main(["train", "--data", "npz", "--data-path", str(data), "--noise-rate", "0.25", "--epochs", "15",
                 "--batch-size", "50", "--lr", "0.01", "--optimizer", "adamw", "--schedule", "constant",
                 "--warmup-epochs", "0.5", "--no-augment", "--quiet", "--out", str(out)]) == 0
    a = analyze(out)
    true = int(a.truth.sum())
    assert a.epoch_choices.phase.memorised and a.epoch_choices.window[-1] < a.epoch_choices.phase.onset
    # Measured: 132 of 150 at precision 1.0 (the samples confidently contradicted at the plateau,
    # epoch 3); the bounds leave room for other CPUs and builds.
    assert abs(a.estimate.total - true) <= 0.25 * true, (a.estimate.total, true)
    assert len(a.flagged) >= true / 2
    assert a.truth.loc[a.flagged.index].mean() > 0.25  # above the noise rate
    assert a.truth.loc[a.flagged.index].mean() > 0.8


def _memorised_run(tmp_path, **rows_kwargs):
    """A recording whose per-epoch fit says the model memorised from epoch 9 (plateau 7),
    with rows where wrong labels are mostly contradicted (noisy_rows)."""
    fit, share = memorising_fit(onset=9)
    rows, _, clean = noisy_rows(n=400, epochs=len(fit), seed=11, **rows_kwargs)
    extra = {e: {"train_acc": fit[e], "contradicted": share[e]} for e in range(len(fit))}
    return write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, extra_epoch=extra), rows


def _contradicted_slowly(rows: pd.DataFrame, epoch: int) -> pd.Series:
    """Per sample at ``epoch``, with pandas: repeated presentations as the summary merges
    them (numbers averaged over finite values, prediction from the last presentation), rows
    with a non-finite value left out, the class threshold = mean p(label) of the rows
    labelled with it; 1.0 when pred != label and p(pred) >= the threshold of pred."""
    e = rows[rows["epoch"] == epoch].sort_values(["sample_id", "step"])
    value = ["alignment", "margin", "loss", "p_label"]
    g = e.groupby("sample_id")
    merged = g[value].agg(lambda v: v[np.isfinite(v)].mean() if np.isfinite(v).any() else np.nan)
    merged[["label", "pred", "p_pred"]] = g[["label", "pred", "p_pred"]].last()
    merged = merged[np.isfinite(merged[value + ["p_pred"]]).all(axis=1)]
    threshold = merged.groupby("label")["p_label"].mean()
    limit = merged["pred"].map(threshold)
    return ((merged["pred"] != merged["label"]) & (merged["p_pred"] >= limit)).astype(float)


@pytest.mark.parametrize("kwargs", [{}, {"repeats": 0.3, "gaps": 0.1, "nans": 0.05}])
def test_a_memorised_run_counts_the_labels_contradicted_at_the_plateau(tmp_path, kwargs):
    path, rows = _memorised_run(tmp_path, **kwargs)
    a = analyze(path)
    phase = a.epoch_choices.phase
    assert phase.memorised and phase.plateau == 7 and phase.onset == 9
    column = a.summary["contradicted_plateau"]
    slow = _contradicted_slowly(rows, phase.plateau)
    # Every sample without a finite row at the plateau is NaN, every other one matches.
    np.testing.assert_array_equal(column.reindex(slow.index).to_numpy(), slow.to_numpy())
    assert column.drop(slow.index).isna().all()
    est = a.estimate
    assert est.column == "contradicted_plateau" and est.epoch == 7 and "epoch 7" in est.line()
    assert est.total == int((slow > THRESHOLD).sum()) > 0
    assert sum(est.per_class.values()) == est.total
    # unfitted over epochs 6-8 would count every sample the model mispredicted there.
    assert est.total != int((a.summary["unfitted"] > THRESHOLD).sum())
    assert a.flagged.index.tolist() == a.ranking.index[: est.total].tolist()


def test_a_run_that_began_memorising_counts_between_the_two_counts(tmp_path):
    # Halfway up the weight the count is the two counts mixed half and half, so it moves
    # with the window instead of jumping from one to the other at a threshold.
    fit, share = slow_fit((MEMORISING_FROM + MEMORISED_AT) / 2)
    rows, _, clean = noisy_rows(n=400, epochs=len(fit), seed=11)
    extra = {e: {"train_acc": fit[e], "contradicted": share[e]} for e in range(len(fit))}
    a = analyze(write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, extra_epoch=extra))
    phase = a.epoch_choices.phase
    assert not phase.memorised and phase.weight == pytest.approx(0.5, abs=0.01) and phase.onset == 9
    unfitted = int((a.summary["unfitted"] > THRESHOLD).sum())
    plateau = int((a.summary["contradicted_plateau"] > THRESHOLD).sum())
    est = a.estimate
    assert est.weight == phase.weight and est.epoch == phase.plateau == 7
    # Rounded per class: within half a sample per class of the exact mix.
    mixed = (1 - phase.weight) * unfitted + phase.weight * plateau
    assert abs(est.total - mixed) <= len(est.per_class) / 2 and sum(est.per_class.values()) == est.total
    assert min(unfitted, plateau) < est.total < max(unfitted, plateau)
    assert "epoch 7" in est.line() and "last three epochs" in est.line()
    assert a.flagged.index.tolist() == a.ranking.index[: est.total].tolist()


def test_a_fixed_window_keeps_the_unfitted_count_on_a_memorised_run(tmp_path):
    path, _ = _memorised_run(tmp_path)
    est = analyze(path, window="second_half").estimate
    assert est.column == "unfitted" and est.epoch is None
    assert est.total == int((summarize(path, window="second_half")["unfitted"] > THRESHOLD).sum())


def test_the_memorised_count_needs_its_column(tmp_path):
    path, _ = _memorised_run(tmp_path)
    summary = summarize(path).drop(columns=["contradicted_plateau"])
    with pytest.raises(InputError, match="contradicted_plateau"):
        estimate_wrong_labels(summary)


def test_suspects_carry_the_plateau_column(tmp_path):
    path, _ = _memorised_run(tmp_path)
    assert main(["rank", str(path)]) == 0
    suspects = read_suspects(path / "analysis" / "suspects.csv").set_index("sample_id")
    a = analyze(path)
    assert len(suspects) == a.estimate.total
    # The evidence behind the count travels with each flagged sample, bit for bit.
    np.testing.assert_array_equal(suspects["contradicted_plateau"].to_numpy(),
                                  a.summary.loc[suspects.index, "contradicted_plateau"].to_numpy())


def test_each_count_says_which_way_it_errs_in_the_report(tmp_path):
    import json

    from gwa_diag import write_report
    from gwa_diag.analysis.estimate import caveat_of
    from gwa_diag.analysis.report import _estimate_lines

    path, _ = _memorised_run(tmp_path)
    plateau, window = analyze(path).estimate, analyze(path, window="second_half").estimate
    # The two counts err differently, and each says how.
    assert plateau.caveat != window.caveat and "memorised" in plateau.caveat and "too low" in window.caveat
    write_report(path)
    saved = json.loads((path / "analysis" / "report.json").read_text())["estimate"]
    assert saved["caveat"] == plateau.caveat
    assert plateau.caveat in (path / "analysis" / "report.md").read_text()
    # A report.json from before the counts said so (no column, no caveat) reads as unfitted's.
    old = {"estimate": {k: v for k, v in saved.items() if k not in ("column", "caveat")},
           "ground_truth": {"available": False}}
    assert caveat_of(None) in _estimate_lines(old, None)[0]
