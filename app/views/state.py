"""The run as one script run of the app sees it: :class:`RunState` (run.json, epochs.parquet
and the labels footer, read in milliseconds), and the relabel decisions recorded so far.

Every cached loader of the app takes the run path **and** the run's ``generation`` (the
number of complete epochs and the modification time of epochs.parquet), so a run that
training is still writing is re-read as soon as another epoch completes, while the same
state is never read twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow.parquet as pq
import streamlit as st

from gwa_diag.analysis import relabel
from gwa_diag.analysis.audit import AUDIT_DIR
from gwa_diag.analysis.corrected import trained_on
from gwa_diag.checks import MissingFileError
from gwa_diag.store import Run, RunDirError, open_run

__all__ = [
    "RunState",
    "load_run_state",
    "run_error_message",
    "label_origin",
    "decisions_key",
    "latest_decisions",
    "audit_key",
]


@dataclass(frozen=True)
class RunState:
    """What the app knows about a run at the start of one script run (cheap to build)."""

    path: str
    meta: dict[str, Any]
    epochs: pd.DataFrame
    completed: tuple[int, ...]
    generation: str
    class_names: tuple[str, ...]
    planned_epochs: int | None
    has_truth: bool
    num_samples: int | None = None

    @property
    def empty(self) -> bool:
        return not self.completed

    @property
    def finished(self) -> bool:
        return self.meta.get("status") == "finished"

    @property
    def in_progress(self) -> bool:
        return not self.finished

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_name(self, label: Any) -> str:
        """``"3 cat"`` for a class index, ``"?"`` for a missing one."""
        if label is None or label is pd.NA or (isinstance(label, float) and math.isnan(label)):
            return "?"
        i = int(label)
        named = 0 <= i < len(self.class_names) and self.class_names[i] != str(i)
        return f"{i} {self.class_names[i]}" if named else str(i)


def _generation(path: Path, completed: Sequence[int]) -> str:
    epochs_file = path / "epochs.parquet"
    mtime = epochs_file.stat().st_mtime_ns if epochs_file.exists() else 0
    # The count alone misses a resumed run that re-recorded epochs; the mtime catches it.
    return f"{len(completed)}:{mtime}"


def _class_names(run: Run, labels_max: int | None) -> tuple[str, ...]:
    names = run.class_names
    if names:
        return names
    count = int(run.meta.get("num_classes") or ((labels_max + 1) if labels_max is not None else 0))
    return tuple(str(i) for i in range(count))


def _labels_info(path: Path) -> tuple[bool, int | None, int | None]:
    """(has clean labels, largest label, rows) from labels.parquet's footer, no data read."""
    file = path / "labels.parquet"
    if not file.exists():
        return False, None, None
    meta = pq.read_metadata(file)
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    top: int | None = None
    if "label" in names and meta.num_row_groups:
        stats = [meta.row_group(g).column(names.index("label")).statistics for g in range(meta.num_row_groups)]
        if all(s is not None and s.has_min_max for s in stats):
            top = max(int(s.max) for s in stats)
    return "clean_label" in names, top, meta.num_rows


def load_run_state(path: str | Path) -> RunState:
    """Read run.json, epochs.parquet and the labels footer (milliseconds).

    Raises:
        RunDirError: not a run directory (or another schema version).
        MissingFileError: the path does not exist.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingFileError(f"run directory not found: {p}")
    run = open_run(p)
    epochs = run.epochs()
    completed = tuple(int(e) for e in epochs["epoch"].tolist())
    has_truth, labels_max, n_labels = _labels_info(p)
    config = run.meta.get("config") if isinstance(run.meta.get("config"), dict) else {}
    planned = config.get("epochs", run.meta.get("epochs"))
    return RunState(
        path=str(p.resolve()),
        meta=run.meta,
        epochs=epochs,
        completed=completed,
        generation=_generation(p, completed),
        class_names=_class_names(run, labels_max),
        planned_epochs=int(planned) if planned is not None else None,
        has_truth=has_truth,
        num_samples=run.meta.get("num_samples", n_labels),
    )


def run_error_message(exc: BaseException) -> str:
    """The message for a run that cannot be read: the error's own text when it explains
    itself (not a run directory, a missing file), else its type too."""
    if isinstance(exc, (RunDirError, FileNotFoundError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def label_origin(state: RunState) -> str | None:
    """"trained on corrected labels from run ...", when the run trained on a
    ``gwa-diag labels`` export (run.json's ``label_provenance``); else None."""
    info = trained_on(state.meta)
    return None if info is None else str(info["line"])


# --------------------------------------------------------------------------------------
# relabel decisions (the one thing the app writes, through gwa_diag.analysis.relabel)
# --------------------------------------------------------------------------------------


def decisions_key(path: str) -> tuple[int, str]:
    """Changes whenever a decision is added (files are only ever added; names sort by time)."""
    files = relabel.decision_files(path)
    return len(files), files[-1].name if files else ""


@st.cache_data(max_entries=16, show_spinner=False)
def _latest(path: str, key: tuple[int, str]) -> pd.DataFrame:
    return relabel.latest_decisions(path)


def latest_decisions(path: str) -> pd.DataFrame:
    """The last decision per sample (``gwa_diag.analysis.relabel.latest_decisions``), re-read only
    when a decision file was added (by this or any other session or process)."""
    return _latest(path, decisions_key(path))


def audit_key(path: str) -> tuple[int, int, str]:
    """Changes whenever the audit is drawn or grown (design.json is rewritten) or an answer
    is added (answer files are only ever added; names sort by time): (design mtime, answer
    files, newest name). A directory listing, no file read."""
    folder = Path(path) / AUDIT_DIR
    design = folder / "design.json"
    mtime = design.stat().st_mtime_ns if design.is_file() else 0
    answers = folder / "answers"
    names = sorted(p.name for p in answers.glob("*.parquet") if not p.name.startswith(".")) if answers.is_dir() else []
    return mtime, len(names), names[-1] if names else ""
