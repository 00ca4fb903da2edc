"""Per-sample summaries of a recorded run: one row per sample id, one column per scorer.

This module only accumulates: it streams the recorded rows into per-sample sums
(:class:`gwa_diag.analysis.scorers.Sums`) over the epochs that
:func:`gwa_diag.analysis.phase.choose_epochs` chose, then hands them to the scorers of
:mod:`gwa_diag.analysis.scorers`, where every formula, direction and citation lives.
Every scorer column is oriented so that **higher = more suspicious**.

How the sums are computed (out of core, from the Parquet parts of complete epochs only):

* DuckDB reads ``read_parquet([...complete parts...], hive_partitioning=true)`` (the epoch
  comes from the ``epoch=E`` directory) and does the per-row work in parallel: validity of
  the floats, correctness, the epoch's column. Three reads, so that no float column is
  decoded without need: the window epochs (every column), the earlier epochs (ids, labels
  and predictions, for forgetting) and the few single epochs read directly (selected, last,
  EL2N).
* The rows stream out as Arrow record batches; each batch is folded into per-sample
  accumulators with ``numpy.bincount`` (sums and counts) and into a compact
  (epoch, sample) correctness byte matrix for forgetting events. Memory is
  O(samples x (epochs + classes)), independent of the number of rows. A DuckDB
  ``GROUP BY sample_id`` with a dozen filtered aggregates was measured 3-4x slower on two
  cores, which missed the 2 s target for 10M rows; the scan stays in DuckDB.
* A sample may be presented several times in one epoch (a sampler with replacement).
  Presentations are first averaged per (sample, epoch) so that every epoch weighs the same:
  numeric signals are averaged over the finite presentations; the prediction (``pred``,
  ``p_pred``) is that of the last presentation (highest step) of the epoch. The common case
  (at most one presentation per epoch) is detected during the fast pass; only runs with
  repeats pay for the extra DuckDB ``GROUP BY sample_id, epoch`` (which spills to disk when
  it has to).
* pandas appears only for the final per-sample frame.

Rows whose floats are not finite (the recorder writes NaN for non-finite logits) are left
out of the means; a sample with no finite value in the window gets NaN there. NaN scores
rank last (least suspicious).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gwa_diag.analysis.estimate import CONTRADICTED_PLATEAU
from gwa_diag.analysis.parts import read_parquet_sql, vanished_parts_as_file_not_found
from gwa_diag.analysis.phase import EpochChoices, choose_epochs
from gwa_diag.analysis.scorers import SCORERS, Sums, scores
from gwa_diag.checks import DEFAULT_WINDOW, InputError, Mode, Window, check_choice
from gwa_diag.store import AnalysisError, Run, open_run, read_listed_parts

__all__ = ["SCORERS", "AnalysisError", "summarize"]

# Dense per-sample accumulators are indexed by sample_id - min_id when the id range is at
# most this many times the largest epoch (plus slack); wider ranges map ids by search.
_DENSE_RANGE_FACTOR = 4
_DENSE_RANGE_SLACK = 1 << 20
# Per-class prediction counts are kept as a dense samples x classes matrix up to this many
# cells (two float64 matrices: at most 128 MiB); beyond it DuckDB groups (sample, pred).
_DENSE_CLASS_CELLS = 1 << 23
# Rows per Arrow batch: small enough that the per-batch buffers are recycled instead of
# faulting in fresh pages (measured: 1 << 18 cost ~0.5 s more CPU on a first call).
_BATCH_ROWS = 1 << 16
# Accumulators up to this size are updated with numpy.bincount, larger ones with add.at.
_BINCOUNT_MAX = 1 << 17
_FORGET_CHUNK = 1 << 16


# --------------------------------------------------------------------------------------
# summarize
# --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    files: dict[int, list[str]]  # complete epoch -> its parts (all ranks)
    choices: EpochChoices  # which epochs each sum reads
    num_classes: int
    total_rows: int
    id_min: int = 0
    ids: np.ndarray | None = None  # sorted distinct ids when the id range is too wide for dense slots
    size: int = 0  # number of accumulator slots

    @property
    def epochs(self) -> list[int]:  # complete epochs with data, sorted
        return list(self.choices.epochs)

    def files_of(self, epochs: list[int]) -> list[str]:
        return [f for e in epochs for f in self.files[e]]

    def slots(self, pos: np.ndarray) -> np.ndarray:
        return pos if self.ids is None else np.searchsorted(self.ids, pos)

    def pos_sql(self) -> str:
        return f"sample_id - ({int(self.id_min)})" if self.ids is None else "sample_id"


def summarize(
    run_or_path: Run | str | os.PathLike,
    *,
    window: Window | str = DEFAULT_WINDOW,
    mode: str | None = None,
    el2n_at: int | None = None,
    threads: int | None = None,
    memory_limit: str = "1GB",
    temp_directory: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Per-sample summaries of a run, indexed by ``sample_id`` (samples seen in at least one
    complete epoch).

    Scorer columns (see :data:`SCORERS`; every one: **higher = more suspicious**):
    ``align_mean, align_selected, align_last, neg_frac, aum, loss_mean, confidence,
    variability, forgetting, el2n, disagreement, unfitted``. Other columns: ``label`` (given, as trained on),
    ``suggested_label`` (most frequent prediction over the window; ties go to the higher
    mean p(pred), then the lower class), ``suggested_prob`` (mean p(pred) over the window
    epochs that predicted it), ``alignment_selected`` (raw alignment at the selected epoch:
    **lower = more suspicious**, < 0 is the paper's flag), ``n_epochs`` (epochs present),
    ``n_window`` (window epochs with finite values), ``contradicted_plateau`` (1.0 when the
    model confidently contradicted the label at the plateau epoch of the training phase, 0.0
    when not; NaN in a run that did not memorise or without a row there: what the estimated
    count counts in a run that memorised, :mod:`gwa_diag.analysis.estimate`), ``clean_label`` when labels.parquet
    has it, and ``path`` (first; the sample's file relative to the dataset's root) when
    labels.parquet has it.

    ``frame.attrs["epochs"]`` is the :class:`~gwa_diag.analysis.phase.EpochChoices` the
    sums were read with (window, GWA selection and whether it fell back to the last epoch,
    EL2N and disagreement epochs); ``attrs`` also hold the class count, the run's path and,
    as plain values for JSON, the window's first and last epoch.

    Args:
        window: which epochs the means average over (:data:`gwa_diag.analysis.phase.WINDOWS`).
        mode: early-stopping rule, ``scratch`` or ``finetune`` (default: run.json, else scratch).
        el2n_at: epoch for EL2N (default :func:`gwa_diag.analysis.phase.el2n_epoch`); must be
            a complete epoch.
        threads: DuckDB threads (default: all cores).
        memory_limit: DuckDB memory limit; larger intermediate results spill to disk.
        temp_directory: where DuckDB spills (default: a private temporary directory).

    Raises:
        AnalysisError: the run has no complete epoch yet.
        ValueError: unknown window or mode, or ``el2n_at`` not a complete epoch.
    """
    # This public entry checks its own options (analyze() checks its in check_options).
    check_choice(window, Window, "window")
    if mode is not None:
        check_choice(mode, Mode, "mode")
    run = open_run(run_or_path)
    if threads is not None and int(threads) < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    def read() -> pd.DataFrame:
        files: dict[int, list[str]] = {}
        for f in run.sample_files():
            files.setdefault(int(f.parent.name.split("=", 1)[1]), []).append(str(f))
        if not files:
            raise AnalysisError(
                f"{run.path} has no complete epoch with sample rows yet (epochs.parquet lists none, "
                "or their samples/epoch=E parts are missing): nothing to summarise. Wait for the "
                "first epoch to finish, or check that the recorder wrote this directory."
            )
        if el2n_at is not None and int(el2n_at) not in files:
            raise InputError(f"el2n_at={el2n_at} is not a complete epoch with data; complete epochs: {sorted(files)}")
        with vanished_parts_as_file_not_found([f for fs in files.values() for f in fs]):
            return _summarize(
                run, files, window=str(window), mode=mode, el2n_at=el2n_at, threads=threads,
                memory_limit=memory_limit, temp_directory=temp_directory,
            )

    return read_listed_parts(read)


def _summarize(
    run: Run,
    files: dict[int, list[str]],
    *,
    window: str,
    mode: str | None,
    el2n_at: int | None,
    threads: int | None,
    memory_limit: str,
    temp_directory: str | os.PathLike | None,
) -> pd.DataFrame:
    # Epochs whose parts are missing (a crash between part and epoch row) have no rows and
    # are left out, so the window and the forgetting count see only epochs with data.
    choices = choose_epochs(run, sorted(files), window=window, mode=mode, el2n_at=el2n_at)
    all_files = [f for e in choices.epochs for f in files[e]]
    stats = _file_stats(all_files)
    num_classes = max(int(run.num_classes or 0), stats["max_class"] + 1, 2)
    plan = _Plan(files=files, choices=choices, num_classes=num_classes, total_rows=stats["rows"])
    own_tmp = temp_directory is None
    tmp = Path(tempfile.mkdtemp(prefix="gwa-duckdb-")) if own_tmp else Path(temp_directory)  # type: ignore[arg-type]
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
        con.execute(f"SET memory_limit = '{_sql_str(memory_limit)}'")
        con.execute(f"SET temp_directory = '{_sql_str(str(tmp))}'")
        # Row order does not matter to the accumulators; not keeping it saves memory.
        con.execute("SET preserve_insertion_order = false")
        if stats["id_min"] is not None and (
            stats["id_max"] - stats["id_min"] + 1 <= _DENSE_RANGE_FACTOR * stats["max_epoch_rows"] + _DENSE_RANGE_SLACK
        ):
            plan.id_min = int(stats["id_min"])
            plan.size = int(stats["id_max"] - stats["id_min"] + 1)
        else:
            ids = con.sql(f"SELECT DISTINCT sample_id FROM {read_parquet_sql(all_files)} ORDER BY 1").fetchnumpy()["sample_id"]
            plan.ids = np.asarray(ids, dtype=np.int64)
            plan.size = len(plan.ids)
        acc = _accumulate(con, plan, repeats=False)
        # Without repeated presentations every row fills its own (sample, epoch) cell.
        repeats = int(acc.present_count().sum()) != plan.total_rows
        if repeats:
            acc = _accumulate(con, plan, repeats=True)
        if acc.class_count is not None and acc.class_prob is not None:
            suggested, suggested_prob = _pick_suggestion(*acc.class_matrices(plan.num_classes))
        else:
            suggested, suggested_prob = _suggest_with_duckdb(con, plan, repeats)
        disagree, mismatch, disagree_n = _disagreement(con, plan, repeats, list(plan.choices.disagreement_epochs))
        plateau = _contradicted_at_plateau(con, plan, repeats)
    finally:
        con.close()
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    frame = _frame(plan, acc, suggested, suggested_prob, (disagree, mismatch, disagree_n), plateau, run.labels())
    frame.attrs.update(
        {
            "run": str(run.path),
            "epochs": choices,
            # Plain copies of the choices for JSON (report.json, scores.json, the bench tables).
            "window": choices.window_name,
            "window_epochs": [int(choices.window[0]), int(choices.window[-1])],
            "n_window_epochs": len(choices.window),
            "n_epochs": len(choices.epochs),
            "selected_epoch": int(choices.selection.used_epoch),
            "last_epoch": int(choices.last_epoch),
            "el2n_epoch": int(choices.el2n_epoch),
            "num_classes": int(plan.num_classes),
            "repeats_averaged": repeats,
        }
    )
    return frame


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def _file_stats(files: list[str]) -> dict[str, Any]:
    """Id range, largest class index and row counts from the Parquet footers (no data scan)."""
    id_min: int | None = None
    id_max: int | None = None
    ids_known = True
    max_class = -1
    rows = 0
    rows_per_epoch: dict[str, int] = {}
    for f in files:
        meta = pq.read_metadata(f)
        rows += meta.num_rows
        key = str(Path(f).parent)
        rows_per_epoch[key] = rows_per_epoch.get(key, 0) + meta.num_rows
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if group.num_rows == 0:
                continue
            for name in ("sample_id", "label", "pred"):
                st = group.column(names.index(name)).statistics if name in names else None
                if st is None or not st.has_min_max:
                    # Without footer statistics: distinct ids by query, classes by scan.
                    ids_known = ids_known and name != "sample_id"
                    if name != "sample_id":
                        max_class = max(max_class, _scan_max_class([f]))
                    continue
                if name == "sample_id":
                    id_min = int(st.min) if id_min is None else min(id_min, int(st.min))
                    id_max = int(st.max) if id_max is None else max(id_max, int(st.max))
                else:
                    max_class = max(max_class, int(st.max))
    return {
        "id_min": id_min if ids_known else None,
        "id_max": id_max if ids_known else None,
        "max_class": max_class,
        "rows": rows,
        "max_epoch_rows": max(rows_per_epoch.values(), default=0),
    }


def _scan_max_class(files: list[str]) -> int:
    with duckdb.connect(":memory:") as con:
        # fetchall: duckdb 2 relations have no fetchone (a relation keeps no result between calls).
        rows = con.sql(f"SELECT max(greatest(label, pred)) FROM {read_parquet_sql(files)}").fetchall()
    return int(rows[0][0]) if rows and rows[0][0] is not None else -1


def _source(files: list[str], *, repeats: bool) -> str:
    """Rows of ``files``: one per presentation, or one per (sample, epoch) when averaging
    repeated presentations (numeric signals averaged over finite values; prediction and
    label from the last presentation of the epoch)."""
    raw = read_parquet_sql(files)
    if not repeats:
        return raw
    means = ", ".join(
        f"avg(CASE WHEN isfinite({c}) THEN {c} END) AS {c}" for c in ("alignment", "margin", "loss", "p_label")
    )
    return (
        f"(SELECT sample_id, epoch, arg_max(label, step) AS label, {means}, "
        f"arg_max(pred, step) AS pred, arg_max(p_pred, step) AS p_pred FROM {raw} GROUP BY sample_id, epoch)"
    )


_FINITE = (
    "coalesce(isfinite(alignment) AND isfinite(margin) AND isfinite(loss) "
    "AND isfinite(p_label) AND isfinite(p_pred), false)"
)


class _Accumulators:
    """Per-sample running sums over the streamed batches (index = accumulator slot)."""

    SUMS = ("n", "a", "neg", "m", "l", "p", "p2")

    def __init__(self, plan: _Plan) -> None:
        size = plan.size
        self.size = size
        self.win = {k: np.zeros(size) for k in self.SUMS}
        # One byte per (epoch, sample): -1 absent, 0 incorrect, 1 correct (forgetting).
        # Epoch-major, because a batch holds one or two epochs: its writes stay close.
        self.state = np.full((len(plan.epochs), size), -1, dtype=np.int8)
        self.label = np.full(size, -1, dtype=np.int32)
        self.align_sel = np.full(size, np.nan)
        self.align_last = np.full(size, np.nan)
        # p(label), pred, label and p(pred) at the EL2N epoch (the el2n scorer's inputs).
        self.early = {"p_label": np.full(size, np.nan), "pred": np.full(size, -1, dtype=np.int64),
                      "label": np.full(size, -1, dtype=np.int64), "p_pred": np.full(size, np.nan)}
        # Window rows predicting the given label are counted per sample; only the (fewer)
        # rows predicting another class go into the samples x classes matrix.
        self.right_count = np.zeros(size)
        self.right_prob = np.zeros(size)
        cells = size * plan.num_classes
        dense = cells <= _DENSE_CLASS_CELLS
        self.class_count: np.ndarray | None = np.zeros(cells) if dense else None
        self.class_prob: np.ndarray | None = np.zeros(cells) if dense else None
        self._present: np.ndarray | None = None

    def add_state(self, slot: np.ndarray, cols: dict[str, Any]) -> None:
        """Correctness of each row into its (sample, epoch) cell; the given label."""
        column = _np(cols["column"], np.int64)
        self.state.reshape(-1)[column * self.size + slot] = _np(cols["correct"], np.int8)
        self.label[slot] = _np(cols["label"], np.int32)

    def add_window(self, slot: np.ndarray, cols: dict[str, Any], num_classes: int) -> None:
        ok = _np(cols["ok"], np.bool_)
        if not ok.all():
            # Rows with non-finite values (non-finite logits) stay out of every mean.
            slot, cols = slot[ok], {k: _np(v, None)[ok] for k, v in cols.items()}
        a = _np(cols["alignment"], np.float64)
        p = _np(cols["p_label"], np.float64)
        _add_into(self.win["n"], slot)
        _add_into(self.win["a"], slot, a)
        _add_into(self.win["neg"], slot, a < 0)
        _add_into(self.win["m"], slot, _np(cols["margin"], np.float64))
        _add_into(self.win["l"], slot, _np(cols["loss"], np.float64))
        _add_into(self.win["p"], slot, p)
        _add_into(self.win["p2"], slot, p * p)
        right = _np(cols["correct"], np.bool_)
        p_pred = _np(cols["p_pred"], np.float64)
        _add_into(self.right_count, slot, right)
        _add_into(self.right_prob, slot, np.where(right, p_pred, 0.0))
        if self.class_count is not None and self.class_prob is not None:
            pred = _np(cols["pred"], np.int64)
            wrong = np.flatnonzero(~right & (pred >= 0) & (pred < num_classes))
            key = slot[wrong] * num_classes + pred[wrong]
            np.add.at(self.class_count, key, 1.0)
            np.add.at(self.class_prob, key, p_pred[wrong])

    def class_matrices(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """(count, summed p_pred) per sample and predicted class over the window."""
        assert self.class_count is not None and self.class_prob is not None
        count = self.class_count.reshape(self.size, num_classes)
        prob = self.class_prob.reshape(self.size, num_classes)
        rows = np.flatnonzero((self.label >= 0) & (self.label < num_classes))
        count[rows, self.label[rows]] += self.right_count[rows]
        prob[rows, self.label[rows]] += self.right_prob[rows]
        return count, prob

    def present_count(self) -> np.ndarray:
        if self._present is None:
            out = np.empty(self.size, dtype=np.int64)
            for lo in range(0, self.size, _FORGET_CHUNK):
                out[lo : lo + _FORGET_CHUNK] = (self.state[:, lo : lo + _FORGET_CHUNK] >= 0).sum(axis=0)
            self._present = out
        return self._present

    def forgetting(self) -> np.ndarray:
        """Correct -> incorrect transitions between consecutive presented epochs."""
        out = np.zeros(self.size, dtype=np.int64)
        n_epochs = self.state.shape[0]
        if n_epochs < 2:
            return out
        present_all = self.present_count() == n_epochs
        for lo in range(0, self.size, _FORGET_CHUNK):
            s = self.state[:, lo : lo + _FORGET_CHUNK]
            full = present_all[lo : lo + _FORGET_CHUNK]
            # Samples seen in every epoch: compare neighbouring epochs directly.
            out[lo : lo + _FORGET_CHUNK] = ((s[:-1] == 1) & (s[1:] == 0)).sum(axis=0)
            if not full.all():
                gaps = np.flatnonzero(~full)
                out[lo + gaps] = _forgetting_with_gaps(np.ascontiguousarray(s[:, gaps].T))
        return out


def _forgetting_with_gaps(s: np.ndarray) -> np.ndarray:
    """Forgetting events of samples that skipped some epochs: an epoch is compared with the
    sample's previous presentation (Toneva et al. compare successive presentations)."""
    n_epochs = s.shape[1]
    cols = np.arange(n_epochs, dtype=np.int16)
    present = s >= 0
    # Column of the latest presented epoch at or before each column (-1: none yet), shifted
    # by one: the previous presentation.
    last = np.maximum.accumulate(np.where(present, cols, np.int16(-1)), axis=1)
    prev = np.full_like(last, -1)
    prev[:, 1:] = last[:, :-1]
    prev_state = np.take_along_axis(s, np.maximum(prev, 0).astype(np.intp), axis=1)
    events = present & (s == 0) & (prev >= 0) & (prev_state == 1)
    return events.sum(axis=1)


def _add_into(acc: np.ndarray, slot: np.ndarray, weights: np.ndarray | None = None) -> None:
    """acc[slot] += weights (or += 1), repeated slots accumulating."""
    if acc.size <= _BINCOUNT_MAX:
        acc += np.bincount(slot, weights=weights, minlength=acc.size)
    else:
        # bincount returns a new full-length array per call: for hundreds of thousands of
        # samples every batch would fault in megabytes of fresh pages. add.at adds in place
        # (fast for matching float64 operands).
        np.add.at(acc, slot, 1.0 if weights is None else np.asarray(weights, dtype=np.float64))


def _pick_suggestion(count: np.ndarray, prob_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent class; ties -> higher mean p(pred), then lower class index."""
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.where(count > 0, prob_sum / np.maximum(count, 1), 0.0)
    # Counts are integers and mean_prob lies in [0, 1]: adding half of it orders ties by
    # probability without ever overturning a count difference.
    key = count + 0.5 * np.clip(mean_prob, 0.0, 1.0)
    best = np.argmax(key, axis=1)
    has = count.max(axis=1) > 0
    suggested = np.where(has, best, -1)
    prob = np.where(has, mean_prob[np.arange(count.shape[0]), best], np.nan)
    return suggested, prob


def _accumulate(con: Any, plan: _Plan, *, repeats: bool) -> _Accumulators:
    """Stream the rows through DuckDB into per-sample accumulators.

    Three reads, so that no file's float columns are decoded without need: the window
    epochs (every column), the other epochs (ids, labels, predictions: forgetting only),
    and the few single epochs read directly (selected, last, EL2N).
    """
    acc = _Accumulators(plan)
    pos = plan.pos_sql()
    state_cols = f"{_column_sql(plan.epochs)} AS column, CAST(pred = label AS TINYINT) AS correct, label"
    window_sql = f"""
        SELECT {pos} AS pos, {state_cols}, pred, alignment, margin, loss, p_label, p_pred, {_FINITE} AS ok
        FROM {_source(plan.files_of(list(plan.choices.window)), repeats=repeats)}"""
    for batch in _batches(con, window_sql):
        cols = _columns(batch)
        slot = plan.slots(_np(cols["pos"], np.int64))
        acc.add_state(slot, cols)
        acc.add_window(slot, cols, plan.num_classes)
    before = [e for e in plan.epochs if e < plan.choices.window[0]]
    if before:
        state_sql = f"SELECT {pos} AS pos, {state_cols} FROM {_source(plan.files_of(before), repeats=repeats)}"
        for batch in _batches(con, state_sql):
            cols = _columns(batch)
            acc.add_state(plan.slots(_np(cols["pos"], np.int64)), cols)
    specials = plan.choices.point_epochs()
    used, last, early = plan.choices.selection.used_epoch, plan.choices.last_epoch, plan.choices.el2n_epoch
    point_sql = f"""
        SELECT {pos} AS pos, CAST(epoch AS INTEGER) AS epoch, label, pred, alignment, p_label, p_pred
        FROM {_source(plan.files_of(specials), repeats=repeats)}"""
    for batch in _batches(con, point_sql):
        cols = _columns(batch)
        slot = plan.slots(_np(cols["pos"], np.int64))
        epoch = _np(cols["epoch"], np.int64)
        alignment = _np(cols["alignment"], np.float64)
        for target, ep in ((acc.align_sel, used), (acc.align_last, last)):
            hit = epoch == ep
            target[slot[hit]] = alignment[hit]
        hit = epoch == early
        for name, column, dtype in (("p_label", "p_label", np.float64), ("pred", "pred", np.int64),
                                    ("label", "label", np.int64), ("p_pred", "p_pred", np.float64)):
            acc.early[name][slot[hit]] = _np(cols[column], dtype)[hit]
    return acc


def _column_sql(epochs: list[int]) -> str:
    """SQL for the epoch's column in the (sample, epoch) matrix: its rank among the epochs."""
    if epochs == list(range(epochs[0], epochs[0] + len(epochs))):
        return f"CAST(epoch - {int(epochs[0])} AS INTEGER)"
    cases = " ".join(f"WHEN {int(e)} THEN {i}" for i, e in enumerate(epochs))
    return f"CAST(CASE epoch {cases} END AS INTEGER)"


def _batches(con: Any, query: str) -> Iterator[Any]:
    rel = con.sql(query)
    # duckdb >= 1.4 names it to_arrow_reader; older releases fetch_record_batch.
    reader = rel.to_arrow_reader(_BATCH_ROWS) if hasattr(rel, "to_arrow_reader") else rel.fetch_record_batch(_BATCH_ROWS)
    for batch in reader:
        if batch.num_rows:
            yield batch


def _columns(batch: Any) -> dict[str, Any]:
    return {name: batch.column(i) for i, name in enumerate(batch.schema.names)}


def _np(array: Any, dtype: Any) -> np.ndarray:
    """Arrow column (or numpy array) -> numpy; nulls become NaN (floats), -1 (integers) or
    False (booleans)."""
    if isinstance(array, np.ndarray):
        return array if dtype is None else array.astype(dtype, copy=False)
    if array.null_count:
        out = array.to_numpy(zero_copy_only=False)
        missing = pd.isna(out)
        kind = np.dtype(dtype).kind if dtype is not None else out.dtype.kind
        fill = {"i": -1, "u": 0, "b": False}.get(kind, np.nan)
        out = np.where(missing, fill, out)
        return np.asarray(out, dtype=dtype) if dtype is not None else out
    out = array.to_numpy(zero_copy_only=False)
    return out if dtype is None else out.astype(dtype, copy=False)


def _suggest_with_duckdb(con: Any, plan: _Plan, repeats: bool) -> tuple[np.ndarray, np.ndarray]:
    """Suggested label for many classes: DuckDB groups (sample, pred) instead of a dense
    samples x classes matrix."""
    # The dense path's order, lexicographic: most frequent prediction, then the higher mean
    # p(pred), then the lower class (a single weighted sum of the three cannot keep a small
    # p(pred) difference from being outweighed by the class term).
    query = f"""
        WITH counts AS (
            SELECT {plan.pos_sql()} AS pos, pred, count(*) AS n, avg(p_pred) AS mp
            FROM {_source(plan.files_of(list(plan.choices.window)), repeats=repeats)}
            WHERE {_FINITE} AND pred >= 0
            GROUP BY ALL
        )
        SELECT pos, pred, mp AS prob FROM counts
        QUALIFY row_number() OVER (PARTITION BY pos ORDER BY n DESC, coalesce(mp, 0) DESC, pred ASC) = 1
    """
    out = con.sql(query).fetchnumpy()
    slot = plan.slots(np.asarray(out["pos"], dtype=np.int64))
    suggested = np.full(plan.size, -1, dtype=np.int64)
    prob = np.full(plan.size, np.nan)
    suggested[slot] = np.asarray(out["pred"], dtype=np.int64)
    prob[slot] = np.asarray(out["prob"], dtype=np.float64)
    return suggested, prob


def _disagreement(con: Any, plan: _Plan, repeats: bool, epochs: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slot, over ``epochs``: (epochs in which the prediction was another class than the
    label with p(pred) at least that class's confident-learning threshold, the mean p(label)
    of the samples labelled with it in the same epoch; epochs in which it was another class
    at all; epochs with a finite row)."""
    source = _source(plan.files_of(epochs), repeats=repeats)
    query = f"""
        WITH rows AS (SELECT {plan.pos_sql()} AS pos, epoch, label, pred, p_label, p_pred FROM {source}
                      WHERE {_FINITE}),
             limits AS (SELECT epoch, label AS cls, avg(p_label) AS t FROM rows GROUP BY ALL)
        SELECT r.pos, sum(CASE WHEN r.pred <> r.label AND r.p_pred >= l.t THEN 1.0 ELSE 0.0 END) AS hits,
               sum(CASE WHEN r.pred <> r.label THEN 1.0 ELSE 0.0 END) AS misses, count(*) AS seen
        FROM rows r LEFT JOIN limits l ON r.epoch = l.epoch AND r.pred = l.cls
        GROUP BY r.pos"""
    out = con.sql(query).fetchnumpy()
    hits, misses, seen = np.zeros(plan.size), np.zeros(plan.size), np.zeros(plan.size)
    slot = plan.slots(np.asarray(out["pos"], dtype=np.int64))
    hits[slot] = np.asarray(out["hits"], dtype=np.float64)
    misses[slot] = np.asarray(out["misses"], dtype=np.float64)
    seen[slot] = np.asarray(out["seen"], dtype=np.float64)
    return hits, misses, seen


def _contradicted_at_plateau(con: Any, plan: _Plan, repeats: bool) -> np.ndarray:
    """Per slot: 1.0 when the model confidently contradicted the label at the training phase's
    plateau epoch (as :func:`_disagreement` counts), 0.0 when not, NaN in a run that did not
    memorise (only then is it counted, so only then read), without data at the plateau or
    without a finite row there. The per-sample form of the phase's noise estimate."""
    epoch = plan.choices.phase.phase.plateau
    if not plan.choices.phase.memorised or epoch is None or int(epoch) not in plan.files:
        return np.full(plan.size, np.nan)
    # One row per sample and epoch (repeats merged by _source): the count is 1 or 0.
    hits, _, seen = _disagreement(con, plan, repeats, [int(epoch)])
    return np.where(seen > 0, hits, np.nan)


def _frame(
    plan: _Plan,
    acc: _Accumulators,
    suggested: np.ndarray,
    suggested_prob: np.ndarray,
    counts: tuple[np.ndarray, np.ndarray, np.ndarray],
    plateau: np.ndarray,
    labels: pd.DataFrame | None,
) -> pd.DataFrame:
    disagree, mismatch, disagree_n = counts
    present = acc.present_count()
    keep = np.flatnonzero(present > 0)
    ids = plan.ids[keep] if plan.ids is not None else keep.astype(np.int64) + plan.id_min
    w = {k: v[keep] for k, v in acc.win.items()}
    sums = Sums(
        num_classes=plan.num_classes, n=w["n"], alignment=w["a"], negative=w["neg"], margin=w["m"], loss=w["l"],
        p_label=w["p"], p_label_sq=w["p2"], forgetting=acc.forgetting()[keep],
        alignment_selected=acc.align_sel[keep], alignment_last=acc.align_last[keep],
        el2n_p_label=acc.early["p_label"][keep], el2n_pred=acc.early["pred"][keep],
        el2n_label=acc.early["label"][keep], el2n_p_pred=acc.early["p_pred"][keep],
        disagree=disagree[keep], disagree_n=disagree_n[keep], mismatch=mismatch[keep],
    )
    sugg = suggested[keep]
    data: dict[str, Any] = {
        "label": acc.label[keep],
        "suggested_label": pd.array(np.where(sugg >= 0, sugg, 0), dtype="Int64"),
        "suggested_prob": suggested_prob[keep],
        "alignment_selected": acc.align_sel[keep],
        "n_epochs": present[keep],
        "n_window": w["n"].astype(np.int64),
        # Not a scorer: what the estimated count counts in a run that memorised its labels.
        CONTRADICTED_PLATEAU: plateau[keep],
        **scores(sums),  # every scorer: higher = more suspicious
    }
    frame = pd.DataFrame(data, index=pd.Index(ids, name="sample_id"))
    if (sugg < 0).any():
        frame.loc[sugg < 0, "suggested_label"] = pd.NA
    if labels is not None and "clean_label" in labels.columns:
        clean = labels.set_index("sample_id")["clean_label"]
        frame.insert(1, "clean_label", clean.reindex(frame.index).astype("Int64"))
    if labels is not None and "path" in labels.columns:
        # First: the ranking, the suspects file and the app show each sample's file beside its id.
        frame.insert(0, "path", labels.set_index("sample_id")["path"].reindex(frame.index).astype("string"))
    return frame
