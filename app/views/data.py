"""Cached, read-only access to one run directory, through the gwa_diag modules.

Every cached loader takes the run path **and** the run's ``generation`` (the number of
complete epochs and the modification time of epochs.parquet), so a run that training is
still writing is re-read as soon as another epoch completes, while the same state is
never read twice.

Heavy results (the per-sample summaries, the image dataset) are computed once per process
in a background thread (:func:`prefetch`), so the first page renders while they load, and
shared by every browser session. They are shared objects: callers never modify them.

Nothing here computes a score: summaries, flags and detection metrics come from one cached
:func:`gwa_diag.analysis.pipeline.analyze` per (run state, window, scorer, rule), sharing the
summaries computed in the background; relabel decisions come from
``gwa_diag.analysis.relabel``. This module selects, sorts, filters, pages and decodes
thumbnails.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import streamlit as st

from gwa_diag.analysis import relabel
from gwa_diag.store import RunDirError, open_run
from gwa_diag.checks import DEFAULT_RULE, DEFAULT_SCORER, InputError, MissingFileError

if TYPE_CHECKING:  # imported where used: the first page renders before the analysis modules load
    from gwa_diag.analysis.pipeline import Analysis

__all__ = [
    "RunState",
    "Selection",
    "Filters",
    "load_run_state",
    "prefetch",
    "summary",
    "selection",
    "scorer_names",
    "windows",
    "open_dataset",
    "compute_summary",
    "compute_epoch_alignment",
    "compute_trajectory",
    "browse_order",
    "browse_table",
    "apply_filters",
    "page_count",
    "page_slice",
    "thumbnails",
    "thumbnail",
    "grid_images",
    "top_aligned",
    "analysis",
    "detection",
    "per_class",
    "curves",
    "flagged",
    "decisions_key",
    "latest_decisions",
]

# Two workers: the summaries (DuckDB, itself multi-threaded) and the dataset load run side
# by side; module level so every session of this server process shares them.
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gwa-app")

THUMB_SIZE = 96
CURVE_POINTS = 400  # points per ROC/PR curve sent to the browser: the line looks the same


# --------------------------------------------------------------------------------------
# run state
# --------------------------------------------------------------------------------------


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


def _class_names(run: Any, labels_max: int | None) -> tuple[str, ...]:
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
        FileNotFoundError: the path does not exist.
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


# --------------------------------------------------------------------------------------
# background jobs: summaries and images
# --------------------------------------------------------------------------------------


def _summarize(path: str, window: str) -> pd.DataFrame:
    from gwa_diag.analysis.summaries import summarize

    return summarize(path, window=window)


@st.cache_resource(max_entries=6, show_spinner=False)
def _summary_job(path: str, generation: str, window: str) -> Future:
    return _POOL.submit(_summarize, path, window)


def _load_dataset(spec_json: str, fingerprint: str | None) -> Any:
    from gwa_diag.training.data import load_dataset
    from gwa_diag.training.engine import data_fingerprint

    dataset = load_dataset(json.loads(spec_json))
    # An image folder's ids are file positions: a file added or removed since training would
    # put another image under every later id. Showing it beside that id's scores would
    # mislead a relabeling decision, so a changed dataset shows no images at all.
    if fingerprint is not None and data_fingerprint(dataset) != fingerprint:
        raise InputError(
            f"the images found now ({len(dataset)} samples) are not the ones this run trained on "
            "(files added, removed or replaced since), so an id could show another sample's image"
        )
    return dataset


@st.cache_resource(max_entries=2, show_spinner=False)
def _dataset_job(path: str, spec_json: str, fingerprint: str | None) -> Future:
    return _POOL.submit(_load_dataset, spec_json, fingerprint)


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


def compute_summary(path: str, generation: str, window: str = "second_half") -> pd.DataFrame:
    """``gwa_diag.analysis.summaries.summarize`` of the run, computed once per (run, generation, window).

    A failed computation is not kept, so the next script run tries again.
    """
    job = _summary_job(path, generation, window)
    try:
        return job.result()
    except BaseException:
        _summary_job.clear()
        raise


def summary(state: RunState, window: str) -> pd.DataFrame:
    return compute_summary(state.path, state.generation, window)


def scorer_names() -> dict[str, str]:
    from gwa_diag.analysis.scorers import SCORERS

    return dict(SCORERS)


def windows() -> dict[str, str]:
    from gwa_diag.analysis.phase import WINDOWS

    return dict(WINDOWS)


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
            "Scores and tables are still shown; move the files back or fix run.json's "
            "\"dataset\" spec to see the images."
        )


# --------------------------------------------------------------------------------------
# early-stopping selection
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The GWA early-stopping choice and the epoch the "alignment < 0" flags use."""

    epoch: int | None  # GWA-selected epoch; None when the rule selects none
    used_epoch: int | None  # selected epoch, else the last complete epoch
    reason: str

    @property
    def fallback(self) -> bool:
        return self.epoch is None and self.used_epoch is not None


@st.cache_data(max_entries=16, show_spinner=False)
def _selected_epoch(path: str, generation: str) -> dict[str, Any]:
    from gwa_diag.analysis.phase import selected_epoch

    return selected_epoch(path).as_dict()


@st.cache_data(max_entries=16, show_spinner=False)
def stopping_notes(path: str, generation: str) -> tuple[str, list[str]]:
    """How far to trust the GWA choice (``clear``, ``weak`` or ``none``) and the early-stopping
    sentences of :func:`gwa_diag.analysis.stopping.stopping` (trust, LabelWave's choice,
    evaluation accuracy and its rank correlation with GWA)."""
    from gwa_diag.analysis.stopping import stopping

    result = stopping(path)
    return result.trust.level, result.lines()


def label_origin(state: RunState) -> str | None:
    """"trained on corrected labels from run ...", when the run trained on a
    ``gwa-diag labels`` export (run.json's ``label_provenance``); else None."""
    from gwa_diag.analysis.corrected import trained_on

    info = trained_on(state.meta)
    return None if info is None else str(info["line"])


def selection(state: RunState) -> Selection:
    """``gwa_diag.analysis.phase.selected_epoch`` (reads epochs.parquet only), and the epoch the
    flags use: the selected one, else the last complete epoch (as the summaries do)."""
    if state.empty:
        return Selection(None, None, "no complete epoch yet")
    result = _selected_epoch(state.path, state.generation)
    epoch = result.get("epoch")
    return Selection(epoch, epoch if epoch is not None else state.completed[-1], str(result.get("reason", "")))


# --------------------------------------------------------------------------------------
# per-epoch rows
# --------------------------------------------------------------------------------------


@st.cache_data(max_entries=64, show_spinner=False)
def compute_epoch_alignment(path: str, generation: str, epoch: int) -> pd.DataFrame:
    """Alignment and label of every sample at one complete epoch, indexed by sample_id.

    A sample presented several times in the epoch (a sampler with replacement) shows the
    mean of its presentations, as the summaries do.
    """
    rows = open_run(path).samples(epochs=[int(epoch)], columns=["sample_id", "label", "alignment"])
    rows = rows.drop(columns=["epoch"])
    if rows["sample_id"].is_unique:
        return rows.set_index("sample_id").sort_index()
    return rows.groupby("sample_id").agg(label=("label", "last"), alignment=("alignment", "mean"))


@st.cache_data(max_entries=512, show_spinner=False)
def compute_trajectory(path: str, generation: str, sample_id: int) -> pd.DataFrame:
    """One sample's signals per complete epoch (means over repeated presentations)."""
    # Only the plotted columns: the scan reads every epoch's part, so fewer columns is faster.
    rows = open_run(path).samples(sample_ids=[int(sample_id)],
                                  columns=["sample_id", "step", "alignment", "margin", "p_label", "loss", "pred"])
    if rows.empty:
        return pd.DataFrame(columns=["epoch", "alignment", "margin", "p_label", "loss", "pred"])
    numeric = rows.groupby("epoch")[["alignment", "margin", "p_label", "loss"]].mean()
    numeric["pred"] = rows.groupby("epoch")["pred"].last()
    return numeric.reset_index()


# --------------------------------------------------------------------------------------
# browse: order, filters, pages, thumbnails
# --------------------------------------------------------------------------------------


def _flag_ids(summ: pd.DataFrame) -> pd.Index:
    from gwa_diag.analysis.rank import flag

    return flag(summ).index  # the default ranking and rule, as gwa-diag rank flags


def browse_order(summ: pd.DataFrame, at_epoch: pd.DataFrame, *, sort_by: str) -> pd.DataFrame:
    """The browse table, most suspicious first.

    ``sort_by="alignment"``: raw alignment at the chosen epoch, lowest first (negative =
    pulls against the head); any scorer name: that scorer's ranking (``gwa_diag.analysis.rank``).
    Columns: label, suggested_label, suggested_prob, [clean_label], alignment (at the
    chosen epoch), alignment_selected, flagged, score.
    """
    from gwa_diag.analysis.rank import rank

    keep = [c for c in ("label", "suggested_label", "suggested_prob", "clean_label", "alignment_selected") if c in summ]
    table = summ[keep].copy()
    table["alignment"] = at_epoch["alignment"].reindex(table.index).to_numpy(dtype=np.float64)
    table["flagged"] = table.index.isin(_flag_ids(summ))
    if sort_by == "alignment":
        a = table["alignment"].to_numpy()
        missing = np.isnan(a)
        # lexsort: last key first. Known values before NaN, lowest alignment, then lower id.
        order = np.lexsort((table.index.to_numpy(), np.where(missing, 0.0, a), missing))
        table = table.iloc[order]
        table["score"] = -table["alignment"]
        return table
    ranked = rank(summ, scorer=sort_by)
    table = table.loc[ranked.index]
    table["score"] = ranked["score"].to_numpy()
    return table


@st.cache_resource(max_entries=8, show_spinner=False)
def browse_table(path: str, generation: str, window: str, sort_by: str, epoch: int) -> pd.DataFrame:
    """:func:`browse_order` cached per (run state, window, sort, epoch); shared, read-only."""
    summ = compute_summary(path, generation, window)
    return browse_order(summ, compute_epoch_alignment(path, generation, epoch), sort_by=sort_by)


@dataclass(frozen=True)
class Filters:
    """Browse filters; an empty tuple means "any"."""

    given: tuple[int, ...] = ()
    suggested: tuple[int, ...] = ()
    true_class: tuple[int, ...] = ()
    flagged_only: bool = False
    mislabeled: str = "all"  # all | mislabeled | correct (ground truth only)


MISLABELED_CHOICES = ("all", "mislabeled", "correct")


def apply_filters(table: pd.DataFrame, filters: Filters) -> pd.DataFrame:
    """Rows of ``table`` passing every filter, order kept."""
    if filters.mislabeled not in MISLABELED_CHOICES:
        raise InputError(f"unknown mislabeled filter {filters.mislabeled!r}; valid: {', '.join(MISLABELED_CHOICES)}")
    mask = np.ones(len(table), dtype=bool)
    if filters.given:
        mask &= table["label"].isin(filters.given).to_numpy()
    if filters.suggested:
        mask &= table["suggested_label"].isin(filters.suggested).fillna(False).to_numpy(dtype=bool)
    if filters.flagged_only:
        mask &= table["flagged"].to_numpy()
    if "clean_label" in table:
        clean = table["clean_label"]
        if filters.true_class:
            mask &= clean.isin(filters.true_class).fillna(False).to_numpy(dtype=bool)
        if filters.mislabeled != "all":
            known = clean.notna().to_numpy()
            wrong = (table["label"].to_numpy() != clean.fillna(-1).to_numpy(dtype=np.int64)) & known
            mask &= wrong if filters.mislabeled == "mislabeled" else (known & ~wrong)
    return table if mask.all() else table[mask]


def page_count(n_rows: int, per_page: int) -> int:
    return max(1, -(-int(n_rows) // int(per_page)))


def page_slice(table: pd.DataFrame, page: int, per_page: int) -> pd.DataFrame:
    """Rows of page ``page`` (1-based, clamped to the valid range)."""
    page = min(max(1, int(page)), page_count(len(table), per_page))
    start = (page - 1) * per_page
    return table.iloc[start : start + per_page]


def _upscale(img: np.ndarray, size: int) -> np.ndarray:
    """Fit ``img`` into ``size`` px: whole-number nearest-neighbour upscaling (32x32 pixels
    stay crisp squares instead of a blur), plain resizing for images already larger."""
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    h, w = img.shape[:2]
    factor = size // max(h, w)
    if factor >= 1:
        return np.repeat(np.repeat(img, factor, axis=0), factor, axis=1) if factor > 1 else img
    from PIL import Image

    scale = size / max(h, w)
    new_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = Image.fromarray(img).resize(new_size, Image.Resampling.BILINEAR)
    return np.asarray(resized)


def thumbnails(dataset: Any, sample_ids: Sequence[int], size: int = THUMB_SIZE) -> list[np.ndarray]:
    """Decoded, upscaled images of just these samples (never the whole dataset).

    Raises:
        ValueError: a sample id the dataset does not hold (the run and the images disagree).
    """
    if len(sample_ids) == 0:
        return []
    positions = dataset.positions(np.asarray(sample_ids, dtype=np.int64))
    return [_upscale(dataset.image(int(p)), size) for p in positions]


def thumbnail(dataset: Any, sample_id: int, size: int) -> np.ndarray:
    return thumbnails(dataset, [int(sample_id)], size)[0]


def grid_images(dataset: Any, sample_ids: Sequence[int]) -> list[str]:
    """PNG data URLs of just these samples at their own size (the grid scales them up
    pixelated in the browser: nearest neighbour without sending 9x the pixels).

    Raises:
        ValueError: a sample id the dataset does not hold.
    """
    from .grid import png_data_url

    if len(sample_ids) == 0:
        return []
    positions = dataset.positions(np.asarray(sample_ids, dtype=np.int64))
    return [png_data_url(dataset.image(int(p))) for p in positions]


# --------------------------------------------------------------------------------------
# simple to complex
# --------------------------------------------------------------------------------------


@st.cache_data(max_entries=64, show_spinner=False)
def top_aligned(path: str, generation: str, epoch: int, k: int) -> pd.DataFrame:
    """The ``k`` most aligned samples of each given label at ``epoch`` (highest first):
    columns label, sample_id, alignment."""
    rows = compute_epoch_alignment(path, generation, epoch).reset_index()
    rows = rows[np.isfinite(rows["alignment"].to_numpy(dtype=np.float64))]
    rows = rows.sort_values(["label", "alignment", "sample_id"], ascending=[True, False, True], kind="stable")
    return rows.groupby("label", sort=True).head(int(k)).reset_index(drop=True)


# --------------------------------------------------------------------------------------
# detection (ground truth)
# --------------------------------------------------------------------------------------


@st.cache_resource(max_entries=8, show_spinner=False)
def analysis(path: str, generation: str, window: str, scorer: str = DEFAULT_SCORER, rule: str = DEFAULT_RULE,
             k: int | None = None, noise_rate: float | None = None) -> "Analysis":
    """:func:`gwa_diag.analysis.pipeline.analyze` of the run, once per (run state, window,
    scorer, rule, k, noise_rate), on the shared summaries; shared, read-only. Its detection
    tables are computed on first use."""
    from gwa_diag.analysis.pipeline import analyze

    summ = compute_summary(path, generation, window)
    return analyze(path, window=window, scorer=scorer, rule=rule, k=k, noise_rate=noise_rate, summary=summ)


def _no_truth(result: "Analysis") -> Exception:
    from gwa_diag.store import AnalysisError

    return AnalysisError(str(result.truth_reason))


@st.cache_data(max_entries=8, show_spinner=False)
def detection(path: str, generation: str, window: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """The analysis's detection table (``gwa_diag.analysis.metrics.detection_table``) and
    its counts (n, n_noisy, k).

    Raises:
        gwa_diag.analysis.summaries.AnalysisError: the run has no ground truth.
    """
    result = analysis(path, generation, window)
    if result.detection is None:
        raise _no_truth(result)
    return result.detection, dict(result.detection.attrs)


@st.cache_data(max_entries=16, show_spinner=False)
def per_class(path: str, generation: str, window: str, scorer: str) -> pd.DataFrame:
    """The analysis's per-class table for ``scorer`` (``gwa_diag.analysis.metrics.per_class_table``)."""
    result = analysis(path, generation, window, scorer)
    if result.per_class is None:
        raise _no_truth(result)
    return result.per_class


def _thin(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= points:
        return x, y
    keep = np.unique(np.r_[np.linspace(0, x.size - 1, points).astype(np.int64), x.size - 1])
    return x[keep], y[keep]


@st.cache_data(max_entries=16, show_spinner=False)
def curves(path: str, generation: str, window: str, scorers: tuple[str, ...]) -> pd.DataFrame:
    """ROC and PR points per scorer (``gwa_diag.analysis.metrics.roc_points`` / ``pr_points``),
    thinned for drawing: columns curve (roc|pr), scorer, x, y."""
    from gwa_diag.analysis.metrics import pr_points, roc_points

    result = analysis(path, generation, window)
    summ, truth = result.summary, result.truth
    if truth is None:
        raise _no_truth(result)
    common = summ.index.intersection(truth.index)
    y = truth.loc[common].to_numpy(dtype=bool)
    parts = []
    for name in scorers:
        scores = summ.loc[common, name].to_numpy(dtype=np.float64, na_value=np.nan)
        if y.any() and not y.all():
            fx, fy = _thin(*roc_points(scores, y))
            parts.append(pd.DataFrame({"curve": "roc", "scorer": name, "x": fx, "y": fy}))
        if y.any():
            rx, ry = _thin(*pr_points(scores, y))
            parts.append(pd.DataFrame({"curve": "pr", "scorer": name, "x": rx, "y": ry}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["curve", "scorer", "x", "y"])


# --------------------------------------------------------------------------------------
# relabel queue and decisions
# --------------------------------------------------------------------------------------


@st.cache_resource(max_entries=8, show_spinner=False)
def flagged(path: str, generation: str, window: str, rule: str, scorer: str, k: int | None,
            noise_rate: float | None) -> pd.DataFrame:
    """The analysis's flagged samples (most suspicious first, ``gwa_diag.analysis.rank.flag``);
    shared, read-only."""
    return analysis(path, generation, window, scorer, rule, k, noise_rate).flagged


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


def run_error_message(exc: BaseException) -> str:
    if isinstance(exc, (RunDirError, FileNotFoundError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
