"""Ranking order, flag rules, the suspects file and option validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gwa_diag.analysis.phase import EpochChoices, EpochSelection, TrainingPhase
from gwa_diag.phase_rule import Phase
from gwa_diag.analysis.rank import RULES, flag, flag_ranking, rank, read_suspects, write_suspects
from gwa_diag.checks import InputError, Rule, values


def _summary() -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "label": [0, 1, 2, 0, 1, 2],
            "suggested_label": pd.array([1, 1, pd.NA, 2, 0, 2], dtype="Int64"),
            "suggested_prob": [0.8, 0.9, np.nan, 0.55, 0.7, 0.6],
            "alignment_selected": [-0.31, 0.2, -0.05, 0.4, np.nan, -0.5],
            "align_mean": [0.5, 0.1, 0.5, np.nan, 0.5, 0.9],
            "aum": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        },
        index=pd.Index([40, 10, 30, 20, 5, 50], name="sample_id"),
    )
    frame.attrs = {"selected_epoch": 12, "epochs": _choices(fallback=False)}
    return frame


def _choices(*, fallback: bool) -> EpochChoices:
    selection = EpochSelection(epoch=None if fallback else 12, used_epoch=12, fallback=fallback, reason="a reason",
                               mode="scratch", note="a note")
    never = TrainingPhase(Phase(False, None, None, None, None, None, "never"), pd.DataFrame())
    return EpochChoices(epochs=tuple(range(13)), window_name="second_half", window=tuple(range(6, 13)),
                        selection=selection, el2n_epoch=1, disagreement_epochs=(10, 11, 12), phase=never)


def test_rank_orders_most_suspicious_first_with_stable_ties_and_nan_last():
    ranked = rank(_summary(), scorer="align_mean")
    # 0.9 first; the three 0.5 ties by ascending sample_id (5, 30, 40); NaN last
    assert ranked.index.tolist() == [50, 5, 30, 40, 10, 20]
    assert ranked["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert ranked["scorer"].unique().tolist() == ["align_mean"]
    assert ranked.attrs["selected_epoch"] == 12
    # same answer whatever the input order
    shuffled = _summary().sample(frac=1.0, random_state=3)
    assert rank(shuffled, scorer="align_mean").index.tolist() == ranked.index.tolist()


def test_flag_negative_uses_the_selected_epoch_alignment():
    flagged = flag(_summary(), rule="negative", scorer="aum")
    assert flagged.index.tolist() == [50, 30, 40]  # aum 6, 3, 1; NaN alignment not flagged
    assert flagged.loc[40, "reason"] == "alignment -0.310 < 0 at epoch 12 (GWA-selected)"
    fallback = _summary()
    fallback.attrs["epochs"] = _choices(fallback=True)
    assert "last epoch; GWA selected none" in flag(fallback, rule="negative").iloc[0]["reason"]


def test_flag_topk_and_noise_rate():
    top = flag(_summary(), rule="topk", k=2, scorer="aum")
    assert top.index.tolist() == [50, 5]
    assert top.iloc[0]["reason"] == "rank 1 of 6 by aum (score 6), within the top 2"
    by_rate = flag(_summary(), rule="noise_rate", noise_rate=0.5, scorer="aum")
    assert by_rate.index.tolist() == [50, 5, 20]  # round(0.5 * 6) = 3
    assert "50.0% expected noise" in by_rate.iloc[0]["reason"]
    assert len(flag(_summary(), rule="topk", k=0)) == 0
    assert len(flag(_summary(), rule="topk", k=100)) == 6


def test_unknown_names_and_bad_options_raise():
    with pytest.raises(InputError, match="scorer 'nope'.*'align_mean', 'align_selected'"):
        rank(_summary(), scorer="nope")
    with pytest.raises(InputError, match="rule 'nope'.*" + ", ".join(map(repr, RULES))):
        flag(_summary(), rule="nope")
    with pytest.raises(ValueError, match="needs a whole number k"):
        flag(_summary(), rule="topk")
    with pytest.raises(ValueError, match="noise_rate in \\[0, 1\\]"):
        flag(_summary(), rule="noise_rate", noise_rate=1.5)
    with pytest.raises(ValueError, match="k applies only"):
        flag(_summary(), rule="negative", k=3)
    with pytest.raises(ValueError, match="has no 'loss_mean' column"):
        rank(_summary(), scorer="loss_mean")


def test_suspects_file_round_trips(tmp_path):
    flagged = flag(_summary(), rule="topk", k=6, scorer="align_mean")
    flagged.loc[30, "reason"] = 'odd, "quoted" reason'
    names = ["cat", "dog", "car"]
    path = write_suspects(tmp_path / "analysis" / "suspects.csv", flagged, class_names=names)
    back = read_suspects(path)
    assert back.columns.tolist() == [
        "sample_id", "given_label", "given_name", "suggested_label", "suggested_name",
        "suggested_prob", "score", "rank", "scorer", "reason",
    ]
    assert back["sample_id"].tolist() == flagged.index.tolist()
    assert back["given_name"].tolist() == [names[v] for v in flagged["label"]]
    np.testing.assert_array_equal(back["score"].to_numpy(), flagged["score"].to_numpy())  # bit-identical
    np.testing.assert_array_equal(back["suggested_prob"].to_numpy(), flagged["suggested_prob"].to_numpy())
    assert back["suggested_label"].isna().tolist() == flagged["suggested_label"].isna().tolist()
    assert back.loc[back["sample_id"] == 30, "reason"].item() == 'odd, "quoted" reason'
    assert back["rank"].tolist() == list(range(1, 7))
    # and again: reading what was read and re-written gives the same table
    again = write_suspects(tmp_path / "again.csv", flagged, class_names=names)
    pd.testing.assert_frame_equal(read_suspects(again), back)


def test_suspects_file_without_class_names(tmp_path):
    flagged = flag(_summary(), rule="negative")
    back = read_suspects(write_suspects(tmp_path / "s.csv", flagged))
    assert "given_name" not in back.columns
    assert back["sample_id"].tolist() == flagged.index.tolist()
    with pytest.raises(FileNotFoundError, match="no suspects file"):
        read_suspects(tmp_path / "missing.csv")


def test_rule_descriptions_cover_exactly_the_rule_names():
    # RULES describes each name of gwa_diag.checks.Rule, the one list of valid rules.
    assert tuple(RULES) == values(Rule)


def test_flag_ranking_flags_a_ranking_as_flag_does():
    for options in ({"rule": "negative"}, {"rule": "topk", "k": 2}, {"rule": "noise_rate", "noise_rate": 0.5}):
        ranked = rank(_summary(), scorer="aum")
        pd.testing.assert_frame_equal(flag_ranking(ranked, **options), flag(_summary(), scorer="aum", **options))
    with pytest.raises(InputError, match="noise_rate"):
        flag_ranking(rank(_summary()), rule="noise_rate", noise_rate=float("nan"))
