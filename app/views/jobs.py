"""The two slow loads, run once per process in background threads and shared by every
browser session: the per-sample summaries and the run's image dataset.

:func:`prefetch` starts both after a page is drawn, so the first page renders while they
load; :func:`compute_summary` and :func:`open_dataset` wait for them where a page needs
them. Their results are shared objects: callers never modify them.
"""

from __future__ import annotations

import json
import shlex
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pandas as pd
import streamlit as st

from gwa_diag.analysis.summaries import summarize
from gwa_diag.checks import DEFAULT_WINDOW

from .images import load_checked_dataset
from .state import RunState

__all__ = ["prefetch", "compute_summary", "open_dataset"]

# Two workers: the summaries (DuckDB, itself multi-threaded) and the dataset load run side
# by side; module level so every session of this server process shares them.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gwa-app")


@st.cache_resource(max_entries=6, show_spinner=False)
def _summary_job(path: str, generation: str, window: str) -> Future:
    return _POOL.submit(summarize, path, window=window)


@st.cache_resource(max_entries=2, show_spinner=False)
def _dataset_job(path: str, spec_json: str, fingerprint: str | None) -> Future:
    return _POOL.submit(load_checked_dataset, spec_json, fingerprint)


def _spec_json(state: RunState) -> str | None:
    spec = state.meta.get("dataset")
    return json.dumps(spec, sort_keys=True) if isinstance(spec, dict) else None


def _fingerprint(state: RunState) -> str | None:
    value = state.meta.get("data_fingerprint")
    return str(value) if value else None


_first_prefetch = True


def prefetch(state: RunState, window: str) -> None:
    """Start loading the summaries and the images in the background (idempotent).

    The first call in a server process also waits for them: that run is normally the
    launcher's warm-up (``gwa-diag app``), so the first person to open the app finds
    everything loaded instead of competing with the loading for the CPU.
    """
    global _first_prefetch
    jobs = []
    if not state.empty:
        jobs.append(_summary_job(state.path, state.generation, window))
    spec = _spec_json(state)
    if spec is not None:
        jobs.append(_dataset_job(state.path, spec, _fingerprint(state)))
    if _first_prefetch:
        _first_prefetch = False
        for job in jobs:
            job.exception()  # waits; errors are reported where the result is used


def compute_summary(path: str, generation: str, window: str = DEFAULT_WINDOW) -> pd.DataFrame:
    """``gwa_diag.analysis.summaries.summarize`` of the run, computed once per (run, generation, window).

    A failed computation is not kept, so the next script run tries again.
    """
    job = _summary_job(path, generation, window)
    try:
        return job.result()
    except BaseException:
        _summary_job.clear()
        raise


def open_dataset(state: RunState) -> tuple[Any | None, str | None]:
    """(dataset, None), or (None, why the images cannot be shown)."""
    spec = _spec_json(state)
    if spec is None:
        return None, "run.json records no dataset spec, so the images cannot be found."
    job = _dataset_job(state.path, spec, _fingerprint(state))
    try:
        return job.result(), None
    except Exception as exc:  # noqa: BLE001 - any loader error means "no images", never a traceback
        source = state.meta["dataset"].get("source", "?")
        where = state.meta["dataset"].get("path") or state.meta["dataset"].get("root") or ""
        return None, (
            f"The images of this run could not be loaded ({source} {where}): {exc}. "
            "Scores and tables are still shown. If the data moved (another machine or folder), "
            f"point the run at it with `gwa-diag relocate {shlex.quote(str(state.path))} --data-path NEW_PATH` "
            "(it checks that the data there is the data the run trained on), or move the files back."
        )

