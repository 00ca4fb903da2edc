"""The app's Audit page, the relabel queue's stopping status and the Overview's audit line
(streamlit.testing.v1.AppTest on small synthetic runs), and the page's navigation rules."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from gwa_diag.analysis import relabel  # noqa: E402
from gwa_diag.analysis.audit import draw_sample, latest_answers, read_design, record_answers, review_status  # noqa: E402
from gwa_diag.analysis.pipeline import analyze  # noqa: E402
from gwa_diag.app.views.audit import current_sample, step_back, step_forward  # noqa: E402
from test_app import _app as _open_app, _clean  # noqa: E402  (the app tests' own helpers)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from synthetic import CLASS_NAMES, write_synthetic_run  # noqa: E402

N_SAMPLES, N_EPOCHS, N_DRAWN = 60, 4, 30
# Words that would tell the reviewer what the model thinks of the sample shown.
HINTS = ("score", "rank", "suggest", "p_wrong", "probab", "suspic", "alignment", "margin")


def _run(tmp_path: Path, name: str = "run", seed: int = 1) -> Path:
    return write_synthetic_run(tmp_path / name, samples=N_SAMPLES, epochs=N_EPOCHS, noise_rate=0.3, seed=seed)


def _drawn_run(tmp_path: Path) -> Path:
    """A run with an audit of N_DRAWN drawn (seed 3), nothing answered yet."""
    run = _run(tmp_path)
    draw_sample(run, N_DRAWN, seed=3)
    return run


def _given(run: Path) -> pd.Series:
    """The given label of each drawn sample, by sample id."""
    return read_design(run).frame["given"]


def _truth(run: Path) -> pd.Series:
    return pd.read_parquet(run / "labels.parquet").set_index("sample_id")["clean_label"]


def _app(run: Path, monkeypatch, page: str = "audit") -> AppTest:
    """The app on ``run``, opened at ``page`` (the Audit page unless told)."""
    return _open_app(run, monkeypatch, page=page)


def _main_text(at: AppTest) -> str:
    """Everything the main area says (the sidebar's page and window choices left out)."""
    main = at.main
    parts = [e.body for group in (main.markdown, main.caption, main.info, main.success, main.warning, main.subheader)
             for e in group]
    parts += [b.label for b in main.button] + [m.label + " " + str(m.value) for m in main.metric]
    return "\n".join(parts)


def _current(at: AppTest) -> int | None:
    keys = [b.key for b in at.button if b.key and b.key.startswith("audit_right_")]
    return int(keys[0].rsplit("_", 1)[1]) if keys else None


def _order(run: Path) -> list[int]:
    from gwa_diag.analysis.audit import sheet_frame

    return [int(s) for s in sheet_frame(run, read_design(run))["sample_id"]]


def _answer_truly(at: AppTest, truth: pd.Series, given: pd.Series) -> int:
    """Answer the sample shown with its true label, as a reviewer would: "right" when it
    is the given one, else the true class's button. Returns the sample id."""
    sample = _current(at)
    assert sample is not None
    clean = int(truth[sample])
    key = f"audit_right_{sample}" if clean == int(given[sample]) else f"audit_class_{clean}_{sample}"
    at.button(key=key).click().run()
    _clean(at)
    return sample


# --------------------------------------------------------------------------------------
# where the reviewer is
# --------------------------------------------------------------------------------------


def test_current_sample_follows_the_order_skips_and_comes_back():
    order = [5, 3, 9, 1]
    assert current_sample(order, set(), None, set()) == 5
    assert current_sample(order, {5, 3}, None, set()) == 9
    assert current_sample(order, {5}, None, {3}) == 9  # skipped: later
    assert current_sample(order, {5, 9, 1}, None, {3}) == 3  # nothing else left: the skipped one again
    assert current_sample(order, {5, 3}, 5, set()) == 5  # revisiting an answered one
    assert current_sample(order, {5, 3, 9, 1}, None, set()) is None
    assert current_sample(order, set(), 42, set()) == 5  # not in the sample (grown or another audit)


def test_back_and_forward_walk_the_answers_then_return_to_the_first_open_one():
    order = [5, 3, 9, 1]
    assert step_back(order, 9, {5, 3}) == 3
    assert step_back(order, 5, {5}) == 5  # the first stays the first
    assert step_back(order, None, {5, 3, 9, 1}) == 1  # from the end: the last answered
    assert step_back(order, None, set()) is None
    assert step_forward(order, 5, {5, 3}) == 3
    assert step_forward(order, 3, {5, 3}) is None  # 9 has no answer: back to answering
    assert step_forward(order, 1, {5, 3, 9, 1}) is None


# --------------------------------------------------------------------------------------
# the Audit page
# --------------------------------------------------------------------------------------


def test_without_a_design_the_page_says_how_and_draws_one(tmp_path, monkeypatch):
    run = _run(tmp_path)
    at = _app(run, monkeypatch)
    _clean(at)
    assert f"gwa-diag audit {run.resolve()} --n 200" in _main_text(at)
    assert at.number_input(key="audit_n").value == 60  # at most the run's samples
    at.number_input(key="audit_n").set_value(N_DRAWN)
    at.button(key="audit_draw").click().run()
    _clean(at)
    design = read_design(run)
    assert design is not None and design.n == N_DRAWN
    text = _main_text(at)
    assert f"0 of {N_DRAWN} answered" in text
    # The first sample of the sheet's random order, its image and its given label.
    first = _order(run)[0]
    assert _current(at) == first
    assert f"Given label: {int(design.frame.loc[first, 'given'])} {CLASS_NAMES[int(design.frame.loc[first, 'given'])]}" \
        in text
    assert len(at.main.get("image")) == 1
    assert "answer at least one sample in every stratum" in text and not re.search(r"95% interval \d", text)


def test_answers_are_saved_at_once_and_survive_a_restart(tmp_path, monkeypatch):
    run = _drawn_run(tmp_path)
    order = _order(run)
    given = _given(run)
    at = _app(run, monkeypatch)
    _clean(at)
    first = _current(at)
    at.button(key=f"audit_right_{first}").click().run()
    _clean(at)
    assert latest_answers(run)["verified_label"].to_dict() == {first: int(given[first])}
    second = _current(at)
    assert second == order[1]
    other = (int(given[second]) + 1) % 10
    at.button(key=f"audit_class_{other}_{second}").click().run()
    _clean(at)
    assert latest_answers(run)["verified_label"].to_dict() == {first: int(given[first]), second: other}
    assert len(list((run / "audit" / "answers").glob("*.parquet"))) == 2  # one file per answer
    assert f"2 of {N_DRAWN} answered" in _main_text(at)

    # A new app process (a reload, a crash): the answers are there and it goes on from the third.
    restarted = _app(run, monkeypatch)
    _clean(restarted)
    assert f"2 of {N_DRAWN} answered" in _main_text(restarted)
    assert _current(restarted) == order[2]


def test_two_tabs_lose_no_answer_and_the_latest_wins(tmp_path, monkeypatch):
    run = _drawn_run(tmp_path)
    given = _given(run)
    tab_a, tab_b = _app(run, monkeypatch), _app(run, monkeypatch)
    sample = _current(tab_a)
    assert _current(tab_b) == sample
    tab_a.button(key=f"audit_right_{sample}").click().run()
    other = (int(given[sample]) + 3) % 10
    tab_b.button(key=f"audit_class_{other}_{sample}").click().run()
    _clean(tab_a), _clean(tab_b)
    files = sorted((run / "audit" / "answers").glob("*.parquet"))
    assert len(files) == 2
    assert sorted(pd.concat(pd.read_parquet(f) for f in files)["verified_label"]) == sorted([int(given[sample]), other])
    assert latest_answers(run).loc[sample, "verified_label"] == other
    # Each tab reads where the audit stands from disk: both go on with the next open sample.
    tab_a.run()
    assert _current(tab_a) == _current(tab_b) != sample


def test_back_shows_the_answer_and_a_new_one_replaces_it(tmp_path, monkeypatch):
    run = _drawn_run(tmp_path)
    order = _order(run)
    given = _given(run)
    at = _app(run, monkeypatch)
    at.button(key=f"audit_right_{order[0]}").click().run()
    at.button(key=f"audit_right_{order[1]}").click().run()
    assert _current(at) == order[2]
    at.button(key=f"audit_back_{order[2]}").click().run()
    _clean(at)
    assert _current(at) == order[1]
    assert any("Your answer: the label is right" in s.body for s in at.main.success)
    changed = (int(given[order[1]]) + 1) % 10
    at.button(key=f"audit_class_{changed}_{order[1]}").click().run()
    _clean(at)
    assert latest_answers(run).loc[order[1], "verified_label"] == changed
    assert _current(at) == order[2]  # back to the first sample without an answer
    # Back twice, then Next over the answers returns to answering.
    at.button(key=f"audit_back_{order[2]}").click().run()
    at.button(key=f"audit_back_{order[1]}").click().run()
    assert _current(at) == order[0]
    at.button(key=f"audit_next_{order[0]}").click().run()
    assert _current(at) == order[1]
    at.button(key=f"audit_next_{order[1]}").click().run()
    assert _current(at) == order[2]
    assert len(latest_answers(run)) == 2


def test_skip_leaves_a_sample_for_the_end(tmp_path, monkeypatch):
    run = _drawn_run(tmp_path)
    order = _order(run)
    at = _app(run, monkeypatch)
    at.button(key=f"audit_next_{order[0]}").click().run()
    _clean(at)
    assert _current(at) == order[1] and len(latest_answers(run)) == 0
    # Every other sample answered on disk: the skipped one comes back.
    given = _given(run)
    rest = order[1:]
    record_answers(run, pd.DataFrame({"sample_id": rest, "verified_label": given.reindex(rest).to_numpy()}), source="test")
    at.run()
    assert _current(at) == order[0]
    at.button(key=f"audit_right_{order[0]}").click().run()
    _clean(at)
    assert _current(at) is None and "Every drawn sample has an answer" in _main_text(at)


def test_the_page_shows_no_hint_of_what_the_model_thinks(tmp_path, monkeypatch):
    run = _drawn_run(tmp_path)
    truth, given = _truth(run), _given(run)
    ranking = analyze(run).ranking
    order = _order(run)
    at = _app(run, monkeypatch)
    for _ in range(6):
        sample = _current(at)
        text = _main_text(at)
        for word in HINTS:
            assert word not in text.lower(), (word, text)
        # Beside the image: where it is in the sheet, its id and its given label, nothing
        # else (the class buttons list every class; the given one is marked as given).
        g = int(given[sample])
        facts = [m.body for m in at.main.markdown]
        assert facts == [f"Sample **{order.index(sample) + 1} of {N_DRAWN}** · id {sample}",
                         f"### Given label: {g} {CLASS_NAMES[g]}", "**Wrong? The right class is:**"], facts
        assert int(ranking.loc[sample, "rank"]) >= 1  # there was a rank and a suggestion to leak
        _answer_truly(at, truth, given)


def test_the_interval_appears_once_every_stratum_has_an_answer(tmp_path, monkeypatch):
    run = _run(tmp_path)
    design = draw_sample(run, N_DRAWN, seed=3)
    truth = _truth(run)
    drawn = design.drawn
    # Every stratum but the last answered (from the truth), on disk.
    some = drawn[drawn["stratum"] < drawn["stratum"].max()].index
    record_answers(run, pd.DataFrame({"sample_id": some, "verified_label": truth.reindex(some).to_numpy()}),
                   source="test")
    at = _app(run, monkeypatch)
    _clean(at)
    text = _main_text(at)
    assert f"{len(some)} of {N_DRAWN} answered" in text
    assert "1 stratum(s) without an answer" in text and not re.search(r"95% interval \d", text)
    # Answer in the page until the last stratum has one: then the interval, as analyze() says it.
    given = design.frame["given"]
    while True:
        sample = _answer_truly(at, truth, given)
        if design.frame.loc[sample, "stratum"] == drawn["stratum"].max():
            break
    text = _main_text(at)
    expected = analyze(run).audit
    assert expected.count is not None
    assert re.search(r"95% interval \d", text)
    assert f"{expected.count.estimate:,.0f} (95% interval {expected.count.low:,.0f}-{expected.count.high:,.0f})" in text


def test_growing_the_sample_keeps_every_answer(tmp_path, monkeypatch):
    run = _drawn_run(tmp_path)
    at = _app(run, monkeypatch)
    first = _current(at)
    at.button(key=f"audit_right_{first}").click().run()
    at.number_input(key="audit_grow_n").set_value(40)
    at.button(key="audit_grow").click().run()
    _clean(at)
    design = read_design(run)
    assert design.n == 40 and first in design.drawn.index
    assert list(latest_answers(run).index) == [first]
    assert "1 of 40 answered" in _main_text(at) and _current(at) != first


def test_empty_run_says_why(tmp_path, monkeypatch):
    from gwa_diag.store import RunWriter

    empty = tmp_path / "empty"
    RunWriter(empty, meta={"num_classes": 10, "class_names": CLASS_NAMES, "config": {"epochs": 5}})
    at = _app(empty, monkeypatch)
    _clean(at)
    assert "No complete epoch yet" in _main_text(at)


# --------------------------------------------------------------------------------------
# the relabel queue and the Overview
# --------------------------------------------------------------------------------------


def test_relabel_queue_says_when_the_review_can_stop(tmp_path, monkeypatch):
    run = _run(tmp_path)
    at = _app(run, monkeypatch, page="queue")
    _clean(at)
    assert "no answered audit yet" in _main_text(at)

    design = draw_sample(run, N_DRAWN, seed=3)
    truth = _truth(run)
    drawn = design.drawn.index
    record_answers(run, pd.DataFrame({"sample_id": drawn, "verified_label": truth.reindex(drawn).to_numpy()}),
                   source="test")
    at.run()
    _clean(at)
    assert "No review yet" in _main_text(at)

    # A review of the top 40 of the ranking, decided from the truth.
    ranking = analyze(run).ranking
    for sid in ranking.index[:40]:
        label, clean = int(ranking.loc[sid, "label"]), int(truth[sid])
        relabel.record_decision(run, int(sid), "fine" if clean == label else "relabel",
                                new_label=None if clean == label else clean, given_label=label, num_classes=10)
    bound = review_status(run, analyze(run).audit, ranking.index, target=0.9)
    assert bound is not None and bound.reviewed == 40 and bound.recall_low >= 0.5
    at.run()
    _clean(at)
    metrics = {m.label: m.value for m in at.main.metric}
    assert metrics["Reviewed from the top"] == "40" and metrics["Wrong labels found"] == str(bound.found)
    assert metrics["Recall"] == f"{bound.recall:.0%}"
    text = _main_text(at)
    assert (f"recall {bound.recall:.0%}, at least {bound.recall_low:.0%}" in text
            and f"Estimated to remain: {bound.remaining.estimate:,.0f} (95% interval" in text)
    assert at.number_input(key="queue_target").value == 90
    # A target at the lower bound is passed; one above it is not.
    at.number_input(key="queue_target").set_value(int(bound.recall_low * 100)).run()
    _clean(at)
    assert any("has passed the" in s.body and "the review can stop" in s.body for s in at.main.success)
    if bound.recall_low < 1.0:
        at.number_input(key="queue_target").set_value(100).run()
        assert not any("has passed the" in s.body for s in at.main.success)
        assert any("Keep reviewing" in i.body and "below the 100% target" in i.body for i in at.main.info)


def test_overview_has_the_audit_line_beside_the_estimate(tmp_path, monkeypatch):
    run = _run(tmp_path)
    at = _app(run, monkeypatch, page="overview")
    _clean(at)
    assert f"gwa-diag audit {run.resolve()} --n 200" in _main_text(at)
    design = draw_sample(run, N_DRAWN, seed=3)
    at.run()
    assert "has no answer yet" in _main_text(at)
    truth = _truth(run)
    drawn = design.drawn.index
    record_answers(run, pd.DataFrame({"sample_id": drawn, "verified_label": truth.reindex(drawn).to_numpy()}),
                   source="test")
    at.run()
    _clean(at)
    line = analyze(run).audit.line()
    assert any(line in s.body for s in at.main.success)
    assert "Estimated wrong labels" in {m.label for m in at.main.metric}  # the recording's estimate stays
