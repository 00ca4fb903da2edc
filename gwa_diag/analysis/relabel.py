"""Relabel decisions made while reviewing suspicious samples (the app's only output).

Each decision is one small Parquet file under ``RUN/relabels/``, created atomically under a
unique name and never rewritten. Appending a file instead of updating a shared one means
that two browser tabs, two app processes or a crash in the middle of a write can never
lose or corrupt another decision: the set of decisions is simply the set of files.

Decisions:

* ``accept``: take the suggested label (``new_label`` defaults to ``suggested_label``);
* ``relabel``: a label chosen by the reviewer (``new_label`` required);
* ``fine``: the given label is right (``new_label`` is null).

The latest decision for a sample wins (:func:`latest_decisions`), so a reviewer changes
their mind by simply recording another decision.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from gwa_diag.store import Run, atomic_write_bytes, atomic_write_table, open_run
from gwa_diag.checks import InputError

#: A run directory, or an open :class:`~gwa_diag.store.Run` (used as it is, not opened again).
RunLike = Run | str | os.PathLike

__all__ = [
    "DECISIONS",
    "DECISION_SCHEMA",
    "RELABEL_DIR",
    "record_decision",
    "read_decisions",
    "latest_decisions",
    "export_csv",
    "decisions_csv",
    "read_csv",
    "decision_files",
]

#: Valid decision names -> what they mean.
DECISIONS: dict[str, str] = {
    "accept": "take the suggested label",
    "relabel": "use a label chosen by the reviewer",
    "fine": "the given label is correct; keep it",
}

RELABEL_DIR = "relabels"

DECISION_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("decision", pa.string(), nullable=False),
        pa.field("new_label", pa.int32()),  # null for "fine"
        pa.field("given_label", pa.int32()),
        pa.field("suggested_label", pa.int32()),
        pa.field("note", pa.string()),
        pa.field("timestamp", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("session", pa.string()),
    ]
)

# Timestamps double as the order of decisions; within one process they are made strictly
# increasing so that two decisions in the same nanosecond tick still have an order.
_clock_lock = threading.Lock()
_last_ns = 0


def _now_ns() -> int:
    global _last_ns
    with _clock_lock:
        _last_ns = max(time.time_ns(), _last_ns + 1)
        return _last_ns


def _dir(run: RunLike) -> Path:
    """The run's directory: an open run is not opened again, and a bare directory without
    run.json (a folder of decisions only) is allowed."""
    return run.path if isinstance(run, Run) else Path(run)


def _relabel_dir(run_dir: RunLike) -> Path:
    return _dir(run_dir) / RELABEL_DIR


def _num_classes(run_dir: RunLike) -> int | None:
    """Class count from run.json (num_classes, else the class names), or None when unknown."""
    try:
        run = open_run(run_dir)
    except Exception:  # noqa: BLE001 - a bare directory without run.json: no range known
        return None
    if run.num_classes:
        return int(run.num_classes)
    return len(run.class_names) if run.class_names else None


def _optional_label(value: Any, name: str) -> int | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int class index or None, got {type(value).__name__}")
    return int(value)


def _check_label(value: int | None, num_classes: int | None, name: str) -> None:
    if value is None:
        return
    if value < 0 or (num_classes is not None and value >= num_classes):
        upper = f"{num_classes}" if num_classes is not None else "num_classes"
        raise InputError(f"{name}={value} is out of range: class indices are in [0, {upper})")


def record_decision(
    run_dir: RunLike,
    sample_id: int,
    decision: str,
    *,
    new_label: int | None = None,
    given_label: int | None = None,
    suggested_label: int | None = None,
    note: str = "",
    session: str | None = None,
    num_classes: int | None = None,
) -> Path:
    """Record one decision as its own new file; returns the file's path.

    Args:
        run_dir: the run directory (decisions go to ``run_dir/relabels/``).
        sample_id: the sample's stable id.
        decision: ``accept``, ``relabel`` or ``fine`` (see :data:`DECISIONS`).
        new_label: the label to use; for ``accept`` it defaults to ``suggested_label``; must
            be None (or is ignored) for ``fine``.
        given_label, suggested_label: the labels shown when deciding (kept for the record).
        note: free text.
        session: who/which app session decided (default: this process).
        num_classes: class count for the range check (default: run.json).

    Raises:
        ValueError: unknown decision, missing or out-of-range label.
    """
    if decision not in DECISIONS:
        raise InputError(
            f"unknown decision {decision!r}; valid decisions: {', '.join(repr(d) for d in DECISIONS)}"
        )
    if isinstance(sample_id, (bool, np.bool_)) or not isinstance(sample_id, (int, np.integer)):
        raise TypeError(f"sample_id must be an int, got {type(sample_id).__name__}")
    run_path = _dir(run_dir)
    classes = int(num_classes) if num_classes is not None else _num_classes(run_dir)
    new = _optional_label(new_label, "new_label")
    given = _optional_label(given_label, "given_label")
    suggested = _optional_label(suggested_label, "suggested_label")
    if decision == "accept" and new is None:
        new = suggested
    if decision == "fine":
        # "fine" keeps the given label; a stray new_label would contradict it.
        new = None
    elif new is None:
        raise InputError(
            f"decision {decision!r} needs new_label"
            + (" (or suggested_label to accept)" if decision == "accept" else "")
        )
    _check_label(new, classes, "new_label")
    _check_label(given, classes, "given_label")
    _check_label(suggested, classes, "suggested_label")
    ts = _now_ns()
    session = session if session is not None else f"pid{os.getpid()}"
    table = pa.table(
        {
            "sample_id": pa.array([int(sample_id)], pa.int64()),
            "decision": pa.array([decision], pa.string()),
            "new_label": pa.array([new], pa.int32()),
            "given_label": pa.array([given], pa.int32()),
            "suggested_label": pa.array([suggested], pa.int32()),
            "note": pa.array([str(note or "")], pa.string()),
            "timestamp": pa.array([ts], pa.timestamp("ns", tz="UTC")),
            "session": pa.array([str(session)], pa.string()),
        },
        schema=DECISION_SCHEMA,
    )
    # Zero-padded nanoseconds first: file names sort in time order; the uuid makes every
    # name unique, so no writer ever replaces another writer's file.
    name = f"{ts:020d}-{uuid.uuid4().hex}.parquet"
    return atomic_write_table(_relabel_dir(run_path) / name, table)


def decision_files(run_dir: RunLike) -> list[Path]:
    """The decision files, oldest first. Temporary files of an interrupted write (hidden,
    ``.tmp``) are not decisions and are left out."""
    folder = _relabel_dir(run_dir)
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".") and p.is_file()
    )


def _empty_frame() -> pd.DataFrame:
    return DECISION_SCHEMA.empty_table().to_pandas(types_mapper=_types_mapper)


def _types_mapper(dtype: pa.DataType) -> Any:
    # Nullable integers keep "no label" (fine) distinct from class 0.
    if pa.types.is_integer(dtype):
        return pd.Int64Dtype()
    return None


def read_decisions(run_dir: RunLike) -> pd.DataFrame:
    """Every decision recorded for the run, oldest first (columns of :data:`DECISION_SCHEMA`).

    A file that cannot be read (copied in half, say) is skipped with a warning rather than
    hiding every other decision.
    """
    files = decision_files(run_dir)
    if not files:
        return _empty_frame()
    try:
        # One multi-threaded scan: thousands of one-row files read in a fraction of a second.
        table = pads.dataset([str(f) for f in files], schema=DECISION_SCHEMA, format="parquet").to_table()
    except (OSError, pa.ArrowException):
        table = _read_one_by_one(files)
    frame = table.to_pandas(types_mapper=_types_mapper)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _read_one_by_one(files: list[Path]) -> pa.Table:
    """Slow path when some file is unreadable: read each, skip the bad ones with a warning."""
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path, schema=DECISION_SCHEMA))
        except (OSError, pa.ArrowException) as exc:
            warnings.warn(f"skipping unreadable relabel decision file {path}: {exc}", RuntimeWarning, stacklevel=3)
    return pa.concat_tables(tables) if tables else DECISION_SCHEMA.empty_table()


def latest_decisions(run_dir: RunLike) -> pd.DataFrame:
    """The last decision per sample (a later decision overrides an earlier one), indexed by
    ``sample_id`` and sorted by it."""
    frame = read_decisions(run_dir)
    latest = frame.drop_duplicates("sample_id", keep="last")
    return latest.set_index("sample_id").sort_index()


def export_csv(
    run_dir: RunLike,
    path: str | os.PathLike | None = None,
    *,
    all_decisions: bool = False,
) -> Path:
    """Write the decisions as CSV atomically; returns the path.

    By default one row per sample (its latest decision), the file a labeling team acts on;
    ``all_decisions=True`` writes the full history. Default path:
    ``run_dir/analysis/relabels.csv``. Timestamps are ISO 8601 in UTC.
    """
    out = Path(path) if path is not None else _dir(run_dir) / "analysis" / "relabels.csv"
    return atomic_write_bytes(out, decisions_csv(run_dir, all_decisions=all_decisions))


def decisions_csv(run_dir: RunLike, *, all_decisions: bool = False) -> bytes:
    """The CSV text of :func:`export_csv` as bytes (for a download without a file)."""
    frame = read_decisions(run_dir) if all_decisions else latest_decisions(run_dir).reset_index()
    frame = frame.copy()
    frame["timestamp"] = frame["timestamp"].map(lambda t: t.isoformat())
    names = _class_names(run_dir)
    if names:
        # Names next to the indices: the file is read by people, not only by code.
        lookup = dict(enumerate(names))
        for col in ("new_label", "given_label", "suggested_label"):
            frame[f"{col}_name"] = frame[col].map(lambda v: lookup.get(int(v), "") if pd.notna(v) else "")
    return frame.to_csv(index=False).encode()


def _class_names(run_dir: RunLike) -> tuple[str, ...]:
    try:
        return open_run(run_dir).class_names or ()
    except Exception:  # noqa: BLE001 - no run.json: indices only
        return ()


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV written by :func:`export_csv` back with the recorded dtypes."""
    names = ("new_label_name", "given_label_name", "suggested_label_name")
    text_cols = {c: str for c in ("decision", "note", "session", *names)}
    frame = pd.read_csv(path, dtype=text_cols, keep_default_na=False,
                        na_values={c: [""] for c in ("new_label", "given_label", "suggested_label")})
    for col in ("sample_id", "new_label", "given_label", "suggested_label"):
        frame[col] = frame[col].astype("Int64")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return frame
