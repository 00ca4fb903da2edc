"""Per-sample summaries: hand-computed trajectories, repeated presentations, a slow pandas
reference on messy runs (repeats, gaps, NaN rows, several ranks, sparse ids), windows,
early-stopping fallback and runs without complete epochs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import noisy_rows, reference_summary, trajectory_rows, write_run
from gwa_diag.checks import InputError, Window, values
from gwa_diag.store import RunWriter, open_run
from gwa_diag.analysis.phase import WINDOWS, el2n_epoch, selected_epoch, window_epochs
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.analysis import summaries
from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.summaries import summarize
from gwa_diag.store import AnalysisError


def _three_samples(tmp_path, **kwargs):
    """Samples 0, 1, 2 over epochs 0-3 with known correctness and margins."""
    label = {0: 1, 1: 0, 2: 2}
    c, w = "correct", "wrong"
    pattern = {0: [c, w, c, w], 1: [w, c, c, c], 2: [c, c, w, w]}
    margins = {0: [0.5, -0.2, 0.4, -1.0], 1: [-0.3, 0.1, 0.2, 0.9], 2: [1.0, 0.8, -0.5, -0.7]}
    align = {0: [0.2, -0.1, 0.3, -0.4], 1: [-0.2, 0.1, 0.2, 0.5], 2: [0.4, 0.3, -0.2, -0.6]}
    spec = {}
    for sid in label:
        entries = []
        for e in range(4):
            pred = label[sid] if pattern[sid][e] == c else (label[sid] + 1) % 3
            entries.append({"epoch": e, "margin": margins[sid][e], "alignment": align[sid][e], "pred": pred,
                            "p_label": 0.7 if pred == label[sid] else 0.2, "p_pred": 0.7})
        spec[sid] = entries
    rows = trajectory_rows(spec, label=label)
    write_run(tmp_path / "run", rows, num_classes=3, **kwargs)
    return tmp_path / "run", margins, align


def test_forgetting_and_aum_match_hand_computation(tmp_path):
    path, margins, align = _three_samples(tmp_path)
    s = summarize(path, window="all")
    # correct -> wrong transitions: sample 0: C W C W -> 2; sample 1: W C C C -> 0; sample 2: C C W W -> 1
    assert s.loc[[0, 1, 2], "forgetting"].tolist() == [2, 0, 1]
    for sid in range(3):
        assert s.loc[sid, "aum"] == pytest.approx(-np.mean(margins[sid]), abs=1e-6)
        assert s.loc[sid, "align_mean"] == pytest.approx(-np.mean(align[sid]), abs=1e-6)
        assert s.loc[sid, "align_last"] == pytest.approx(-align[sid][3], abs=1e-6)
        assert s.loc[sid, "neg_frac"] == pytest.approx(np.mean(np.array(align[sid]) < 0))
    # second half = epochs 2, 3
    half = summarize(path)
    assert half.attrs["window_epochs"] == [2, 3]
    assert half.loc[0, "aum"] == pytest.approx(-(0.4 - 1.0) / 2, abs=1e-6)
    assert half.loc[1, "confidence"] == pytest.approx(-0.7, abs=1e-6)
    assert half.loc[2, "variability"] == pytest.approx(0.0, abs=1e-6)
    assert half.loc[0, "variability"] == pytest.approx(0.25, abs=1e-6)  # p_label 0.7, 0.2


def test_el2n_uses_the_documented_lower_bound(tmp_path):
    path, _, _ = _three_samples(tmp_path)
    s = summarize(path)
    assert s.attrs["el2n_epoch"] == 1  # 10% of 4 epochs rounds to 0, but never the first epoch
    # Epoch 1: sample 0 wrong (p_label 0.2, p_pred 0.7, C = 3): sqrt(0.8^2 + 0.7^2 + 0.1^2)
    assert s.loc[0, "el2n"] == pytest.approx(math.sqrt(0.8**2 + 0.7**2 + 0.1**2), abs=1e-6)
    # sample 1 right (p_label 0.7): sqrt(0.3^2 + 0.3^2 / 2)
    assert s.loc[1, "el2n"] == pytest.approx(math.sqrt(0.09 + 0.09 / 2), abs=1e-6)
    assert summarize(path, el2n_at=3).attrs["el2n_epoch"] == 3
    with pytest.raises(ValueError, match="not a complete epoch"):
        summarize(path, el2n_at=7)


def test_repeated_presentations_are_averaged_per_epoch(tmp_path):
    label = {0: 1, 1: 0}
    spec = {
        0: [
            {"epoch": 0, "alignment": 0.1, "step": 1},
            {"epoch": 1, "alignment": 0.2, "step": 5, "pred": 0, "p_pred": 0.9},
            {"epoch": 1, "alignment": 0.6, "step": 9, "pred": 1},
        ],
        1: [{"epoch": 0, "alignment": 0.3, "step": 2}, {"epoch": 1, "alignment": 0.5, "step": 6}],
    }
    path = write_run(tmp_path / "run", trajectory_rows(spec, label=label), num_classes=2)
    s = summarize(path, window="all")
    assert s.attrs["repeats_averaged"] is True
    # epoch means first: (0.1 + mean(0.2, 0.6)) / 2, not the mean of the three rows
    assert s.loc[0, "align_mean"] == pytest.approx(-(0.1 + 0.4) / 2, abs=1e-6)
    assert s.loc[0, "align_last"] == pytest.approx(-0.4, abs=1e-6)
    assert s.loc[0, "n_epochs"] == 2 and s.loc[0, "n_window"] == 2
    # the epoch's prediction is its last presentation (step 9: correct), so no forgetting
    assert s.loc[0, "forgetting"] == 0
    assert s.loc[1, "align_mean"] == pytest.approx(-0.4, abs=1e-6)


@pytest.mark.parametrize(
    "messy",
    [
        {},
        {"repeats": 0.2, "gaps": 0.15, "nans": 0.03},
        {"gaps": 0.3, "id_offset": 10**9, "id_stride": 10**6},  # ids too sparse for dense slots
    ],
    ids=["clean", "repeats-gaps-nans", "sparse-ids"],
)
def test_summaries_match_a_slow_reference(tmp_path, messy):
    rows, given, clean = noisy_rows(n=100, epochs=7, num_classes=4, seed=3, **messy)
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, ranks=2)
    for window in ("second_half", "after_warmup", "all"):
        s = summarize(path, window=window)
        ref = reference_summary(
            rows, window=window_epochs(list(range(7)), window), selected=s.attrs["selected_epoch"],
            last=6, el2n_epoch=s.attrs["el2n_epoch"], num_classes=4,
        )
        assert s.attrs["repeats_averaged"] == bool(messy.get("repeats"))
        assert list(s.index) == sorted(ref.index)
        ref = ref.loc[s.index]
        for col in ["label", "n_epochs", "n_window", "forgetting"]:
            np.testing.assert_array_equal(s[col].to_numpy(), ref[col].to_numpy(), err_msg=f"{window}: {col}")
        for col in ["align_mean", "align_selected", "align_last", "neg_frac", "aum", "loss_mean", "confidence",
                    "variability", "el2n", "alignment_selected", "suggested_prob"]:
            np.testing.assert_allclose(
                s[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-5, atol=1e-6, err_msg=f"{window}: {col}"
            )
        suggested = s["suggested_label"].astype("float").fillna(-1).tolist()
        assert suggested == ref["suggested_label"].astype("float").fillna(-1).tolist(), window
        np.testing.assert_array_equal(s["clean_label"].to_numpy(int), [clean[i] for i in s.index])


def test_many_classes_take_the_duckdb_suggestion_path(tmp_path, monkeypatch):
    rows, given, clean = noisy_rows(n=80, epochs=6, num_classes=5, seed=4, repeats=0.1)
    path = write_run(tmp_path / "run", rows, num_classes=5)
    dense = summarize(path)
    monkeypatch.setattr(summaries, "_DENSE_CLASS_CELLS", 0)
    grouped = summarize(path)
    pd.testing.assert_series_equal(dense["suggested_label"], grouped["suggested_label"])
    np.testing.assert_allclose(dense["suggested_prob"], grouped["suggested_prob"], rtol=1e-6)


def test_in_place_accumulation_for_many_samples_gives_the_same_answer(tmp_path, monkeypatch):
    rows, given, clean = noisy_rows(n=90, epochs=5, num_classes=3, seed=6, gaps=0.1, nans=0.02)
    path = write_run(tmp_path / "run", rows, num_classes=3)
    by_bincount = summarize(path)
    monkeypatch.setattr(summaries, "_BINCOUNT_MAX", 0)  # the path taken for large runs
    pd.testing.assert_frame_equal(summarize(path), by_bincount, rtol=1e-12)


@pytest.mark.parametrize("path_taken", ["dense", "duckdb"])
def test_suggested_label_ties_go_to_the_higher_mean_probability(tmp_path, monkeypatch, path_taken):
    if path_taken == "duckdb":
        monkeypatch.setattr(summaries, "_DENSE_CLASS_CELLS", 0)  # the many-classes path
    label = {0: 0, 1: 0, 2: 0}
    spec = {
        0: [{"epoch": 0, "pred": 1, "p_pred": 0.9}, {"epoch": 1, "pred": 2, "p_pred": 0.6},
            {"epoch": 2, "pred": 2, "p_pred": 0.5}, {"epoch": 3, "pred": 1, "p_pred": 0.8}],
        # A tie where the higher class has a slightly higher mean p(pred): it must win.
        1: [{"epoch": 0, "pred": 1, "p_pred": 0.30}, {"epoch": 1, "pred": 9, "p_pred": 0.32},
            {"epoch": 2, "pred": 1, "p_pred": 0.30}, {"epoch": 3, "pred": 9, "p_pred": 0.32}],
        # An exact tie in count and probability goes to the lower class.
        2: [{"epoch": 0, "pred": 7, "p_pred": 0.5}, {"epoch": 1, "pred": 3, "p_pred": 0.5},
            {"epoch": 2, "pred": 7, "p_pred": 0.5}, {"epoch": 3, "pred": 3, "p_pred": 0.5}],
    }
    path = write_run(tmp_path / "run", trajectory_rows(spec, label=label), num_classes=10)
    s = summarize(path, window="all")
    assert s.loc[0, "suggested_label"] == 1  # 2 votes each; class 1 has mean p 0.85 > 0.55
    assert s.loc[0, "suggested_prob"] == pytest.approx(0.85, abs=1e-6)
    assert s.loc[1, "suggested_label"] == 9 and s.loc[1, "suggested_prob"] == pytest.approx(0.32, abs=1e-6)
    assert s.loc[2, "suggested_label"] == 3


def test_only_complete_epochs_are_read(tmp_path):
    rows, given, clean = noisy_rows(n=50, epochs=5, seed=1)
    path = write_run(tmp_path / "run", rows, num_classes=4, complete=[0, 1, 2, 3])  # epoch 4 in flight
    s = summarize(path, window="all")
    assert s.attrs["last_epoch"] == 3 and s.attrs["n_epochs"] == 4
    assert (s["n_epochs"] == 4).all()


def test_selection_falls_back_to_the_last_epoch_and_says_so(tmp_path):
    rows, _, _ = noisy_rows(n=40, epochs=5, seed=2)
    path = write_run(tmp_path / "run", rows, num_classes=4, gwa={e: None for e in range(5)})
    s = summarize(path)
    assert selected_epoch(path).epoch is None
    assert s.attrs["selected_epoch"] == 4
    assert s.attrs["epochs"].selection.fallback is True
    assert "last epoch 4" in s.attrs["epochs"].selection.note
    last = rows[rows["epoch"] == 4].set_index("sample_id")["alignment"]
    np.testing.assert_allclose(s["alignment_selected"], last.loc[s.index], rtol=1e-6)


def test_selected_epoch_reads_mode_and_planned_epochs_from_run_json(tmp_path):
    rows, _, _ = noisy_rows(n=40, epochs=6, seed=2)
    # finetune: falls, first local minimum at epoch 2, then the highest after it is epoch 4
    gwa = {0: 0.9, 1: 0.5, 2: 0.3, 3: 0.6, 4: 0.8, 5: 0.7}
    path = write_run(tmp_path / "run", rows, num_classes=4, gwa=gwa, meta={"config": {"mode": "finetune", "epochs": 6}})
    result = selected_epoch(path)
    assert (result.epoch, result.mode) == (4, "finetune")
    assert selected_epoch(path, mode="scratch").epoch == 0
    assert summarize(path).attrs["selected_epoch"] == 4


def test_windows():
    assert window_epochs(list(range(40)), "second_half") == list(range(20, 40))
    assert window_epochs(list(range(40)), "after_warmup") == list(range(4, 40))
    assert window_epochs([5], "after_warmup") == [5]
    assert window_epochs([0, 1, 2], "second_half") == [1, 2]
    assert window_epochs([3, 1, 2], "all") == [1, 2, 3]
    assert el2n_epoch(list(range(200))) == 20
    assert el2n_epoch([0]) == 0
    with pytest.raises(InputError, match="window 'late'.*'second_half', 'after_warmup', 'all'"):
        AnalysisOptions(window="late")


def test_unknown_options_raise(tmp_path):
    rows, _, _ = noisy_rows(n=20, epochs=3, seed=2)
    path = write_run(tmp_path / "run", rows, num_classes=4)
    with pytest.raises(InputError, match="window 'late'"):
        summarize(path, window="late")
    with pytest.raises(InputError, match="mode 'pretrain'"):
        summarize(path, mode="pretrain")


def test_window_descriptions_cover_exactly_the_window_names():
    # WINDOWS describes each name of gwa_diag.checks.Window, the one list of valid windows.
    assert tuple(WINDOWS) == values(Window)


def test_every_scorer_is_a_documented_column_with_a_direction(tmp_path):
    rows, _, _ = noisy_rows(n=30, epochs=4, seed=5)
    s = summarize(write_run(tmp_path / "run", rows, num_classes=4))
    for name, text in SCORERS.items():
        assert name in s.columns
        assert "suspicious" in text.lower()


def test_run_without_complete_epochs_is_a_clear_error(tmp_path):
    RunWriter(tmp_path / "empty", meta={"num_classes": 3})
    with pytest.raises(AnalysisError, match="no complete epoch"):
        summarize(tmp_path / "empty")
    rows, _, _ = noisy_rows(n=20, epochs=2, seed=2)
    path = write_run(tmp_path / "inflight", rows, num_classes=4, complete=[])
    with pytest.raises(AnalysisError, match="no complete epoch"):
        summarize(path)


def test_class_count_scan_without_footer_statistics(tmp_path):
    # Parts written without Parquet statistics are scanned for the largest class instead.
    rows, _, _ = noisy_rows(n=30, epochs=2, num_classes=4, seed=9)
    path = write_run(tmp_path / "run", rows, num_classes=4)
    files = [str(f) for f in open_run(path).sample_files()]
    assert summaries._scan_max_class(files) == int(max(rows["label"].max(), rows["pred"].max()))


def _contradicted_slow(per: pd.DataFrame) -> pd.Series:
    """Per sample of one epoch's merged rows (finite ones): confidently contradicted or not."""
    threshold = per.groupby("label")["p_label"].mean()
    return (per["pred"] != per["label"]) & (per["p_pred"] >= per["pred"].map(threshold))


@pytest.mark.parametrize("messy", [{}, {"gaps": 0.15, "nans": 0.03}], ids=["clean", "gaps-nans"])
def test_a_window_that_ends_before_the_last_epoch_still_reads_every_epoch(tmp_path, messy):
    # A run that memorised reads its scores from the epochs before the onset; forgetting, the
    # epochs present and the repeat check still cover the whole run (a slow reference says).
    from test_phase import memorising_fit

    fit, share = memorising_fit(onset=9)
    epochs = len(fit)
    rows, _, clean = noisy_rows(n=120, epochs=epochs, num_classes=4, seed=8, **messy)
    extra = {e: {"train_acc": fit[e], "contradicted": share[e]} for e in range(epochs)}
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, extra_epoch=extra)
    s = summarize(path)
    choices = s.attrs["epochs"]
    assert choices.phase.memorised and choices.window == tuple(range(1, 9))
    assert not s.attrs["repeats_averaged"]
    ref = reference_summary(rows, window=list(choices.window), selected=s.attrs["selected_epoch"], last=epochs - 1,
                            el2n_epoch=s.attrs["el2n_epoch"], num_classes=4).loc[s.index]
    for col in ["label", "n_epochs", "n_window", "forgetting"]:
        np.testing.assert_array_equal(s[col].to_numpy(), ref[col].to_numpy(), err_msg=col)
    assert s["n_epochs"].max() == epochs
    for col in ["align_mean", "aum", "confidence", "variability", "el2n", "align_last"]:
        np.testing.assert_allclose(s[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-5, atol=1e-6, err_msg=col)
    # disagreement / unfitted over the last three window epochs, contradicted_plateau at the plateau.
    finite = rows[np.isfinite(rows[["alignment", "margin", "loss", "p_label", "p_pred"]]).all(axis=1)]
    hits = {e: _contradicted_slow(finite[finite["epoch"] == e].set_index("sample_id")) for e in (6, 7, 8)}
    seen = pd.concat([h.astype(float) * 0 + 1 for h in hits.values()], axis=1).sum(axis=1)
    disagree = pd.concat([h.astype(float) for h in hits.values()], axis=1).sum(axis=1) / seen
    np.testing.assert_allclose(s["disagreement"].reindex(disagree.index), disagree, atol=1e-12)
    plateau = _contradicted_slow(finite[finite["epoch"] == choices.phase.plateau].set_index("sample_id"))
    np.testing.assert_array_equal(s["contradicted_plateau"].reindex(plateau.index), plateau.astype(float))


def test_rows_outside_the_recorded_ids_or_classes_are_planned_from_the_parts(tmp_path):
    # labels.parquet and run.json size the accumulators; parts that hold an id or a class
    # they do not know are read again with slots and classes from the parts' own footers.
    rows, given, clean = noisy_rows(n=60, epochs=5, num_classes=3, seed=2)
    reference = summarize(write_run(tmp_path / "ref", rows, num_classes=3, clean_labels=clean))
    fewer = {i: c for i, c in clean.items() if i < 50}  # labels.parquet misses ids 50-59
    narrow = write_run(tmp_path / "narrow", rows, num_classes=3, clean_labels=fewer, labels={i: given[i] for i in fewer})
    wide = rows.assign(pred=np.where(rows["sample_id"] == 3, 4, rows["pred"]))  # a class run.json does not name
    wider = write_run(tmp_path / "wider", wide, num_classes=3, clean_labels=clean)
    out = summarize(narrow)
    scores = list(SCORERS)
    pd.testing.assert_frame_equal(out[scores], reference[scores])
    assert out.attrs["num_classes"] == 3
    assert summarize(wider).attrs["num_classes"] == 5
