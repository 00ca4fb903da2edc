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
  ``GROUP BY sample_id`` with a dozen aggregates was slower on two cores
  (``bench/analysis_scale.py`` times the analysis against one bare ``GROUP BY``); the scan
  stays in DuckDB.
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

from gwa_diag.analysis.contradiction import contradicted
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
# A batch is added as slices of consecutive slots when its runs average this many rows.
_MIN_RUN = 64


# --------------------------------------------------------------------------------------
# summarize
# --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    files: dict[int, list[str]]  # complete epoch -> its parts (all ranks)
    choices: EpochChoices  # which epochs each sum reads
    num_classes: int
    id_min: int = 0
    ids: np.ndarray | None = None  # sorted distinct ids when the id range is too wide for dense slots
    size: int = 0  # number of accumulator slots
    checked: bool = False  # planned from what the run recorded: the stream checks each row fits

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
    when not; NaN in a run that did not begin to memorise or without a row there: what the estimated
    count counts in a run that began memorising, :mod:`gwa_diag.analysis.estimate`), ``clean_label`` when labels.parquet
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
    # This public entry checks its own options (analyze() checks its in AnalysisOptions).
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
    labels = run.labels()
    own_tmp = temp_directory is None
    tmp = Path(tempfile.mkdtemp(prefix="gwa-duckdb-")) if own_tmp else Path(temp_directory)  # type: ignore[arg-type]
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
        con.execute(f"SET memory_limit = '{_sql_str(memory_limit)}'")
        con.execute(f"SET temp_directory = '{_sql_str(str(tmp))}'")
        # Row order does not matter to the accumulators; not keeping it saves memory.
        con.execute("SET preserve_insertion_order = false")
        # The sample ids and class count the run recorded (labels.parquet, run.json) size the
        # accumulators without opening every part's footer; the stream checks that every row
        # fits, and a run whose rows do not is planned again from the parts themselves.
        plan = _plan_from_run(run, files, choices, labels)
        try:
            if plan is None:
                raise _OutsidePlan
            acc = _accumulate(con, plan, repeats=False)
        except _OutsidePlan:
            plan = _plan_from_parts(con, run, files, choices, all_files)
            acc = _accumulate(con, plan, repeats=False)
        # Without repeated presentations every row fills its own (sample, epoch) cell.
        repeats = int(acc.present_count().sum()) != acc.rows
        if repeats:
            acc = _accumulate(con, plan, repeats=True)
        single = _read_single_epochs(con, plan, repeats)
        if acc.class_count is not None and acc.class_prob is not None:
            suggested, suggested_prob = _pick_suggestion(*acc.class_matrices(plan.num_classes))
        else:
            suggested, suggested_prob = _suggest_with_duckdb(con, plan, repeats)
    finally:
        con.close()
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    frame = _frame(plan, acc, single, suggested, suggested_prob, labels)
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


class _OutsidePlan(Exception):
    """A streamed row's sample id or class does not fit the accumulators' plan."""


def _plan_from_run(run: Run, files: dict[int, list[str]], choices: EpochChoices,
                   labels: pd.DataFrame | None) -> _Plan | None:
    """Dense slots over labels.parquet's id range and run.json's class count; None when the
    run recorded neither or the ids are too sparse for dense slots."""
    if labels is None or not len(labels) or not run.num_classes:
        return None
    ids = labels["sample_id"].to_numpy()
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo + 1 > _DENSE_RANGE_FACTOR * len(ids) + _DENSE_RANGE_SLACK:
        return None
    return _Plan(files=files, choices=choices, num_classes=max(int(run.num_classes), 2), id_min=lo, size=hi - lo + 1, checked=True)


def _plan_from_parts(con: Any, run: Run, files: dict[int, list[str]], choices: EpochChoices,
                     all_files: list[str]) -> _Plan:
    """Slots and class count from the parts' footers (a query for the distinct ids when the
    footers lack statistics or the id range is too sparse for dense slots)."""
    stats = _file_stats(all_files)
    num_classes = max(int(run.num_classes or 0), stats["max_class"] + 1, 2)
    plan = _Plan(files=files, choices=choices, num_classes=num_classes)
    if stats["id_min"] is not None and (
        stats["id_max"] - stats["id_min"] + 1 <= _DENSE_RANGE_FACTOR * stats["max_epoch_rows"] + _DENSE_RANGE_SLACK
    ):
        plan.id_min = int(stats["id_min"])
        plan.size = int(stats["id_max"] - stats["id_min"] + 1)
    else:
        ids = con.sql(f"SELECT DISTINCT sample_id FROM {read_parquet_sql(all_files)} ORDER BY 1").fetchnumpy()["sample_id"]
        plan.ids = np.asarray(ids, dtype=np.int64)
        plan.size = len(plan.ids)
    return plan


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

    #: Rows of ``sums``: window rows, and the sums of alignment, of alignment < 0, margin,
    #: loss, p(label), p(label)^2; then the rows predicting the label and their p(pred).
    SUMS = ("n", "a", "neg", "m", "l", "p", "p2", "right_count", "right_prob")

    def __init__(self, plan: _Plan) -> None:
        size = plan.size
        self.size = size
        self.sums = np.zeros((len(self.SUMS), size))
        # One byte per (epoch, sample): -1 absent, 0 incorrect, 1 correct (forgetting).
        # Epoch-major, because a batch holds one or two epochs: its writes stay close.
        self.state = np.full((len(plan.epochs), size), -1, dtype=np.int8)
        self.label = np.full(size, -1, dtype=np.int32)
        # Window rows predicting the given label are counted per sample (in ``sums``); only
        # the (fewer) rows predicting another class go into the samples x classes matrix.
        cells = size * plan.num_classes
        dense = cells <= _DENSE_CLASS_CELLS
        self.class_count: np.ndarray | None = np.zeros(cells) if dense else None
        self.class_prob: np.ndarray | None = np.zeros(cells) if dense else None
        self._present: np.ndarray | None = None
        self.rows = 0  # rows streamed

    @property
    def win(self) -> dict[str, np.ndarray]:
        return dict(zip(self.SUMS, self.sums))

    def add_state(self, slot: np.ndarray, column: int | np.ndarray, correct: np.ndarray, label: np.ndarray) -> None:
        """Correctness of each row (1, 0; -1 unknown) into its (sample, ``column``) cell, one
        column for the whole batch or one per row; the given label."""
        runs = _runs(slot) if isinstance(column, int) else None
        if runs is None:
            self.state.reshape(-1)[column * self.size + slot] = correct
            self.label[slot] = label
            return
        row = self.state[column]
        for start, stop in runs:
            lo = int(slot[start])
            row[lo : lo + stop - start] = correct[start:stop]
            self.label[lo : lo + stop - start] = label[start:stop]

    def add_window(self, slot: np.ndarray, cols: dict[str, Any], right: np.ndarray, num_classes: int) -> None:
        """A window batch's float columns into the sums; ``right``: pred == label per row."""
        floats = {k: _np(cols[k], None) for k in ("alignment", "margin", "loss", "p_label", "p_pred")}
        pred = _np(cols["pred"], np.int64)
        # Non-finite values propagate into a sum: one reduction per column tells whether the
        # batch needs the row mask at all.
        if not all(np.isfinite(np.add.reduce(v)) for v in floats.values()):
            ok = np.logical_and.reduce([np.isfinite(v) for v in floats.values()])
            # Rows with non-finite values (non-finite logits) stay out of every mean.
            slot, right, pred = slot[ok], right[ok], pred[ok]
            floats = {k: v[ok] for k, v in floats.items()}
        a, p, p_pred = floats["alignment"], floats["p_label"], floats["p_pred"]
        # Each summand as the float64 the sums hold (float32 inputs are cast exactly).
        rows = (None, a, a < 0, floats["margin"], floats["loss"], p, np.multiply(p, p, dtype=np.float64), right,
                np.multiply(p_pred, right, dtype=np.float64))
        runs = _runs(slot)
        if runs is None:
            for acc, weights in zip(self.sums, rows):
                _add_into(acc, slot, None if weights is None else np.asarray(weights, dtype=np.float64))
        else:
            # The recorder writes each epoch's part sorted by sample id: a batch is a few
            # runs of consecutive slots, added as slices (no scatter, no per-batch copies).
            for start, stop in runs:
                lo = int(slot[start])
                hi = lo + stop - start
                for acc, weights in zip(self.sums, rows):
                    if weights is None:
                        acc[lo:hi] += 1.0
                    else:
                        np.add(acc[lo:hi], weights[start:stop], out=acc[lo:hi], casting="unsafe")
        if self.class_count is not None and self.class_prob is not None:
            wrong = np.flatnonzero(~right & (pred >= 0) & (pred < num_classes))
            key = slot[wrong] * num_classes + pred[wrong]
            np.add.at(self.class_count, key, 1.0)
            np.add.at(self.class_prob, key, p_pred[wrong].astype(np.float64))

    def class_matrices(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """(count, summed p_pred) per sample and predicted class over the window."""
        assert self.class_count is not None and self.class_prob is not None
        count = self.class_count.reshape(self.size, num_classes)
        prob = self.class_prob.reshape(self.size, num_classes)
        rows = np.flatnonzero((self.label >= 0) & (self.label < num_classes))
        win = self.win
        count[rows, self.label[rows]] += win["right_count"][rows]
        prob[rows, self.label[rows]] += win["right_prob"][rows]
        return count, prob

    def present_count(self) -> np.ndarray:
        if self._present is None:
            # Epoch by epoch: contiguous rows of the matrix, no matrix-sized temporaries.
            out = np.zeros(self.size, dtype=np.int64)
            for row in self.state:
                out += row >= 0
            self._present = out
        return self._present

    def forgetting(self) -> np.ndarray:
        """Correct -> incorrect transitions between consecutive presented epochs."""
        out = np.zeros(self.size, dtype=np.int64)
        n_epochs = self.state.shape[0]
        if n_epochs < 2:
            return out
        # Samples seen in every epoch: compare neighbouring epochs directly.
        for before, now in zip(self.state[:-1], self.state[1:]):
            out += (before == 1) & (now == 0)
        gaps = np.flatnonzero(self.present_count() != n_epochs)
        for lo in range(0, len(gaps), _FORGET_CHUNK):
            some = gaps[lo : lo + _FORGET_CHUNK]
            out[some] = _forgetting_with_gaps(np.ascontiguousarray(self.state[:, some].T))
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


def _runs(index: np.ndarray) -> list[tuple[int, int]] | None:
    """(start, stop) positions of the runs of consecutive values (each one more than the
    last) in ``index``; None when the runs are too short for slices to pay (rows in random
    order, a strided sampler's shard)."""
    if len(index) == 0:
        return []
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    if len(breaks) * _MIN_RUN > len(index):
        return None
    bounds = [0, *breaks.tolist(), len(index)]
    return list(zip(bounds[:-1], bounds[1:]))


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
    suggested = np.empty(count.shape[0], dtype=np.int64)
    prob = np.empty(count.shape[0])
    # In blocks of rows: the temporaries stay in cache however many samples there are.
    for lo in range(0, count.shape[0], _FORGET_CHUNK):
        c, p = count[lo : lo + _FORGET_CHUNK], prob_sum[lo : lo + _FORGET_CHUNK]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_prob = np.where(c > 0, p / np.maximum(c, 1), 0.0)
        # Counts are integers and mean_prob lies in [0, 1]: adding half of it orders ties by
        # probability without ever overturning a count difference.
        best = np.argmax(c + 0.5 * np.clip(mean_prob, 0.0, 1.0), axis=1)
        has = c.max(axis=1) > 0
        suggested[lo : lo + _FORGET_CHUNK] = np.where(has, best, -1)
        prob[lo : lo + _FORGET_CHUNK] = np.where(has, mean_prob[np.arange(c.shape[0]), best], np.nan)
    return suggested, prob


def _accumulate(con: Any, plan: _Plan, *, repeats: bool) -> _Accumulators:
    """Stream every complete epoch's rows through DuckDB, once, into per-sample accumulators.

    Two streams, so that no float column is decoded without need: the window epochs with
    every column, then the other epochs with ids, labels and predictions only (they feed the
    forgetting count and the presence check). DuckDB only decodes; the per-row work (the
    epoch's column, correctness, finiteness) is done by numpy on the batch, faster than asking
    DuckDB for derived columns (``bench/analysis_scale.py``).
    """
    acc = _Accumulators(plan)
    window = list(plan.choices.window)
    others = [e for e in plan.epochs if e not in set(window)]
    state = f"{plan.pos_sql()} AS pos, epoch, label, pred"
    streams = [(f"SELECT {state}, alignment, margin, loss, p_label, p_pred "
                f"FROM {_source(plan.files_of(window), repeats=repeats)}", True)]
    if others:
        streams.append((f"SELECT {state} FROM {_source(plan.files_of(others), repeats=repeats)}", False))
    # epoch -> its column in the (epoch, sample) matrix
    first = plan.epochs[0]
    column_of = np.full(plan.epochs[-1] - first + 1, -1, dtype=np.int64)
    column_of[np.asarray(plan.epochs) - first] = np.arange(len(plan.epochs))
    for query, floats in streams:
        for batch in _batches(con, query):
            cols = _columns(batch)
            slot = plan.slots(_np(cols["pos"], np.int64))
            epoch = _np(cols["epoch"], np.int64)
            # Batches usually hold one epoch (a part's row groups): one column for all rows.
            single = epoch[0] == epoch[-1] and bool((epoch == epoch[0]).all())
            column = int(column_of[epoch[0] - first]) if single else column_of[epoch - first]
            label, pred = cols["label"], cols["pred"]
            label_np, pred_np = _np(label, np.int32), _np(pred, np.int32)
            if plan.checked and not _fits(slot, (label_np, pred_np), plan):
                raise _OutsidePlan
            acc.rows += batch.num_rows
            correct = (pred_np == label_np).astype(np.int8)
            if label.null_count or pred.null_count:
                correct[~(_valid(label) & _valid(pred))] = -1  # unknown: as if absent
            acc.add_state(slot, column, correct, label_np)
            if floats:
                acc.add_window(slot, cols, correct == 1, plan.num_classes)
    return acc


def _fits(slot: np.ndarray, classes: tuple[np.ndarray, ...], plan: _Plan) -> bool:
    """Every slot in [0, plan.size) and every class below plan.num_classes (nulls read -1)."""
    if slot.min() < 0 or slot.max() >= plan.size:
        return False
    return all(int(values.max()) < plan.num_classes for values in classes)


def _valid(array: Any) -> np.ndarray:
    """Arrow column -> bool mask of its non-null rows."""
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


@dataclass
class _Single:
    """What the summaries read from single epochs, per accumulator slot."""

    align_sel: np.ndarray  # alignment at the selected (or fallback) epoch
    align_last: np.ndarray  # alignment at the last epoch
    early: dict[str, np.ndarray]  # p_label, pred, label, p_pred at the EL2N epoch
    contradicted: np.ndarray  # disagreement epochs confidently contradicted
    unfitted: np.ndarray  # disagreement epochs predicting another class at all
    n_disagreement: np.ndarray  # disagreement epochs with a finite row
    contradicted_plateau: np.ndarray  # confidently contradicted at the plateau epoch: 1.0 / 0.0 / NaN


# Integers as numpy reads them (nulls -1), floats as stored (nulls NaN).
_SINGLE_TYPES = {"pos": np.int64, "epoch": np.int64, "label": np.int32, "pred": np.int32, "alignment": None,
                 "p_label": None, "p_pred": None, "ok": np.bool_}


def _read_single_epochs(con: Any, plan: _Plan, repeats: bool) -> _Single:
    """Read the few epochs that are used one at a time (the selected, the last, EL2N's, the
    disagreement epochs and, in a run that began memorising, the plateau), each in full: the
    confident-learning thresholds need all of an epoch's rows at once
    (:mod:`gwa_diag.analysis.contradiction`).

    ``contradicted_plateau`` is NaN in a run that did not begin to memorise (only then is it counted, so only then
    read), without data at the plateau, and for samples without a finite row there."""
    size, choices = plan.size, plan.choices
    out = _Single(
        align_sel=np.full(size, np.nan), align_last=np.full(size, np.nan),
        early={"p_label": np.full(size, np.nan), "pred": np.full(size, -1, dtype=np.int64),
               "label": np.full(size, -1, dtype=np.int64), "p_pred": np.full(size, np.nan)},
        contradicted=np.zeros(size), unfitted=np.zeros(size), n_disagreement=np.zeros(size),
        contradicted_plateau=np.full(size, np.nan),
    )
    plateau = choices.phase.plateau
    plateau = int(plateau) if choices.phase.memorising and plateau is not None and int(plateau) in plan.files else None
    counted = set(choices.disagreement_epochs)
    wanted = set(choices.point_epochs()) | counted | ({plateau} if plateau is not None else set())
    # One query for all of them (each costs a plan and a scan start), split by epoch here.
    query = f"""
        SELECT {plan.pos_sql()} AS pos, CAST(epoch AS BIGINT) AS epoch, label, pred, alignment, p_label, p_pred,
               {_FINITE} AS ok
        FROM {_source(plan.files_of(sorted(wanted)), repeats=repeats)}"""
    pieces: dict[int, list[dict[str, np.ndarray]]] = {}
    for batch in _batches(con, query):
        cols = {name: _np(batch.column(name), dtype) for name, dtype in _SINGLE_TYPES.items()}
        epochs = cols["epoch"]
        if epochs[0] == epochs[-1] and (epochs == epochs[0]).all():  # the usual batch: one epoch
            pieces.setdefault(int(epochs[0]), []).append(cols)
            continue
        for epoch in np.unique(epochs).tolist():
            at = epochs == epoch
            pieces.setdefault(int(epoch), []).append({name: values[at] for name, values in cols.items()})
    for epoch, parts in sorted(pieces.items()):
        cols = {name: np.concatenate([part[name] for part in parts]) for name in _SINGLE_TYPES}
        slot = plan.slots(cols["pos"])
        if epoch == choices.selection.used_epoch:
            out.align_sel[slot] = cols["alignment"]
        if epoch == choices.last_epoch:
            out.align_last[slot] = cols["alignment"]
        if epoch == choices.el2n_epoch:
            for name in out.early:
                out.early[name][slot] = cols[name]
        if epoch in counted or epoch == plateau:
            label, pred, ok = cols["label"], cols["pred"], cols["ok"]
            hit = contradicted(label, pred, cols["p_label"], cols["p_pred"], ok, plan.num_classes)
            if epoch in counted:
                _add_into(out.contradicted, slot, hit)
                _add_into(out.unfitted, slot, ok & (pred != label))
                _add_into(out.n_disagreement, slot, ok)
            if epoch == plateau:
                # One row per sample and epoch (repeats merged by _source).
                out.contradicted_plateau[slot[ok]] = hit[ok]
    return out


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


def _frame(
    plan: _Plan,
    acc: _Accumulators,
    single: _Single,
    suggested: np.ndarray,
    suggested_prob: np.ndarray,
    labels: pd.DataFrame | None,
) -> pd.DataFrame:
    present = acc.present_count()
    keep = np.flatnonzero(present > 0)
    ids = plan.ids[keep] if plan.ids is not None else keep.astype(np.int64) + plan.id_min
    w = {k: v[keep] for k, v in acc.win.items()}
    sums = Sums(
        num_classes=plan.num_classes, n=w["n"], alignment=w["a"], negative=w["neg"], margin=w["m"], loss=w["l"],
        p_label=w["p"], p_label_sq=w["p2"], forgetting=acc.forgetting()[keep],
        alignment_selected=single.align_sel[keep], alignment_last=single.align_last[keep],
        el2n_p_label=single.early["p_label"][keep], el2n_pred=single.early["pred"][keep],
        el2n_label=single.early["label"][keep], el2n_p_pred=single.early["p_pred"][keep],
        contradicted=single.contradicted[keep], unfitted=single.unfitted[keep],
        n_disagreement=single.n_disagreement[keep],
    )
    sugg = suggested[keep]
    data: dict[str, Any] = {
        "label": acc.label[keep],
        "suggested_label": pd.array(np.where(sugg >= 0, sugg, 0), dtype="Int64"),
        "suggested_prob": suggested_prob[keep],
        "alignment_selected": single.align_sel[keep],
        "n_epochs": present[keep],
        "n_window": w["n"].astype(np.int64),
        # Not a scorer: what the estimated count counts in a run that began memorising its labels.
        CONTRADICTED_PLATEAU: single.contradicted_plateau[keep],
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
