"""The Streamlit app on small run directories (streamlit.testing.v1.AppTest), its data
helpers, and the ``gwa-diag app`` command."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from gwa_diag.analysis import relabel  # noqa: E402
from gwa_diag.analysis.options import AnalysisOptions  # noqa: E402
from gwa_diag.analysis.pipeline import Analysis, analyze  # noqa: E402
from gwa_diag.analysis.rank import flag_ranking, rank  # noqa: E402
from gwa_diag.store import RunWriter  # noqa: E402

from gwa_diag.app.views import jobs  # noqa: E402
from gwa_diag.app.views.images import thumbnail, thumbnails  # noqa: E402
from gwa_diag.app.views.table import Filters, apply_filters, browse_order, page_count, page_slice  # noqa: E402
from gwa_diag.app.views.detection import NO_TRUTH  # noqa: E402
from gwa_diag.app.views.grid import GRID_NAME  # noqa: E402
from gwa_diag.cli.app import app_script  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
APP = app_script()
sys.path.insert(0, str(REPO / "bench"))
from synthetic import write_synthetic_run  # noqa: E402

N_SAMPLES = 60
N_EPOCHS = 4
N_CLASSES = 10
TIMEOUT = 60


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Small runs: finished with ground truth, without ground truth, in progress, empty."""
    root = tmp_path_factory.mktemp("app-runs")
    out = {
        "truth": write_synthetic_run(root / "truth", samples=N_SAMPLES, epochs=N_EPOCHS, noise_rate=0.25, seed=1),
        "no_truth": write_synthetic_run(root / "no_truth", samples=N_SAMPLES, epochs=N_EPOCHS, seed=2,
                                        clean_labels=False),
    }
    # In progress: 3 of 6 planned epochs, and epoch 3's part written without its epoch row
    # (what a reader sees between the two writes, or after a crash there).
    progress = write_synthetic_run(root / "progress", samples=N_SAMPLES, epochs=3, seed=3)
    writer = RunWriter(progress, resume=True)
    writer.update_meta(status="running", config={**writer.meta["config"], "epochs": 6})
    (progress / "samples" / "epoch=3").mkdir()
    parts = progress / "samples"
    shutil.copy(parts / "epoch=2" / "part-0.parquet", parts / "epoch=3" / "part-0.parquet")
    out["progress"] = progress
    empty = root / "empty"
    RunWriter(empty, meta={"num_classes": N_CLASSES, "class_names": [f"c{i}" for i in range(N_CLASSES)],
                           "config": {"epochs": 5}})
    out["empty"] = empty
    return out


def _app(run: Path | str | None, monkeypatch, page: str = "overview") -> AppTest:
    if run is None:
        monkeypatch.delenv("GWA_DIAG_RUN", raising=False)
    else:
        monkeypatch.setenv("GWA_DIAG_RUN", str(run))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params["page"] = page
    return at.run()


def _clean(at: AppTest) -> None:
    """No exception element and no error box: the page rendered."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.body for e in at.error]


def _texts(at: AppTest) -> str:
    parts = [e.body for group in (at.info, at.warning, at.success, at.markdown, at.caption) for e in group]
    return "\n".join(parts)


def _images(at: AppTest) -> int:
    return len(at.get("image"))


def _charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def _grid(at: AppTest) -> list[dict]:
    """The Browse grid's cells (sample_id, src, caption, flags) as sent to the browser."""
    grids = [g for g in at.get("bidi_component") if g.proto.component_name == GRID_NAME]
    return json.loads(grids[0].proto.json)["cells"] if grids else []


def _grid_ids(at: AppTest) -> list[int]:
    return [int(c["sample_id"]) for c in _grid(at)]


def _open(at: AppTest, sample_id: int) -> AppTest:
    """What clicking a thumbnail does: open the sample (here through the id field)."""
    return at.text_input(key="browse_goto").set_value(str(sample_id)).run()


# --------------------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------------------


def test_overview_shows_curve_selection_and_metadata(runs, monkeypatch):
    run = runs["truth"]
    # Make epoch 1 undefined, as the recorder does for a degenerate distribution.
    writer = RunWriter(run, resume=True)
    epochs = pd.read_parquet(run / "epochs.parquet")
    row = epochs[epochs["epoch"] == 1].iloc[0].to_dict()
    row.update(gwa=None, valid=False, reason="kurtosis + 1.2 = 0.01 <= 0.05: GWA would explode or flip sign")
    writer.write_epoch(row)
    at = _app(run, monkeypatch)
    _clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Complete epochs"] == f"{N_EPOCHS} of {N_EPOCHS}"
    assert metrics["Samples"] == str(N_SAMPLES) and metrics["Classes"] == str(N_CLASSES)
    assert metrics["GWA-selected epoch"] != "none"
    assert "GWA is undefined at 1 epoch(s)" in _texts(at)
    # How far to trust the choice, and LabelWave's choice from the same recording.
    from gwa_diag.analysis.stopping import stopping

    expected = stopping(run)
    trust = [e.value for e in (*at.success, *at.warning) if "Trust in the GWA choice" in e.value]
    assert trust == [f"Trust in the GWA choice: {expected.trust.note().split(': ', 1)[1]}."]
    assert "LabelWave" in _texts(at)
    undefined = at.dataframe[0].value
    assert list(undefined["epoch"]) == [1] and "explode" in undefined["reason"].iloc[0]
    assert len(at.get("image")) == 4  # training phase, GWA curve, accuracy, histogram (PNGs)
    # The curve leaves a gap at the undefined epoch instead of joining across it.
    from gwa_diag.app.views.charts import defined_segments

    segments = defined_segments(pd.read_parquet(run / "epochs.parquet"))
    assert [list(part["epoch"]) for part in segments] == [[0], list(range(2, N_EPOCHS))]
    assert at.select_slider(key="overview_epoch").value in range(N_EPOCHS)
    assert "have alignment < 0" in _texts(at)
    at.select_slider(key="overview_epoch").set_value(0).run()
    _clean(at)


def test_overview_states_the_training_phase_first(monkeypatch, tmp_path):
    from analysis_fixtures import MEMORISING_EPOCHS, noisy_rows, write_run

    rows, _, clean = noisy_rows(n=N_SAMPLES, epochs=10, num_classes=4, noise=0.2, seed=4)
    run = write_run(tmp_path / "memorised", rows, num_classes=4, clean_labels=clean, extra_epoch=MEMORISING_EPOCHS,
                    meta={"status": "finished", "config": {"epochs": 10, "mode": "scratch"}})
    note = analyze(run).epoch_choices.note
    assert "epoch 6" in note and "epochs 1-5" in note
    at = _app(run, monkeypatch)
    _clean(at)
    # The note is the page's first message (a finished run has no progress banner).
    assert at.info[0].value == note[0].upper() + note[1:] + "."
    assert "Training phase" in [h.value for h in at.subheader]
    assert any("78.0%" in c.value and "89.0%" in c.value for c in at.caption)  # the fit thresholds
    # The count of a memorised run is read at the plateau, and the page says so.
    estimate = analyze(run).estimate
    assert estimate.epoch == 4
    assert any("confidently contradicted at epoch 4" in c.value and "too high when" in c.value for c in at.caption)
    assert len(at.get("image")) == 4  # training phase, GWA curve, accuracy, histogram
    from gwa_diag.app.views.charts import phase_png

    curve = analyze(run).epoch_choices.phase.curve
    assert phase_png(curve, window=[1, 2, 3, 4, 5], onset=6, plateau=4)[:8] == b"\x89PNG\r\n\x1a\n"
    assert phase_png(curve[["epoch", "fit", "contradicted"]])[:8] == b"\x89PNG\r\n\x1a\n"  # no thresholds


def test_browse_grid_pages_filters_and_detail(runs, monkeypatch):
    from gwa_diag.app.views.table import SORT_ALIGNMENT

    at = _app(runs["truth"], monkeypatch, page="browse")
    _clean(at)
    cells = _grid(at)
    assert len(cells) == 48  # one page of thumbnails, never the whole dataset
    assert all(c["src"].startswith("data:image/png;base64,") for c in cells)
    assert "Page **1 of 2**" in _texts(at)
    first_page = _grid_ids(at)
    at.button(key="browse_page_next").click().run()
    _clean(at)
    assert len(_grid(at)) == N_SAMPLES - 48
    assert not set(first_page) & set(_grid_ids(at))

    # Filters narrow the grid and bring the page back to 1.
    labels = pd.read_parquet(runs["truth"] / "labels.parquet")
    at.multiselect(key="browse_given").set_value([3]).run()
    _clean(at)
    assert sorted(_grid_ids(at)) == sorted(labels.loc[labels["label"] == 3, "sample_id"])
    assert at.number_input(key="browse_page").value == 1
    at.multiselect(key="browse_given").set_value([]).run()
    at.selectbox(key="browse_mislabeled").set_value("mislabeled").run()
    _clean(at)
    noisy = set(labels.loc[labels["label"] != labels["clean_label"], "sample_id"])
    assert set(_grid_ids(at)) == noisy
    at.selectbox(key="browse_mislabeled").set_value("all").run()
    at.toggle(key="browse_flagged").set_value(True).run()
    assert all(c["flagged"] for c in _grid(at)) and _grid(at)

    # Sorting by alignment at an epoch (a choice: the grid opens on the default ranking) puts
    # the lowest alignment first.
    at.toggle(key="browse_flagged").set_value(False).run()
    at.selectbox(key="browse_sort").set_value(SORT_ALIGNMENT).run()
    at.select_slider(key="browse_epoch").set_value(N_EPOCHS - 1).run()
    epoch_rows = pd.read_parquet(runs["truth"] / "samples" / f"epoch={N_EPOCHS - 1}")
    ordered = epoch_rows.sort_values(["alignment", "sample_id"])
    lowest = int(ordered.iloc[0]["sample_id"])
    assert _grid_ids(at) == [int(i) for i in ordered["sample_id"].iloc[:48]]
    assert f"a {ordered.iloc[0]['alignment']:+.2f}" in _grid(at)[0]["subcaption"]

    # Opening a sample shows it large with its trajectory and the relabel buttons.
    _open(at, lowest)
    _clean(at)
    assert any(s.body == f"Sample {lowest}" for s in at.subheader)
    assert at.query_params.get("sample") == str(lowest)
    assert [int(c["sample_id"]) for c in _grid(at) if c["selected"]] == [lowest]
    assert len(at.get("image")) == 1  # the large image
    assert [c["title"]["text"].split(" ")[0] for c in _charts(at)] == ["alignment", "margin", "p(given"]
    at.button(key=f"detail_fine_{lowest}").click().run()
    _clean(at)
    decisions = relabel.read_decisions(runs["truth"])
    assert list(decisions["sample_id"]) == [lowest] and decisions["decision"].iloc[0] == "fine"
    assert any("label is fine" in s.body for s in at.success)
    assert [int(c["sample_id"]) for c in _grid(at) if c["decided"]] == [lowest]


def test_ids_above_2_to_the_53_reach_the_browser_and_come_back_exact(monkeypatch, tmp_path):
    """Hash-like ids: a JavaScript number would round them, so the grid sends strings and
    the id field is text."""
    base = 2**62 + 1  # every id here is odd and above 2**53: a float cannot hold one
    run = write_synthetic_run(tmp_path / "big", samples=20, epochs=2, seed=5, id_base=base)
    at = _app(run, monkeypatch, page="browse")
    _clean(at)
    cells = _grid(at)
    assert all(isinstance(c["sample_id"], str) for c in cells)
    assert sorted(int(c["sample_id"]) for c in cells) == list(range(base, base + 20))
    target = base + 7
    _open(at, target)
    _clean(at)
    assert any(s.body == f"Sample {target}" for s in at.subheader)
    assert at.query_params.get("sample") == str(target)
    at.text_input(key="browse_goto").set_value("12x").run()
    assert "'12x' is not a sample id" in _texts(at)


def test_browse_sorts_by_any_scorer(runs, monkeypatch):
    from gwa_diag.analysis.scorers import SCORERS
    from gwa_diag.checks import DEFAULT_SCORER
    from gwa_diag.analysis.summaries import summarize

    at = _app(runs["no_truth"], monkeypatch, page="browse")
    _clean(at)
    assert at.selectbox(key="browse_sort").options[1:] == [f"{s} (highest first)" for s in SCORERS]
    # It opens on the default ranking, as the relabel queue and suspects.csv do.
    summary = summarize(runs["no_truth"])
    assert at.selectbox(key="browse_sort").value == DEFAULT_SCORER
    top = summary.sort_values([DEFAULT_SCORER], ascending=False, kind="stable").index[0]
    assert _grid_ids(at)[0] == top
    at.selectbox(key="browse_sort").set_value("loss_mean").run()
    _clean(at)
    top = summary.sort_values(["loss_mean"], ascending=False, kind="stable").index[0]
    assert _grid_ids(at)[0] == top
    assert "True class: no ground truth in this run" in _texts(at)


def test_simple_to_complex_shows_top_images_per_class_and_epoch(runs, monkeypatch):
    at = _app(runs["truth"], monkeypatch, page="simple")
    _clean(at)
    epochs = at.multiselect(key="simple_epochs").value
    assert epochs == list(range(N_EPOCHS))
    labels = pd.read_parquet(runs["truth"] / "labels.parquet")["label"]
    assert _images(at) == labels.nunique() * len(epochs)  # one strip per (class, epoch)
    at.multiselect(key="simple_epochs").set_value([N_EPOCHS - 1]).run()
    at.slider(key="simple_k").set_value(2).run()
    _clean(at)
    assert _images(at) == labels.nunique()
    strips = at.get("image")
    assert strips and strips[0].captions[0].count("#") == 2


def test_detection_with_and_without_ground_truth(runs, monkeypatch):
    from gwa_diag.analysis.metrics import ESTIMATE_ROW, RULE_ROW
    from gwa_diag.analysis.scorers import SCORERS

    at = _app(runs["truth"], monkeypatch, page="detection")
    _clean(at)
    table = at.dataframe[0].value
    assert list(table.index) == list(SCORERS) and RULE_ROW not in table.index and ESTIMATE_ROW not in table.index
    # The page shows the analysis' own numbers, not merely "better than chance".
    from gwa_diag.analysis.pipeline import analyze

    expected = analyze(runs["truth"]).detection
    assert table.loc["align_mean", "auroc"] == pytest.approx(expected.loc["align_mean", "auroc"], abs=1e-9)
    assert table.loc["aum", "ap"] == pytest.approx(expected.loc["aum", "ap"], abs=1e-9)
    # two rules side by side: the default (estimated count) and the paper's (alignment < 0)
    metrics = [(m.label, m.value) for m in at.metric]
    assert [label for label, _ in metrics] == ["Precision", "Recall", "F1", "Flagged"] * 2
    assert int(metrics[7][1].replace(",", "")) > 0
    assert "estimated number of wrong labels" in _texts(at)
    assert len(_charts(at)) == 2  # ROC and PR
    at.selectbox(key="detection_scorer").set_value("aum").run()
    _clean(at)

    at = _app(runs["no_truth"], monkeypatch, page="detection")
    _clean(at)
    assert NO_TRUTH in _texts(at)
    assert not at.dataframe


def test_relabel_queue_records_and_survives_restart(runs, monkeypatch, tmp_path):
    run = write_synthetic_run(tmp_path / "queue", samples=N_SAMPLES, epochs=N_EPOCHS, noise_rate=0.3, seed=4)
    at = _app(run, monkeypatch, page="queue")
    _clean(at)
    metrics = {m.label: m.value for m in at.metric}
    flagged = int(metrics["Flagged"].replace(",", ""))
    assert flagged > 0 and metrics["Decided"] == "0"
    accept = [b for b in at.button if b.key and b.key.startswith("queue_accept_") and not b.disabled][0]
    sample = int(accept.key.rsplit("_", 1)[1])
    accept.click().run()
    _clean(at)
    assert {m.label: m.value for m in at.metric}["Decided"] == "1"
    # The decided sample leaves the "undecided" view.
    assert f"queue_accept_{sample}" not in {b.key for b in at.button}
    other = [b for b in at.button if b.key and b.key.startswith("queue_relabel_")][0]
    other_id = int(other.key.rsplit("_", 1)[1])
    at.selectbox(key=f"queue_new_{other_id}").set_value(7).run()
    at.button(key=f"queue_relabel_{other_id}").click().run()
    latest = relabel.latest_decisions(run)
    assert latest.loc[other_id, "new_label"] == 7 and latest.loc[sample, "decision"] == "accept"

    # A new app process (a restart) finds both decisions.
    restarted = _app(run, monkeypatch, page="queue")
    assert {m.label: m.value for m in restarted.metric}["Decided"] == "2"
    restarted.segmented_control(key="queue_show").set_value("decided").run()
    _clean(restarted)
    assert any("accept →" in s.body for s in restarted.success)
    restarted.selectbox(key="queue_rule").set_value("topk").run()
    restarted.number_input(key="queue_k").set_value(5).run()
    _clean(restarted)
    assert {m.label: m.value for m in restarted.metric}["Flagged"] == "5"
    restarted.button(key="queue_write").click().run()
    _clean(restarted)
    written = relabel.read_csv(run / "analysis" / "relabels.csv")
    assert sorted(written["sample_id"]) == sorted([sample, other_id])
    assert any("Wrote" in s.body for s in restarted.success)


def test_pages_pass_one_options_object_to_the_analysis(runs, monkeypatch):
    """The relabel queue and Browse build one AnalysisOptions from their widgets and the
    sidebar's window; analyze() receives that object, no loose option beside it, and the
    page shows that analysis's flags."""
    from gwa_diag.app.views import results

    seen: list[dict] = []
    real = results.analyze

    def spy(path, **kwargs):
        seen.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(results, "analyze", spy)
    results._analysis.clear()  # earlier tests' entries would answer without a call
    run = runs["truth"]
    at = _app(run, monkeypatch, page="queue")
    at.selectbox(key="window").set_value("all").run()
    at.selectbox(key="queue_rule").set_value("topk").run()
    at.number_input(key="queue_k").set_value(6).run()
    at.selectbox(key="queue_scorer").set_value("align_mean").run()
    at.segmented_control(key="queue_show").set_value("all").run()  # other tests decide some samples
    _clean(at)
    expected = AnalysisOptions(window="all", scorer="align_mean", rule="topk", k=6)
    assert all(set(kwargs) == {"options", "summary"} for kwargs in seen), seen
    assert expected in [kwargs["options"] for kwargs in seen]
    assert {m.label: m.value for m in at.metric}["Flagged"] == "6"
    assert [int(b.key.rsplit("_", 1)[1]) for b in at.button if b.key and b.key.startswith("queue_fine_")] == \
        list(analyze(run, options=expected).flagged.index[:6])

    seen.clear()
    at = _app(run, monkeypatch, page="browse")
    at.selectbox(key="browse_sort").set_value("el2n").run()
    at.selectbox(key="browse_rule").set_value("noise_rate").run()
    _clean(at)
    browsed = AnalysisOptions(scorer="el2n", rule="noise_rate", noise_rate=0.1)
    assert browsed in [kwargs["options"] for kwargs in seen]
    assert [int(c["sample_id"]) for c in _grid(at) if c["flagged"]] == \
        list(analyze(run, options=browsed).flagged.index)


def test_empty_run_every_page_explains(runs, monkeypatch):
    for page in ("overview", "browse", "simple", "detection", "queue"):
        at = _app(runs["empty"], monkeypatch, page=page)
        _clean(at)
        assert "No complete epoch yet" in _texts(at), page
        assert "Training in progress: 0 of 5 epochs complete" in _texts(at)


def test_run_in_progress_shows_complete_epochs_only(runs, monkeypatch):
    at = _app(runs["progress"], monkeypatch)
    _clean(at)
    assert "Training in progress: 3 of 6 epochs complete" in _texts(at)
    assert {m.label: m.value for m in at.metric}["Complete epochs"] == "3 of 6"
    assert at.select_slider(key="overview_epoch").options == ["0", "1", "2"]
    at = _app(runs["progress"], monkeypatch, page="browse")
    _clean(at)
    assert at.select_slider(key="browse_epoch").options == ["0", "1", "2"]
    assert len(_grid(at)) == 48


def test_moved_images_show_tables_and_a_message(runs, monkeypatch, tmp_path):
    run = write_synthetic_run(tmp_path / "moved", samples=N_SAMPLES, epochs=N_EPOCHS, seed=5)
    (run.parent / f".{run.name}-dataset.npz").rename(tmp_path / "elsewhere.npz")
    at = _app(run, monkeypatch, page="browse")
    _clean(at)
    assert "could not be loaded" in _texts(at)
    assert f"gwa-diag relocate {run} --data-path NEW_PATH" in _texts(at)
    assert len(_grid(at)) == 48 and all(c["src"] is None for c in _grid(at))
    _open(at, _grid_ids(at)[0])
    _clean(at)
    assert any(s.body.startswith("Sample ") for s in at.subheader)
    for page in ("simple", "queue"):
        at = _app(run, monkeypatch, page=page)
        _clean(at)
        assert "could not be loaded" in _texts(at)


def test_changed_images_are_not_shown_under_the_old_ids(monkeypatch, tmp_path):
    from gwa_diag.training.data import data_fingerprint, load_dataset

    run = write_synthetic_run(tmp_path / "changed", samples=N_SAMPLES, epochs=N_EPOCHS, seed=6)
    writer = RunWriter(run, resume=True)
    writer.update_meta(data_fingerprint=data_fingerprint(load_dataset(writer.meta["dataset"])))
    at = _app(run, monkeypatch, page="browse")
    _clean(at)
    assert all(c["src"] for c in _grid(at))  # the images trained on: shown
    # The same file now holds other pixels (a re-export, files renamed in a folder ...).
    npz = run.parent / f".{run.name}-dataset.npz"
    with np.load(npz) as f:
        arrays = dict(f)
    arrays["images"] = 255 - arrays["images"]
    np.savez(npz, **arrays)
    jobs._dataset_job.clear()
    at = _app(run, monkeypatch, page="browse")
    _clean(at)
    assert "not the ones this run trained on" in _texts(at)
    assert len(_grid(at)) == 48 and all(c["src"] is None for c in _grid(at))


def test_reload_reopens_the_sample_in_the_url(runs, monkeypatch):
    monkeypatch.setenv("GWA_DIAG_RUN", str(runs["no_truth"]))
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update({"page": "browse", "sample": "5"})
    at.run()
    _clean(at)
    assert any(s.body == "Sample 5" for s in at.subheader)


def test_not_a_run_and_no_run(monkeypatch, tmp_path):
    at = _app(tmp_path, monkeypatch)
    assert not at.exception
    assert "not a gwa-diag run directory" in at.error[0].body
    at = _app(tmp_path / "missing", monkeypatch)
    assert "not found" in at.error[0].body
    at = _app(None, monkeypatch)
    assert not at.exception and "Give a run directory" in _texts(at)


# --------------------------------------------------------------------------------------
# data helpers
# --------------------------------------------------------------------------------------


def _analysis_of(summary: pd.DataFrame, *, scorer: str = "aum", rule: str = "estimate") -> Analysis:
    """The Analysis analyze() would assemble from this hand-made summary (no run directory)."""
    ranking = rank(summary, scorer=scorer)
    return Analysis(run=None, options=AnalysisOptions(scorer=scorer, rule=rule), summary=summary,
                    epoch_choices=None, ranking=ranking, flagged=flag_ranking(ranking, rule=rule), class_names=None,
                    truth=None, truth_source=None, truth_coverage=None, truth_reason=None)


def _table() -> pd.DataFrame:
    ids = pd.Index([10, 11, 12, 13, 14], name="sample_id")
    return pd.DataFrame({
        "label": [0, 1, 1, 2, 0],
        "suggested_label": pd.array([0, 2, 1, pd.NA, 1], dtype="Int64"),
        "clean_label": pd.array([0, 2, 1, 2, pd.NA], dtype="Int64"),
        "flagged": [False, True, False, True, True],
        "alignment": [0.3, -0.2, 0.1, -0.5, np.nan],
    }, index=ids)


def test_apply_filters():
    table = _table()
    assert list(apply_filters(table, Filters()).index) == [10, 11, 12, 13, 14]
    assert list(apply_filters(table, Filters(given=(1,))).index) == [11, 12]
    assert list(apply_filters(table, Filters(suggested=(1,))).index) == [12, 14]
    assert list(apply_filters(table, Filters(flagged_only=True)).index) == [11, 13, 14]
    assert list(apply_filters(table, Filters(true_class=(2,))).index) == [11, 13]
    # Unknown ground truth (sample 14) is neither mislabeled nor correct.
    assert list(apply_filters(table, Filters(mislabeled="mislabeled")).index) == [11]
    assert list(apply_filters(table, Filters(mislabeled="correct")).index) == [10, 12, 13]
    with pytest.raises(ValueError, match="valid: all, mislabeled, correct"):
        apply_filters(table, Filters(mislabeled="wrong"))


def test_pages_and_order():
    table = _table()
    assert page_count(0, 48) == 1 and page_count(97, 48) == 3
    assert list(page_slice(table, 2, 2).index) == [12, 13]
    assert list(page_slice(table, 99, 2).index) == [14]  # clamped to the last page
    summary = table[["label", "suggested_label", "clean_label"]].assign(
        suggested_prob=0.5, alignment_selected=[0.3, -0.2, 0.1, -0.5, 0.2], align_mean=[0.1, 0.2, 0.3, 0.4, 0.5],
        aum=[0.1, 0.5, 0.2, 0.6, 0.0], unfitted=[0.0, 0.75, 1.0, 0.0, 0.0],
    )
    at = table[["alignment"]]
    order = browse_order(_analysis_of(summary), at, sort_by="alignment")
    assert list(order.index) == [13, 11, 12, 10, 14]  # lowest alignment first, NaN last
    # flagged by the default rule: the top 2 by aum (2 samples have unfitted > 0.5)
    assert list(order["flagged"]) == [True, True, False, False, False]
    by_scorer = browse_order(_analysis_of(summary, scorer="align_mean"), at, sort_by="align_mean")
    assert list(by_scorer.index) == [14, 13, 12, 11, 10]


def _alignment_at(run: Path, epoch: int) -> pd.DataFrame:
    return pd.read_parquet(run / "samples" / f"epoch={epoch}").set_index("sample_id")[["alignment"]]


def test_browse_order_is_the_analysis_ranking_with_its_flags(runs):
    """Browse reads the Analysis it is given: its ranking order for a scorer other than the
    default, its flags for rules other than the default."""
    run = runs["truth"]
    at = _alignment_at(run, N_EPOCHS - 1)
    topk = analyze(run, scorer="align_mean", rule="topk", k=7)
    order = browse_order(topk, at, sort_by="align_mean")
    assert list(order.index) == list(topk.ranking.index)
    assert np.array_equal(order["score"].to_numpy(), topk.ranking["score"].to_numpy(), equal_nan=True)
    assert list(order.index[order["flagged"]]) == list(topk.flagged.index) == list(topk.ranking.index[:7])
    # "negative" flags by alignment < 0 at the selected epoch, not a top slice of the ranking
    negative = analyze(run, scorer="align_mean", rule="negative")
    by_alignment = browse_order(negative, at, sort_by="alignment")
    assert set(by_alignment.index[by_alignment["flagged"]]) == set(negative.flagged.index)
    flagged_rows = by_alignment[by_alignment["flagged"]]
    assert list(flagged_rows["reason"]) == list(negative.flagged.loc[flagged_rows.index, "reason"])
    assert by_alignment.loc[~by_alignment["flagged"], "reason"].isna().all()
    # Another scorer's order than the analysis ranked by would be a silent mix-up.
    with pytest.raises(ValueError, match="ranks by 'align_mean', not 'aum'"):
        browse_order(negative, at, sort_by="aum")


def test_browse_page_sorts_and_flags_by_the_chosen_scorer_and_rule(runs, monkeypatch):
    run = runs["truth"]
    at = _app(run, monkeypatch, page="browse")
    at.selectbox(key="browse_sort").set_value("align_mean").run()
    at.selectbox(key="browse_rule").set_value("topk").run()
    at.number_input(key="browse_k").set_value(5).run()
    _clean(at)
    expected = analyze(run, scorer="align_mean", rule="topk", k=5)
    assert _grid_ids(at) == list(expected.ranking.index[:48])
    assert [int(c["sample_id"]) for c in _grid(at) if c["flagged"]] == list(expected.flagged.index)
    assert all("within the top 5" in c["title"] for c in _grid(at) if c["flagged"])
    at.selectbox(key="browse_rule").set_value("negative").run()
    at.toggle(key="browse_flagged").set_value(True).run()
    _clean(at)
    negative = analyze(run, scorer="align_mean", rule="negative")
    assert _grid_ids(at) == list(negative.flagged.index[:48])
    assert all(c["flagged"] for c in _grid(at))


def test_thumbnails_upscale_with_nearest_neighbour():
    from gwa_diag.training.data import ArrayDataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    ds = ArrayDataset(images, np.zeros(5, dtype=np.int64), sample_ids=np.array([7, 3, 9, 1, 5]))
    thumbs = thumbnails(ds, [9, 7], 96)
    assert [t.shape for t in thumbs] == [(96, 96, 3), (96, 96, 3)]
    # Every source pixel becomes a crisp 3x3 block.
    assert np.array_equal(thumbs[0][::3, ::3], images[2]) and np.array_equal(thumbs[0][1::3, 2::3], images[2])
    assert np.array_equal(thumbs[1][::3, ::3], images[0])
    big = ArrayDataset(rng.integers(0, 256, size=(1, 300, 200, 3), dtype=np.uint8), np.zeros(1, dtype=np.int64))
    assert thumbnail(big, 0, 96).shape == (96, 64, 3)
    with pytest.raises(ValueError, match="not in this dataset"):
        thumbnails(ds, [42], 96)


def test_run_argument_from_argv_or_env():
    from gwa_diag.app.streamlit_app import run_argument

    assert run_argument([str(APP), "/runs/a"], {}) == "/runs/a"
    assert run_argument([str(APP)], {"GWA_DIAG_RUN": "/runs/b"}) == "/runs/b"
    # Under another program (pytest, AppTest) argv is not ours.
    assert run_argument(["pytest", "-q"], {}) is None


# --------------------------------------------------------------------------------------
# gwa-diag app
# --------------------------------------------------------------------------------------


def test_cli_app_command(runs, monkeypatch, capsys):
    from gwa_diag.cli import app as cli_app

    parser = argparse.ArgumentParser()
    cli_app.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["app", str(runs["truth"]), "--port", "8600", "--no-browser"])
    assert (args.port, args.host, args.no_browser) == (8600, "127.0.0.1", True)
    cmd = cli_app.streamlit_command(args.run, port=args.port, host=args.host)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and Path(cmd[4]) == APP
    assert cmd[cmd.index("--server.port") + 1] == "8600" and cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[-2:] == ["--", str(runs["truth"].resolve())]
    assert cmd[cmd.index("--server.scriptHealthCheckEnabled") + 1] == "true"
    calls = []

    class FakePopen:
        """A server that exits 0 at once, never answering."""

        def __init__(self, command):
            calls.append(command)

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(cli_app.subprocess, "Popen", FakePopen)
    # It ran the app's script, and a server that never served a page is a failure, even
    # one that exits 0.
    assert args.func(args) == 1 and calls[0][4] == str(APP)
    assert "before it served a page" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="run directory not found"):
        cli_app.run_app(runs["truth"] / "nope", open_browser=False)
    # An installation without the app says how to get it.
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda name: Path("/nonexistent/site-packages/gwa_diag/app"))
    with pytest.raises(FileNotFoundError, match="app is not installed"):
        cli_app.app_script()


def test_app_refuses_a_port_in_use_and_bad_ports(runs, monkeypatch, capsys):
    import socket

    from gwa_diag.cli import app as cli_app
    from gwa_diag.cli import main

    started = []
    monkeypatch.setattr(cli_app.subprocess, "Popen", lambda *a, **k: started.append(a))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert main(["app", str(runs["truth"]), "--port", str(port), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is not available" in err and "--port" in err
    assert started == []  # no server was started, no "ready" for someone else's
    with pytest.raises(SystemExit):
        main(["app", str(runs["truth"]), "--port", "99999"])
    assert "out of range" in capsys.readouterr().err
