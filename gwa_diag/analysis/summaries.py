"""Per-sample summaries of a recorded run: one row per sample id, one column per scorer.

Every scorer column is oriented so that **higher = more suspicious** (more likely
mislabeled); the registry :data:`SCORERS` says, for each one, what it measures, which raw
direction it was flipped from, and where it comes from.

How the numbers are computed (out of core, from the Parquet parts of complete epochs only):

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

import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gwa_diag.store import Run, RunDirError, open_run, read_listed_parts
from gwa_diag.checks import InputError, Mode, Window, check_choice

if TYPE_CHECKING:  # alignment imports torch; only selected_epoch needs it, imported lazily
    from gwa_diag.early_stopping import EarlyStopResult

__all__ = [
    "SCORERS",
    "WINDOWS",
    "AnalysisError",
    "summarize",
    "selected_epoch",
    "window_epochs",
    "el2n_epoch",
]

#: Averaging windows for the mean-over-epochs scorers (in the reference measurements on
#: CIFAR-10-N, the second half of training beat "all epochs after warm-up" for every signal).
#: The valid names are :data:`gwa_diag.checks.Window`; this dict describes each one.
WINDOWS: dict[str, str] = {
    "second_half": "the last ceil(n/2) of the n complete epochs (default)",
    "after_warmup": "all complete epochs except the first 10% (warm-up), at least one kept",
    "all": "every complete epoch",
}

WARMUP_FRACTION = 0.1

#: name -> description. Every column is oriented so that HIGHER = MORE SUSPICIOUS.
SCORERS: dict[str, str] = {
    "align_mean": (
        "-(mean gradient-weight alignment over the window epochs). Raw alignment: lower = more "
        "suspicious, so it is negated. Hölzl et al., NeurIPS 2025 (arXiv 2510.25480)."
    ),
    "align_selected": (
        "-(alignment at the GWA-selected early-stopping epoch; the last epoch when the GWA "
        "rule selects none). Raw alignment: lower = more suspicious, so it is negated. "
        "Hölzl et al. 2025."
    ),
    "align_last": (
        "-(alignment at the last complete epoch). Raw alignment: lower = more suspicious, so it "
        "is negated. Hölzl et al. 2025."
    ),
    "neg_frac": (
        "fraction of window epochs in which the alignment was negative (the sample pulled the "
        "head against its direction). Already higher = more suspicious. Hölzl et al. 2025."
    ),
    "aum": (
        "-(area under the margin): -(mean over the window of logit[label] - max other logit). "
        "Raw AUM: lower = more suspicious. Pleiss et al., NeurIPS 2020."
    ),
    "loss_mean": "mean cross-entropy over the window. Higher = more suspicious.",
    "confidence": (
        "-(mean softmax probability of the given label over the window). Raw confidence: "
        "lower = more suspicious. Dataset cartography, Swayamdipta et al., EMNLP 2020."
    ),
    "variability": (
        "population std of p(label) over the window epochs. Higher = more suspicious (ambiguous "
        "or unstable); weaker for noise than confidence. Swayamdipta et al. 2020."
    ),
    "forgetting": (
        "number of forgetting events over all complete epochs: correct (pred == label) in one "
        "presented epoch, incorrect in the next. Higher = more suspicious. Toneva et al., ICLR 2019."
    ),
    "el2n": (
        "EL2N ||softmax - onehot(label)||_2 at an early epoch (10% of training, never epoch 0 "
        "when a later one exists). Higher = more suspicious. Paul et al., NeurIPS 2021. "
        "APPROXIMATION: only p(label), pred and p(pred) are recorded, so this is the smallest "
        "||p - y|| consistent with them: sqrt((1-p_y)^2 + p_pred^2 + r^2/(C-2)) with "
        "r = 1 - p_y - p_pred when pred != label, sqrt((1-p_y)^2 + (1-p_y)^2/(C-1)) when "
        "pred == label. Exact for C = 2 (and for C = 3 when pred != label)."
    ),
    "disagreement": (
        "share of three epochs around the GWA-selected one (the last three when GWA selects "
        "none) in which the model confidently predicted another class "
        "than the given label: pred != label and p(pred) >= that class's threshold, the mean "
        "p(label) of the samples labelled with it in the same epoch (confident learning's "
        "per-class threshold; Northcutt et al., JAIR 2021). Higher = more suspicious. Samples "
        "above 0.5 are the estimated wrong labels (gwa_diag.analysis.estimate)."
    ),
}

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


class AnalysisError(RunDirError):
    """The run cannot be analysed as asked (no complete epoch yet, no ground truth ...)."""


# --------------------------------------------------------------------------------------
# epochs: selection, window, EL2N epoch
# --------------------------------------------------------------------------------------


def _config(run: Run) -> dict[str, Any]:
    config = run.meta.get("config")
    return config if isinstance(config, dict) else {}


def _planned_epochs(run: Run) -> int | None:
    value = _config(run).get("epochs", run.meta.get("epochs"))
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _run_mode(run: Run) -> str:
    mode = _config(run).get("mode", run.meta.get("mode")) or "scratch"
    return str(mode)


def selected_epoch(run_or_path: Run | str | os.PathLike, *, mode: str | None = None) -> "EarlyStopResult":
    """The GWA early-stopping epoch of a run (:func:`gwa_diag.alignment.select_epoch` on
    epochs.parquet). ``mode`` defaults to run.json's ``config.mode`` (else ``scratch``);
    the warm-up is measured against the planned ``config.epochs`` when recorded.
    ``epoch`` is None when no defined GWA qualifies (then the reason says why)."""
    from gwa_diag.early_stopping import select_epoch

    run = open_run(run_or_path)
    epochs = run.epochs()
    use_mode = mode if mode is not None else _run_mode(run)
    ep = [int(e) for e in epochs["epoch"].tolist()]
    raw = epochs["gwa"].tolist() if "gwa" in epochs else [None] * len(ep)
    gwa = [None if g is None or (isinstance(g, float) and math.isnan(g)) else float(g) for g in raw]
    planned = _planned_epochs(run)
    total = max(planned, max(ep) + 1) if planned is not None and ep else planned
    return select_epoch(ep, gwa, mode=use_mode, total_epochs=total)  # type: ignore[arg-type]


def window_epochs(epochs: list[int], window: str) -> list[int]:
    """The complete epochs averaged by the mean-over-epochs scorers (see :data:`WINDOWS`)."""
    check_choice(window, Window, "window")
    n = len(epochs)
    if n == 0:
        return []
    if window == "all":
        start = 0
    elif window == "second_half":
        start = n // 2
    else:
        # Skip the first 10% of the epochs trained so far, but always keep the last one.
        start = min(math.ceil(WARMUP_FRACTION * n), n - 1)
    return sorted(epochs)[start:]


def el2n_epoch(epochs: list[int], *, planned: int | None = None) -> int | None:
    """The early epoch EL2N is read at: the complete epoch at 10% of the (planned) training,
    but never the first epoch when a later one exists (Paul et al. score after a few epochs,
    not at initialisation)."""
    if not epochs:
        return None
    ordered = sorted(epochs)
    total = planned if planned else len(ordered)
    index = min(len(ordered) - 1, max(1, round(WARMUP_FRACTION * total)))
    return ordered[index]


# --------------------------------------------------------------------------------------
# summarize
# --------------------------------------------------------------------------------------


@dataclass
class _Plan:
    files: dict[int, list[str]]  # complete epoch -> its parts (all ranks)
    epochs: list[int]  # complete epochs with data, sorted
    window: list[int]
    sel_epoch: int
    last_epoch: int
    el2n_epoch: int
    num_classes: int
    total_rows: int
    id_min: int = 0
    ids: np.ndarray | None = None  # sorted distinct ids when the id range is too wide for dense slots
    size: int = 0  # number of accumulator slots

    def files_of(self, epochs: list[int]) -> list[str]:
        return [f for e in epochs for f in self.files[e]]

    def slots(self, pos: np.ndarray) -> np.ndarray:
        return pos if self.ids is None else np.searchsorted(self.ids, pos)

    def pos_sql(self) -> str:
        return f"sample_id - ({int(self.id_min)})" if self.ids is None else "sample_id"


def summarize(
    run_or_path: Run | str | os.PathLike,
    *,
    window: Window | str = "second_half",
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
    variability, forgetting, el2n, disagreement``. Other columns: ``label`` (given, as trained on),
    ``suggested_label`` (most frequent prediction over the window; ties go to the higher
    mean p(pred), then the lower class), ``suggested_prob`` (mean p(pred) over the window
    epochs that predicted it), ``alignment_selected`` (raw alignment at the selected epoch:
    **lower = more suspicious**, < 0 is the paper's flag), ``n_epochs`` (epochs present),
    ``n_window`` (window epochs with finite values), ``clean_label`` when labels.parquet
    has it, and ``path`` (first; the sample's file relative to the dataset's root) when
    labels.parquet has it.

    ``frame.attrs`` records the window, the selected epoch (and whether it fell back to the
    last epoch because GWA selected none), the EL2N epoch and the class count.

    Args:
        window: which epochs the means average over (:data:`WINDOWS`).
        mode: early-stopping rule, ``scratch`` or ``finetune`` (default: run.json, else scratch).
        el2n_at: epoch for EL2N (default :func:`el2n_epoch`); must be a complete epoch.
        threads: DuckDB threads (default: all cores).
        memory_limit: DuckDB memory limit; larger intermediate results spill to disk.
        temp_directory: where DuckDB spills (default: a private temporary directory).

    Raises:
        AnalysisError: the run has no complete epoch yet.
        ValueError: unknown window or mode, or ``el2n_at`` not a complete epoch.
    """
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


@contextmanager
def vanished_parts_as_file_not_found(files: list[str]) -> Iterator[None]:
    """Report a DuckDB read that failed because a listed part vanished (a resume removed it)
    as FileNotFoundError, which :func:`gwa_diag.store.read_listed_parts` retries."""
    try:
        yield
    except duckdb.Error as exc:
        gone = [f for f in files if not os.path.exists(f)]
        if gone:
            raise FileNotFoundError(f"{gone[0]} was removed while it was being read") from exc
        raise


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
    epochs = sorted(files)
    choice = selected_epoch(run, mode=mode)
    sel = choice.epoch if choice.epoch is not None and choice.epoch in files else None
    all_files = [f for e in epochs for f in files[e]]
    stats = _file_stats(all_files)
    num_classes = max(int(run.num_classes or 0), stats["max_class"] + 1, 2)
    plan = _Plan(
        files=files,
        epochs=epochs,
        window=window_epochs(epochs, window),
        sel_epoch=sel if sel is not None else epochs[-1],
        last_epoch=epochs[-1],
        el2n_epoch=int(el2n_at) if el2n_at is not None else int(el2n_epoch(epochs, planned=_planned_epochs(run))),  # type: ignore[arg-type]
        num_classes=num_classes,
        total_rows=stats["rows"],
    )
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
            ids = con.sql(f"SELECT DISTINCT sample_id FROM {_read(all_files)} ORDER BY 1").fetchnumpy()["sample_id"]
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
        disagreement = _disagreement(con, plan, repeats)
    finally:
        con.close()
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    frame = _frame(plan, acc, suggested, suggested_prob, disagreement, run.labels())
    frame.attrs.update(
        {
            "run": str(run.path),
            "window": window,
            "window_epochs": [int(plan.window[0]), int(plan.window[-1])],
            "n_window_epochs": len(plan.window),
            "n_epochs": len(plan.epochs),
            "selected_epoch": int(plan.sel_epoch),
            "selection": {
                "gwa_epoch": choice.epoch,
                "mode": choice.mode,
                "reason": choice.reason,
                "fallback": sel is None,
                "note": (
                    f"GWA selected no epoch ({choice.reason}); using the last epoch {plan.last_epoch} instead"
                    if sel is None
                    else f"GWA-selected epoch {sel}: {choice.reason}"
                ),
            },
            "last_epoch": int(plan.last_epoch),
            "el2n_epoch": int(plan.el2n_epoch),
            "num_classes": int(plan.num_classes),
            "repeats_averaged": repeats,
        }
    )
    return frame


def _sql_str(text: str) -> str:
    return text.replace("'", "''")


def _read(files: list[str]) -> str:
    listed = ", ".join(f"'{_sql_str(f)}'" for f in files)
    return f"read_parquet([{listed}], hive_partitioning = true)"


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
        row = con.sql(f"SELECT max(greatest(label, pred)) FROM {_read(files)}").fetchone()
    return int(row[0]) if row and row[0] is not None else -1


def _source(files: list[str], *, repeats: bool) -> str:
    """Rows of ``files``: one per presentation, or one per (sample, epoch) when averaging
    repeated presentations (numeric signals averaged over finite values; prediction and
    label from the last presentation of the epoch)."""
    raw = _read(files)
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
        self.el2n = np.full(size, np.nan)
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
        FROM {_source(plan.files_of(plan.window), repeats=repeats)}"""
    for batch in _batches(con, window_sql):
        cols = _columns(batch)
        slot = plan.slots(_np(cols["pos"], np.int64))
        acc.add_state(slot, cols)
        acc.add_window(slot, cols, plan.num_classes)
    before = [e for e in plan.epochs if e < plan.window[0]]
    if before:
        state_sql = f"SELECT {pos} AS pos, {state_cols} FROM {_source(plan.files_of(before), repeats=repeats)}"
        for batch in _batches(con, state_sql):
            cols = _columns(batch)
            acc.add_state(plan.slots(_np(cols["pos"], np.int64)), cols)
    specials = sorted({plan.sel_epoch, plan.last_epoch, plan.el2n_epoch})
    point_sql = f"""
        SELECT {pos} AS pos, CAST(epoch AS INTEGER) AS epoch, label, pred, alignment, p_label, p_pred
        FROM {_source(plan.files_of(specials), repeats=repeats)}"""
    for batch in _batches(con, point_sql):
        cols = _columns(batch)
        slot = plan.slots(_np(cols["pos"], np.int64))
        epoch = _np(cols["epoch"], np.int64)
        alignment = _np(cols["alignment"], np.float64)
        for target, ep in ((acc.align_sel, plan.sel_epoch), (acc.align_last, plan.last_epoch)):
            hit = epoch == ep
            target[slot[hit]] = alignment[hit]
        hit = epoch == plan.el2n_epoch
        acc.el2n[slot[hit]] = _el2n(
            _np(cols["p_label"], np.float64)[hit], _np(cols["pred"], np.int64)[hit],
            _np(cols["label"], np.int64)[hit], _np(cols["p_pred"], np.float64)[hit], plan.num_classes,
        )
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


def _el2n(p_label: np.ndarray, pred: np.ndarray, label: np.ndarray, p_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Smallest ||p - onehot(label)|| consistent with p(label), pred and p(pred) (see SCORERS)."""
    miss = 1.0 - p_label
    c = max(int(num_classes), 2)
    # pred == label: the other C-1 classes share 1 - p_label; their sum of squares is least
    # when they share it evenly.
    same = miss * miss + (miss * miss) / (c - 1)
    # pred != label: p_pred is one of the others; the remaining mass r spreads over C-2.
    rest = np.clip(1.0 - p_label - p_pred, 0.0, None)
    spread = (rest * rest) / (c - 2) if c > 2 else np.zeros_like(rest)
    other = miss * miss + p_pred * p_pred + spread
    return np.sqrt(np.where(pred == label, same, other))


def _suggest_with_duckdb(con: Any, plan: _Plan, repeats: bool) -> tuple[np.ndarray, np.ndarray]:
    """Suggested label for many classes: DuckDB groups (sample, pred) instead of a dense
    samples x classes matrix."""
    # The dense path's order, lexicographic: most frequent prediction, then the higher mean
    # p(pred), then the lower class (a single weighted sum of the three cannot keep a small
    # p(pred) difference from being outweighed by the class term).
    query = f"""
        WITH counts AS (
            SELECT {plan.pos_sql()} AS pos, pred, count(*) AS n, avg(p_pred) AS mp
            FROM {_source(plan.files_of(plan.window), repeats=repeats)}
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


def disagreement_epochs(epochs: list[int], used: int) -> list[int]:
    """The epochs ``disagreement`` reads: three consecutive epochs with data around the epoch
    the flags use (GWA-selected, else the last): its neighbour on each side, or the two
    before (after) it when it is the last (first); fewer only when fewer exist."""
    ordered = sorted(epochs)
    i = ordered.index(used)
    lo = max(0, min(i - 1, len(ordered) - 3))
    return ordered[lo : lo + 3]


def _disagreement(con: Any, plan: _Plan, repeats: bool) -> np.ndarray:
    """Per slot: the share of :func:`disagreement_epochs` in which the prediction was another
    class than the label with p(pred) at least that class's confident-learning threshold
    (the mean p(label) of the samples labelled with it in the same epoch). NaN: no finite row.

    Why around the GWA-selected epoch: GWA peaks when the model has learned the correctly
    labelled samples but not yet memorised the others, so its disagreement with the labels
    says most there. A window late in a memorising run sees the wrong labels already fitted
    (``python bench/why_defaults.py --part window`` measures both)."""
    source = _source(plan.files_of(disagreement_epochs(plan.epochs, plan.sel_epoch)), repeats=repeats)
    query = f"""
        WITH rows AS (SELECT {plan.pos_sql()} AS pos, epoch, label, pred, p_label, p_pred FROM {source}
                      WHERE {_FINITE}),
             limits AS (SELECT epoch, label AS cls, avg(p_label) AS t FROM rows GROUP BY ALL)
        SELECT r.pos, avg(CASE WHEN r.pred <> r.label AND r.p_pred >= l.t THEN 1.0 ELSE 0.0 END) AS share
        FROM rows r LEFT JOIN limits l ON r.epoch = l.epoch AND r.pred = l.cls
        GROUP BY r.pos"""
    out = con.sql(query).fetchnumpy()
    share = np.full(plan.size, np.nan)
    share[plan.slots(np.asarray(out["pos"], dtype=np.int64))] = np.asarray(out["share"], dtype=np.float64)
    return share


def _frame(
    plan: _Plan,
    acc: _Accumulators,
    suggested: np.ndarray,
    suggested_prob: np.ndarray,
    disagreement: np.ndarray,
    labels: pd.DataFrame | None,
) -> pd.DataFrame:
    present = acc.present_count()
    keep = np.flatnonzero(present > 0)
    ids = plan.ids[keep] if plan.ids is not None else keep.astype(np.int64) + plan.id_min
    w = {k: v[keep] for k, v in acc.win.items()}
    n = w["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = {k: np.where(n > 0, w[k] / np.where(n > 0, n, 1), np.nan) for k in ("a", "neg", "m", "l", "p", "p2")}
    variability = np.sqrt(np.clip(mean["p2"] - mean["p"] ** 2, 0.0, None))
    sugg = suggested[keep]
    data: dict[str, Any] = {
        "label": acc.label[keep],
        "suggested_label": pd.array(np.where(sugg >= 0, sugg, 0), dtype="Int64"),
        "suggested_prob": suggested_prob[keep],
        "alignment_selected": acc.align_sel[keep],
        "n_epochs": present[keep],
        "n_window": n.astype(np.int64),
        # Scorers: higher = more suspicious (SCORERS documents each flip).
        "align_mean": -mean["a"],
        "align_selected": -acc.align_sel[keep],
        "align_last": -acc.align_last[keep],
        "neg_frac": mean["neg"],
        "aum": -mean["m"],
        "loss_mean": mean["l"],
        "confidence": -mean["p"],
        "variability": variability,
        "forgetting": acc.forgetting()[keep],
        "el2n": acc.el2n[keep],
        "disagreement": disagreement[keep],
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
