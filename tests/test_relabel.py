"""Relabel decisions: validation, append-only files, concurrent writers, crash leftovers, CSV."""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

import pandas as pd
import pytest

from gwa_diag.analysis import relabel
from gwa_diag.store import RunWriter


def _run_dir(tmp_path: Path, num_classes: int = 10) -> Path:
    path = tmp_path / "run"
    RunWriter(path, meta={"num_classes": num_classes, "class_names": [f"c{i}" for i in range(num_classes)]})
    return path


def _write_many(run_dir: str, start: int, count: int, session: str) -> None:
    for i in range(start, start + count):
        relabel.record_decision(run_dir, i, "relabel", new_label=i % 10, given_label=(i + 1) % 10, session=session)


def test_record_and_read_back(tmp_path):
    run = _run_dir(tmp_path)
    relabel.record_decision(run, 3, "accept", given_label=1, suggested_label=4, note="looks like a cat")
    relabel.record_decision(run, 8, "fine", given_label=2, new_label=5)
    relabel.record_decision(run, 9, "relabel", new_label=0, given_label=7)
    frame = relabel.read_decisions(run)
    assert list(frame["sample_id"]) == [3, 8, 9]
    assert list(frame.columns) == [f.name for f in relabel.DECISION_SCHEMA]
    # accept takes the suggested label; fine never carries a new label.
    assert frame.loc[0, "new_label"] == 4 and frame.loc[0, "note"] == "looks like a cat"
    assert pd.isna(frame.loc[1, "new_label"])
    assert frame["timestamp"].is_monotonic_increasing
    assert len(relabel.decision_files(run)) == 3


def test_latest_decision_wins(tmp_path):
    run = _run_dir(tmp_path)
    relabel.record_decision(run, 5, "accept", suggested_label=3)
    relabel.record_decision(run, 5, "fine")
    relabel.record_decision(run, 6, "relabel", new_label=2)
    relabel.record_decision(run, 5, "relabel", new_label=7)
    latest = relabel.latest_decisions(run)
    assert list(latest.index) == [5, 6]
    assert latest.loc[5, "decision"] == "relabel" and latest.loc[5, "new_label"] == 7
    # Nothing is rewritten: every decision stays on disk.
    assert len(relabel.read_decisions(run)) == 4


def test_validation(tmp_path):
    run = _run_dir(tmp_path, num_classes=3)
    with pytest.raises(ValueError, match="valid decisions: 'accept', 'relabel', 'fine'"):
        relabel.record_decision(run, 1, "reject", new_label=0)
    with pytest.raises(ValueError, match=r"out of range.*\[0, 3\)"):
        relabel.record_decision(run, 1, "relabel", new_label=3)
    with pytest.raises(ValueError, match="out of range"):
        relabel.record_decision(run, 1, "relabel", new_label=-1)
    with pytest.raises(ValueError, match="needs new_label"):
        relabel.record_decision(run, 1, "relabel")
    with pytest.raises(ValueError, match="needs new_label"):
        relabel.record_decision(run, 1, "accept")
    with pytest.raises(TypeError):
        relabel.record_decision(run, "1", "fine")  # type: ignore[arg-type]
    # An explicit class count overrides run.json.
    relabel.record_decision(run, 1, "relabel", new_label=4, num_classes=5)
    assert relabel.decision_files(run) and len(relabel.read_decisions(run)) == 1


def test_empty_run_reads_empty_frame(tmp_path):
    run = _run_dir(tmp_path)
    frame = relabel.read_decisions(run)
    assert frame.empty and list(frame.columns) == [f.name for f in relabel.DECISION_SCHEMA]
    assert relabel.latest_decisions(run).empty


def test_concurrent_threads_lose_nothing(tmp_path):
    run = _run_dir(tmp_path)
    threads = [threading.Thread(target=_write_many, args=(str(run), k * 50, 50, f"t{k}")) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    frame = relabel.read_decisions(run)
    assert len(frame) == 200
    assert sorted(frame["sample_id"]) == list(range(200))
    assert frame["timestamp"].is_unique


def test_concurrent_processes_lose_nothing(tmp_path):
    run = _run_dir(tmp_path)
    # fork (where available) reuses this process's imports: spawn would import torch twice.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_write_many, args=(str(run), k * 100, 100, f"p{k}")) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    frame = relabel.read_decisions(run)
    assert len(frame) == 200 and frame["sample_id"].nunique() == 200
    assert set(frame["session"]) == {"p0", "p1"}


def test_crash_leftovers_are_ignored(tmp_path):
    run = _run_dir(tmp_path)
    relabel.record_decision(run, 1, "fine")
    folder = run / relabel.RELABEL_DIR
    # What a write killed before its rename leaves behind: a hidden temporary file.
    (folder / ".00000000000000000001-dead.parquet.abc123.tmp").write_bytes(b"PAR1 half a file")
    assert len(relabel.read_decisions(run)) == 1
    # A truncated file that did get a real name (copied by hand) is skipped with a warning.
    (folder / "99999999999999999999-broken.parquet").write_bytes(b"PAR1 not parquet")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        frame = relabel.read_decisions(run)
    assert list(frame["sample_id"]) == [1]


def test_export_round_trip(tmp_path):
    run = _run_dir(tmp_path)
    relabel.record_decision(run, 4, "accept", given_label=1, suggested_label=2, note='comma, "quote"')
    relabel.record_decision(run, 2, "fine", given_label=3)
    relabel.record_decision(run, 4, "relabel", new_label=9, given_label=1, suggested_label=2)
    path = relabel.export_csv(run)
    assert path == run / "analysis" / "relabels.csv"
    back = relabel.read_csv(path)
    latest = relabel.latest_decisions(run).reset_index()
    cols = [f.name for f in relabel.DECISION_SCHEMA]
    pd.testing.assert_frame_equal(back[cols], latest[cols], check_dtype=False)
    assert list(back["new_label_name"]) == ["", "c9"]
    # The full history is available too, and no temporary file is left behind.
    full = relabel.read_csv(relabel.export_csv(run, tmp_path / "all.csv", all_decisions=True))
    assert len(full) == 3 and full.loc[0, "note"] == 'comma, "quote"'
    assert [p.name for p in (run / "analysis").iterdir()] == ["relabels.csv"]
