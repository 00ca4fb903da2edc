"""Run-directory contract: atomic files, readers, DuckDB/pyarrow/pandas interoperability."""

import json

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gwa_diag.store import PART_ROW_GROUP, SAMPLE_SCHEMA, SCHEMA_VERSION, RunDirError, RunWriter, atomic_write_bytes, open_run


def _part(ids, epoch, step0=0):
    n = len(ids)
    rng = np.random.default_rng(epoch)
    return pa.table(
        {
            "sample_id": np.asarray(ids, dtype=np.int64),
            "step": np.arange(step0, step0 + n, dtype=np.int64),
            "label": np.zeros(n, dtype=np.int32),
            "alignment": rng.uniform(-1, 1, n).astype(np.float32),
            "margin": rng.normal(size=n).astype(np.float32),
            "loss": rng.uniform(0, 2, n).astype(np.float32),
            "p_label": rng.uniform(0, 1, n).astype(np.float32),
            "pred": np.ones(n, dtype=np.int32),
            "p_pred": rng.uniform(0, 1, n).astype(np.float32),
        },
        schema=SAMPLE_SCHEMA,
    )


def _run(tmp_path, epochs=3, ranks=2):
    w0 = RunWriter(tmp_path / "run", meta={"num_classes": 2}, world_size=ranks)
    writers = [w0] + [RunWriter(tmp_path / "run", rank=r, world_size=ranks) for r in range(1, ranks)]
    for e in range(epochs):
        for r, w in enumerate(writers):
            w.write_samples(e, _part(range(r * 10, r * 10 + 10), e))
        w0.write_epoch({"epoch": e, "n": 20, "gwa": 0.1 * e, "valid": True, "reason": "ok"})
    w0.write_labels(np.arange(20), np.zeros(20), clean_labels=np.r_[np.zeros(15), np.ones(5)])
    return w0


def test_layout_and_readers(tmp_path):
    _run(tmp_path)
    root = tmp_path / "run"
    assert (root / "samples" / "epoch=2" / "part-1.parquet").exists()
    meta = json.loads((root / "run.json").read_text())
    assert meta["schema_version"] == SCHEMA_VERSION and meta["status"] == "running"
    run = open_run(root)
    assert run.completed_epochs() == [0, 1, 2]
    df = run.samples()
    assert len(df) == 60 and set(df["epoch"]) == {0, 1, 2}
    traj = run.trajectory(13)
    assert list(traj["epoch"]) == [0, 1, 2] and (traj["sample_id"] == 13).all()
    with pytest.raises(ValueError, match="sample id 1234 has no rows"):
        run.trajectory(1234)
    assert len(run.epoch_scores(1)) == 20
    assert run.labels()["clean_label"].sum() == 5
    # Parquet metadata carries the schema version.
    md = pq.read_schema(root / "samples" / "epoch=0" / "part-0.parquet").metadata
    assert md[b"gwa_diag.schema_version"] == str(SCHEMA_VERSION).encode()


def test_parts_sorted_by_id_in_row_groups_that_trajectories_skip(tmp_path):
    """Parts are sorted by (sample_id, step) in row groups with disjoint id ranges, so a
    trajectory read touches one row group per epoch; rows and values are unchanged."""
    n = 3 * PART_ROW_GROUP + 17
    rng = np.random.default_rng(1)
    ids = np.r_[rng.permutation(n - 17), rng.integers(0, n - 17, 17)] * 7 + 3  # repeats; sparse ids
    table = _part(ids, 0)
    writer = RunWriter(tmp_path / "run", meta={"num_classes": 2})
    path = writer.write_samples(0, table)
    writer.write_epoch({"epoch": 0, "n": n, "gwa": 0.1, "valid": True, "reason": "ok"})
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 4
    ranges = [(meta.row_group(g).column(0).statistics.min, meta.row_group(g).column(0).statistics.max)
              for g in range(meta.num_row_groups)]
    assert all(hi < lo for (_, hi), (lo, _) in zip(ranges, ranges[1:]))  # disjoint, ascending
    stored = pq.read_table(path).to_pandas()
    assert stored.sort_values(["sample_id", "step"]).index.equals(stored.index)
    expected = table.to_pandas().sort_values(["sample_id", "step"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(stored, expected)
    repeated = int(ids[-1])
    traj = open_run(tmp_path / "run").trajectory(repeated)
    want = expected[expected["sample_id"] == repeated]
    assert len(want) >= 2 and list(traj["step"]) == list(want["step"])
    np.testing.assert_array_equal(traj["alignment"].to_numpy(), want["alignment"].to_numpy())


def test_duckdb_and_pandas_read_directly(tmp_path):
    _run(tmp_path)
    root = tmp_path / "run"
    rows = duckdb.sql(
        f"SELECT epoch, count(*) AS n FROM read_parquet('{root}/samples/*/*.parquet', hive_partitioning=true) "
        "GROUP BY epoch ORDER BY epoch"
    ).fetchall()
    assert rows == [(0, 20), (1, 20), (2, 20)]
    whole = pd.read_parquet(root / "samples")  # pyarrow's hive discovery adds `epoch`
    assert len(whole) == 60 and "epoch" in whole.columns
    assert len(pd.read_parquet(root / "epochs.parquet")) == 3


def test_in_progress_epoch_is_hidden(tmp_path):
    w0 = _run(tmp_path, epochs=2)
    # Epoch 2: rank 0's part is on disk, but the epoch is not complete yet.
    w0.write_samples(2, _part(range(10), 2))
    run = open_run(tmp_path / "run")
    assert run.completed_epochs() == [0, 1]
    assert set(run.samples()["epoch"]) == {0, 1}
    with pytest.raises(ValueError, match="not complete"):
        run.epoch_scores(2)


def test_epoch_rows_replace_not_duplicate(tmp_path):
    w0 = _run(tmp_path, epochs=2)
    w0.write_epoch({"epoch": 1, "n": 20, "gwa": 9.0, "valid": True, "reason": "ok"})
    ep = open_run(tmp_path / "run").epochs()
    assert list(ep["epoch"]) == [0, 1] and ep.loc[1, "gwa"] == 9.0
    w0.drop_epochs_from(1)
    assert open_run(tmp_path / "run").completed_epochs() == [0]


def test_refuses_other_run_and_foreign_dirs(tmp_path):
    _run(tmp_path, epochs=1)
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    with pytest.raises(RunDirError, match="already holds run"):
        RunWriter(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before
    resumed = RunWriter(tmp_path / "run", resume=True)
    assert resumed.meta["run_id"] == json.loads((tmp_path / "run" / "run.json").read_text())["run_id"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty"):
        RunWriter(tmp_path / "other")
    with pytest.raises(RunDirError, match="no run.json"):
        open_run(tmp_path / "other")
    with pytest.raises(RunDirError, match="holds no run"):
        RunWriter(tmp_path / "new", resume=True)


def test_newer_schema_version_refused(tmp_path):
    _run(tmp_path, epochs=1)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    meta["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match="schema version"):
        open_run(tmp_path / "run")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    class Boom(Exception):
        pass

    import gwa_diag.store as store

    def failing(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise Boom()

    with pytest.raises(Boom):
        store._atomic(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left behind


def test_empty_run_reads_as_empty(tmp_path):
    RunWriter(tmp_path / "run", meta={"num_classes": 3})
    run = open_run(tmp_path / "run")
    assert run.completed_epochs() == [] and run.samples().empty and run.labels() is None


def test_written_files_get_the_mode_a_plain_open_would(tmp_path):
    """0666 & ~umask (readable by a labeling team under a usual umask), not mkstemp's 0600,
    and following the umask in force at the time of the write."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "suspects.csv", b"x\n")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        os.umask(0o077)  # tightened later in the process: new files follow
        path = atomic_write_bytes(tmp_path / "report.md", b"x\n")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.tmp"))


def test_other_ranks_read_run_json_when_resuming(tmp_path):
    """Every rank continues the step count of a resumed run, not only rank 0."""
    w0 = _run(tmp_path, epochs=2)
    w0.update_meta(next_step=123)
    assert RunWriter(tmp_path / "run", rank=1, world_size=2, resume=True).meta["next_step"] == 123
    assert "next_step" not in RunWriter(tmp_path / "run", rank=1, world_size=2).meta


def _resume_during_first_listing(monkeypatch, w0, epoch):
    """Make the first listing of parts race a resume: the parts are listed, then the resume
    forgets ``epoch`` and later (rows, then parts) before the reader opens them."""
    from gwa_diag.store import Run

    listed = Run.sample_files
    calls = []

    def racing(self, epochs=None):
        files = listed(self, epochs)
        calls.append(len(files))
        if len(calls) == 1:
            w0.drop_epochs_from(epoch)
        return files

    monkeypatch.setattr(Run, "sample_files", racing)
    return calls


def test_reader_listing_parts_while_a_resume_removes_them_reads_again(tmp_path, monkeypatch):
    w0 = _run(tmp_path, epochs=3)
    calls = _resume_during_first_listing(monkeypatch, w0, 1)
    df = open_run(tmp_path / "run").samples()
    # The first listing had all 3 epochs' parts; the second reads what is complete now.
    assert calls == [6, 2]
    assert set(df["epoch"]) == {0} and len(df) == 20


def test_summaries_and_given_labels_read_again_after_a_resume_removed_parts(tmp_path, monkeypatch):
    from gwa_diag.analysis.truth import given_labels
    from gwa_diag.analysis.summaries import summarize

    w0 = _run(tmp_path, epochs=3)
    (tmp_path / "run" / "labels.parquet").unlink()  # labels then come from the parts (DuckDB)
    calls = _resume_during_first_listing(monkeypatch, w0, 2)
    assert len(given_labels(open_run(tmp_path / "run"))) == 20
    assert calls == [6, 4]
    calls.clear()
    w0.write_samples(2, _part(range(10), 2))
    w0.write_epoch({"epoch": 2, "n": 20, "gwa": 0.2, "valid": True, "reason": "ok"})
    calls = _resume_during_first_listing(monkeypatch, w0, 1)
    summary = summarize(tmp_path / "run")
    assert calls[-1] == 2 and summary.attrs["n_epochs"] == 1 and len(summary) == 20


def test_reads_that_keep_failing_are_not_retried_forever():
    from gwa_diag.store import read_listed_parts

    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("part-0.parquet")

    with pytest.raises(FileNotFoundError):
        read_listed_parts(missing)
    assert len(calls) == 3

    def broken():
        calls.append(1)
        raise ValueError("not a vanished part")

    calls.clear()
    with pytest.raises(ValueError):
        read_listed_parts(broken)
    assert len(calls) == 1  # only a vanished part is worth another listing


def test_class_names_come_from_run_json_or_the_dataset_spec_and_open_run_takes_a_run(tmp_path):
    RunWriter(tmp_path / "a", meta={"class_names": ["cat", "dog"], "dataset": {"class_names": ["x", "y"]}})
    run = open_run(tmp_path / "a")
    assert run.class_names == ("cat", "dog")
    assert open_run(run) is run  # an open run is used as it is, not opened again
    RunWriter(tmp_path / "b", meta={"dataset": {"class_names": [0, 1]}})
    assert open_run(tmp_path / "b").class_names == ("0", "1")
    RunWriter(tmp_path / "c", meta={"num_classes": 3})
    assert open_run(tmp_path / "c").class_names is None
