"""Every registered scorer, computed out of core by ``summarize``, equals its numpy function
in :mod:`gwa_diag.analysis.scorers` applied to per-sample sums computed the slow way
(pandas group-bys over the raw rows). A new scorer is checked here without a new test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis_fixtures import noisy_rows, write_run
from gwa_diag.analysis.phase import EpochChoices
from gwa_diag.analysis.scorers import SCORERS, Sums, score
from gwa_diag.analysis.summaries import summarize

FLOATS = ["alignment", "margin", "loss", "p_label"]


def _per_epoch(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (sample, epoch): numeric values averaged over finite presentations, the
    prediction and label of the last presentation."""
    r = rows.sort_values(["sample_id", "epoch", "step"]).copy()
    for col in [*FLOATS, "p_pred"]:
        r[col] = r[col].astype(np.float32).astype(np.float64)  # as the run stores them
    for col in FLOATS:
        r[col] = r[col].where(np.isfinite(r[col]))
    per = r.groupby(["sample_id", "epoch"], sort=True).agg(
        **{c: (c, "mean") for c in FLOATS}, pred=("pred", "last"), p_pred=("p_pred", "last"), label=("label", "last"),
    ).reset_index()
    per["ok"] = np.isfinite(per[[*FLOATS, "p_pred"]].astype(float)).all(axis=1)
    return per


def reference_sums(rows: pd.DataFrame, choices: EpochChoices, ids: pd.Index, num_classes: int) -> Sums:
    per = _per_epoch(rows)
    win = per[per["epoch"].isin(choices.window) & per["ok"]].copy()
    win["negative"] = (win["alignment"] < 0).astype(float)
    win["p_label_sq"] = win["p_label"] ** 2
    grouped = win.groupby("sample_id")
    sums = grouped[["alignment", "negative", "margin", "loss", "p_label", "p_label_sq"]].sum().reindex(ids, fill_value=0.0)
    n = grouped.size().reindex(ids, fill_value=0).astype(float)

    def forgetting(g: pd.DataFrame) -> int:
        right = (g.sort_values("epoch")["pred"] == g.sort_values("epoch")["label"]).to_numpy()
        return int(np.sum(right[:-1] & ~right[1:]))

    forgets = per.groupby("sample_id").apply(forgetting, include_groups=False).reindex(ids)

    def at(epoch: int, col: str, fill: float) -> np.ndarray:
        return per[per["epoch"] == epoch].set_index("sample_id")[col].reindex(ids).fillna(fill).to_numpy()

    # Confident disagreement: per epoch, class c's threshold is the mean p(label) of the
    # finite rows labelled c; a hit predicts another class c with p(pred) >= that threshold.
    near = per[per["epoch"].isin(choices.disagreement_epochs) & per["ok"]].copy()
    limits = near.groupby(["epoch", "label"])["p_label"].mean()
    t = [limits.get((e, p), np.nan) for e, p in zip(near["epoch"], near["pred"])]
    near["hit"] = ((near["pred"] != near["label"]) & (near["p_pred"].to_numpy() >= np.asarray(t))).astype(float)
    near["unfitted"] = (near["pred"] != near["label"]).astype(float)
    by_sample = near.groupby("sample_id")["hit"]
    return Sums(
        num_classes=num_classes, n=n.to_numpy(), alignment=sums["alignment"].to_numpy(),
        negative=sums["negative"].to_numpy(), margin=sums["margin"].to_numpy(), loss=sums["loss"].to_numpy(),
        p_label=sums["p_label"].to_numpy(), p_label_sq=sums["p_label_sq"].to_numpy(), forgetting=forgets.to_numpy(),
        alignment_selected=at(choices.selection.used_epoch, "alignment", np.nan),
        alignment_last=at(choices.last_epoch, "alignment", np.nan),
        el2n_p_label=at(choices.el2n_epoch, "p_label", np.nan), el2n_pred=at(choices.el2n_epoch, "pred", -1),
        el2n_label=at(choices.el2n_epoch, "label", -1), el2n_p_pred=at(choices.el2n_epoch, "p_pred", np.nan),
        contradicted=by_sample.sum().reindex(ids, fill_value=0.0).to_numpy(),
        unfitted=near.groupby("sample_id")["unfitted"].sum().reindex(ids, fill_value=0.0).to_numpy(),
        n_disagreement=by_sample.size().reindex(ids, fill_value=0).astype(float).to_numpy(),
    )


@pytest.mark.parametrize("messy", [{}, {"repeats": 0.2, "gaps": 0.15, "nans": 0.03}], ids=["clean", "repeats-gaps-nans"])
@pytest.mark.parametrize("window", ["second_half", "all"])
def test_every_scorer_equals_its_numpy_function_on_slow_sums(tmp_path, messy, window):
    rows, _, _ = noisy_rows(n=120, epochs=7, num_classes=4, seed=11, **messy)
    path = write_run(tmp_path / "run", rows, num_classes=4, ranks=2)
    summary = summarize(path, window=window)
    sums = reference_sums(rows, summary.attrs["epochs"], summary.index, num_classes=4)
    for name in SCORERS:
        expected = score(name, sums)
        np.testing.assert_allclose(summary[name].to_numpy(float), np.asarray(expected, dtype=float),
                                   rtol=1e-9, atol=1e-12, err_msg=name)


def test_disagreement_counts_confident_predictions_of_another_class():
    # Three epochs; sample 0 was predicted class 1 confidently twice, sample 1 never.
    sums = Sums(
        num_classes=3, n=np.ones(2), alignment=np.zeros(2), negative=np.zeros(2), margin=np.zeros(2),
        loss=np.zeros(2), p_label=np.zeros(2), p_label_sq=np.zeros(2), forgetting=np.zeros(2, dtype=np.int64),
        alignment_selected=np.array([-0.2, 0.3]), alignment_last=np.array([0.1, np.nan]),
        el2n_p_label=np.array([0.5, 0.2]), el2n_pred=np.array([0, 1]), el2n_label=np.array([0, 0]),
        el2n_p_pred=np.array([0.5, 0.8]), contradicted=np.array([2.0, 0.0]), unfitted=np.array([3.0, 0.0]),
        n_disagreement=np.array([3.0, 0.0]),
    )
    np.testing.assert_allclose(score("disagreement", sums), [2 / 3, np.nan])
    np.testing.assert_allclose(score("unfitted", sums), [1.0, np.nan])
    # Raw alignment: lower = more suspicious, so the score flips it.
    np.testing.assert_allclose(score("align_selected", sums), [0.2, -0.3])
    # EL2N with C = 3: pred == label -> sqrt(0.25 + 0.25 / 2); pred != label -> sqrt(0.64 + 0.64 + 0).
    np.testing.assert_allclose(score("el2n", sums), [np.sqrt(0.25 + 0.125), np.sqrt(0.64 + 0.64)])


def test_every_scorer_says_which_direction_is_suspicious():
    for name, text in SCORERS.items():
        assert "suspicious" in text.lower(), name
