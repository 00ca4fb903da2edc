"""How far to trust the GWA-selected epoch (clear peak, rising, flat, edge), LabelWave's
choice from prediction changes, and the rank correlation they are reported with."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gwa_diag.checks import InputError
from gwa_diag.phase_rule import Phase
from gwa_diag.early_stopping import (
    EarlyStopResult,
    assess_choice,
    labelwave_epoch,
    rank_correlation,
    select_epoch,
)

EPOCHS = list(range(30))


def _assess(curve: list[float]):
    selected = select_epoch(EPOCHS, curve, total_epochs=len(EPOCHS))
    return selected, assess_choice(EPOCHS, curve, selected)


def test_a_clear_interior_peak_is_trusted():
    rng = np.random.default_rng(0)
    curve = [math.exp(-(((e - 15) / 5) ** 2)) + 0.01 * rng.standard_normal() for e in EPOCHS]
    selected, trust = _assess(curve)
    assert 13 <= selected.epoch <= 17
    assert trust.level == "clear" and trust.reasons == ()
    assert trust.peak_margin > 3


def test_a_monotone_rising_curve_is_not_trusted():
    # Memorisation: fitted wrong labels turn positive, so mean alignment only climbs.
    curve = [0.002 * e + 0.0003 * math.sin(3 * e) for e in EPOCHS]
    selected, trust = _assess(curve)
    assert selected.epoch == 29
    assert trust.level == "none"
    assert trust.rising_correlation > 0.95
    assert any("rank correlation" in r for r in trust.reasons) and any("last epoch" in r for r in trust.reasons)


def test_a_flat_noisy_curve_has_no_clear_peak():
    rng = np.random.default_rng(1)
    curve = list(0.05 + 0.002 * rng.standard_normal(len(EPOCHS)))
    selected, trust = _assess(curve)
    assert trust.level == "weak"
    assert any("no clear peak" in r for r in trust.reasons)
    assert trust.peak_margin < 3


def test_a_choice_at_the_first_epoch_after_warmup_is_weak():
    curve = [1.0, 1.0, 1.0] + [0.9 - 0.02 * i for i in range(27)]  # falls from the end of warm-up on
    selected, trust = _assess(curve)
    assert selected.epoch == selected.candidates[0] == 3
    assert trust.level == "weak" and any("first epoch after the warm-up" in r for r in trust.reasons)


def test_no_selection_means_no_trust():
    trust = assess_choice(EPOCHS, [None] * 30, EarlyStopResult(None, "scratch", "nothing defined", []))
    assert trust.level == "none" and "nothing defined" in trust.reasons[0]


def test_rank_correlation_matches_a_reference_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    for _ in range(20):
        x = rng.integers(0, 6, size=15).astype(float)  # many ties
        y = x + rng.integers(-3, 4, size=15)
        assert rank_correlation(list(x), list(y)) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert rank_correlation([1, 2], [2, 1]) is None  # too short
    assert rank_correlation([1, 1, 1], [1, 2, 3]) is None  # constant
    with pytest.raises(InputError):
        rank_correlation([1, 2, 3], [1, 2])


def test_labelwave_stops_at_the_first_minimum_of_smoothed_prediction_changes():
    # Changes fall while the clean patterns are learnt, then rise as wrong labels are fitted.
    changes = [None] + [1000 * math.exp(-e / 4) + 30 * max(0, e - 12) for e in EPOCHS[1:]]
    raw_min = 1 + int(np.argmin(changes[1:]))
    chosen = labelwave_epoch(EPOCHS, changes)
    assert chosen.mode == "labelwave"
    assert abs(chosen.epoch - raw_min) <= 1  # the 3-epoch average lags by at most one epoch
    assert labelwave_epoch(EPOCHS, changes, window=1).epoch == raw_min
    # A single noisy dip early on does not stop it with the default window.
    bumpy = list(changes)
    bumpy[4] = bumpy[5] * 0.8
    assert labelwave_epoch(EPOCHS, bumpy, window=1).epoch == 4
    assert labelwave_epoch(EPOCHS, bumpy).epoch > 6


def test_labelwave_without_a_minimum_selects_nothing():
    falling = [None] + [100.0 / e for e in EPOCHS[1:]]
    assert labelwave_epoch(EPOCHS, falling).epoch is None
    with pytest.raises(InputError, match="window"):
        labelwave_epoch(EPOCHS, falling, window=0)


# --------------------------------------------------------------------------------------
# from a run directory
# --------------------------------------------------------------------------------------


def _reference_changes(rows):
    """Slow reference: last presentation per (sample, epoch), compared with the sample's
    previous presented epoch, in plain Python."""
    last = rows.sort_values("step").groupby(["sample_id", "epoch"])["pred"].last()
    changes, compared = {}, {}
    for sid in last.index.get_level_values(0).unique():
        per = last.loc[sid].sort_index()
        prev = None
        for epoch, pred in per.items():
            changes.setdefault(epoch, 0)
            compared.setdefault(epoch, 0)
            if prev is not None:
                compared[epoch] += 1
                changes[epoch] += int(pred != prev)
            prev = pred
    return changes, compared


def test_prediction_changes_match_a_reference_with_repeats_and_gaps(tmp_path):
    from analysis_fixtures import noisy_rows, write_run

    from gwa_diag.analysis.stopping import prediction_changes

    rows, _, _ = noisy_rows(n=120, epochs=6, seed=3, repeats=0.2, gaps=0.1)
    path = write_run(tmp_path / "run", rows, num_classes=4, ranks=2)
    got = prediction_changes(path)
    changes, compared = _reference_changes(rows)
    assert list(got["epoch"]) == sorted(changes)
    assert dict(zip(got["epoch"], got["changes"])) == changes
    assert dict(zip(got["epoch"], got["compared"])) == compared
    assert got["compared"].iloc[0] == 0 and got["changes"].sum() > 0


def _settling_run(tmp_path):
    """40 samples, 12 epochs: predictions settle (fewer changes) until epoch 6, then churn;
    GWA peaks at epoch 6, evaluation accuracy at epoch 7. Returns (path, gwa, eval acc)."""
    from analysis_fixtures import trajectory_rows, write_run

    rng = np.random.default_rng(4)
    n, epochs = 40, 12
    label = {i: i % 4 for i in range(n)}
    churn = [0.6, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02, 0.1, 0.2, 0.3, 0.4, 0.5]
    spec, pred = {}, {i: int(rng.integers(0, 4)) for i in range(n)}
    for e in range(epochs):
        for i in range(n):
            if rng.random() < churn[e]:
                pred[i] = (pred[i] + 1) % 4
            spec.setdefault(i, []).append({"epoch": e, "pred": pred[i], "alignment": 0.05 * e - 0.2})
    rows = trajectory_rows(spec, label=label)
    curve = [math.exp(-(((e - 6) / 2) ** 2)) for e in range(epochs)]
    acc = [0.3 + 0.4 * math.exp(-(((e - 7) / 3) ** 2)) for e in range(epochs)]
    path = write_run(tmp_path / "run", rows, num_classes=4, gwa=dict(enumerate(curve)),
                     extra_epoch={e: {"eval_acc": acc[e]} for e in range(epochs)}, meta={"config": {"epochs": epochs}})
    return path, curve, acc


def test_stopping_reports_trust_labelwave_and_the_evaluation_correlation(tmp_path):
    from gwa_diag.analysis.stopping import stopping

    path, curve, acc = _settling_run(tmp_path)
    result = stopping(path)
    assert result.gwa.epoch == 6 and result.trust.level == "clear"
    assert result.labelwave.epoch is not None and 5 <= result.labelwave.epoch <= 8
    assert result.eval_acc["best_epoch"] == 7 and result.eval_acc["gwa"] == pytest.approx(acc[6])
    assert result.eval_correlation == pytest.approx(rank_correlation(curve, acc))
    text = "\n".join(result.lines())
    assert "trust in the GWA choice: clear" in text and "LabelWave" in text and "rank correlation" in text


def test_the_report_states_trust_labelwave_and_the_correlation(tmp_path):
    import json

    from gwa_diag import analyze, write_report

    path, curve, acc = _settling_run(tmp_path)
    report = write_report(path)
    md = (path / "analysis" / "report.md").read_text()
    assert "Trust in the GWA choice: clear" in md and "LabelWave" in md and "rank correlation" in md
    saved = json.loads((path / "analysis" / "report.json").read_text())["stopping"]
    stop = analyze(path).stopping
    assert saved["trust"]["level"] == "clear" and saved["labelwave"]["epoch"] == stop.labelwave.epoch
    assert saved["eval_correlation"] == pytest.approx(rank_correlation(curve, acc))
    assert report["stopping"]["eval_acc"]["best_epoch"] == 7


def test_a_clear_peak_after_memorisation_began_is_not_trusted():
    rng = np.random.default_rng(0)
    curve = [math.exp(-(((e - 15) / 5) ** 2)) + 0.01 * rng.standard_normal() for e in EPOCHS]
    selected = select_epoch(EPOCHS, curve)
    memorised = Phase(True, onset=10, plateau=5, noise=0.3, crossing=10, confirmed=12, reason="memorised")
    trust = assess_choice(EPOCHS, curve, selected, memorised)
    assert trust.level == "weak" and any("memorising" in r and "epoch 10" in r for r in trust.reasons)
    later = Phase(True, onset=20, plateau=12, noise=0.3, crossing=20, confirmed=22, reason="memorised")
    assert assess_choice(EPOCHS, curve, selected, later).level == "clear"  # chosen before the onset


@pytest.mark.parametrize("falls", [True, False], ids=["accuracy-falls", "accuracy-rises"])
def test_the_weights_from_before_memorisation_are_compared_on_the_evaluation_set(tmp_path, falls):
    from analysis_fixtures import noisy_rows, write_run
    from test_phase import memorising_fit

    from gwa_diag.analysis.stopping import stopping

    fit, share = memorising_fit(onset=9)  # plateau at epoch 7
    rows, _, clean = noisy_rows(n=200, epochs=len(fit), seed=4)
    # Accuracy that falls after the plateau (memorising hurt) or keeps rising (it did not).
    acc = [0.5 + (0.02 * min(e, 7) - (0.03 * (e - 7) if e > 7 else 0) if falls else 0.01 * e) for e in range(len(fit))]
    extra = {e: {"train_acc": fit[e], "contradicted": share[e], "eval_acc": acc[e]} for e in range(len(fit))}
    # As the engine leaves it: the kept weights and run.json's record of them.
    record = {"kept_epoch": 7, "checkpoint": "checkpoints/before_memorisation.pt"}
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, extra_epoch=extra,
                     meta={"memorisation": record})
    (path / "checkpoints").mkdir(exist_ok=True)
    (path / "checkpoints" / "before_memorisation.pt").write_bytes(b"weights")
    result = stopping(path)
    assert result.eval_acc["kept_epoch"] == 7 and result.eval_acc["kept"] == pytest.approx(acc[7])
    text = "\n".join(result.lines())
    assert f"before memorisation {acc[7]:.3f} (epoch 7)" in text
    assert ("before_memorisation.pt is the better model" in text) == falls
    assert ("last.pt is the better model" in text) == (not falls)


@pytest.mark.parametrize("kept_file", [True, False], ids=["engine-run", "own-loop"])
def test_without_an_evaluation_set_the_last_weights_are_advised(tmp_path, kept_file):
    from analysis_fixtures import noisy_rows, write_run
    from test_phase import memorising_fit

    from gwa_diag.analysis.stopping import stopping

    fit, share = memorising_fit(onset=9)  # plateau at epoch 7
    rows, _, clean = noisy_rows(n=200, epochs=len(fit), seed=4)
    extra = {e: {"train_acc": fit[e], "contradicted": share[e]} for e in range(len(fit))}
    record = {"kept_epoch": 7, "checkpoint": "checkpoints/before_memorisation.pt"}
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, extra_epoch=extra,
                     meta={"memorisation": record})
    if kept_file:
        (path / "checkpoints").mkdir(exist_ok=True)
        (path / "checkpoints" / "before_memorisation.pt").write_bytes(b"weights")
    result = stopping(path)
    assert result.eval_acc == {}
    # A run from the user's own loop has no kept weights to talk about.
    assert result.kept_epoch == (7 if kept_file else None)
    advice = [line for line in result.lines() if "before_memorisation.pt" in line]
    assert len(advice) == int(kept_file)
    if kept_file:
        assert "(epoch 7)" in advice[0] and "use checkpoints/last.pt" in advice[0]
        assert result.as_dict()["kept_epoch"] == 7
