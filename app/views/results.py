"""The analysis of the run, as the pages read it: one cached
:func:`gwa_diag.analysis.pipeline.analyze` per (run state,
:class:`~gwa_diag.analysis.options.AnalysisOptions`), on the summaries the background job
computed (:mod:`.jobs`). A page builds the options once from its widgets (the sidebar's
window, and where it has them the scorer and flag rule) and passes that object on.

Everything the pages show about scores comes from that :class:`Analysis`: its ranking and
flags, its epoch selection, its detection tables and stopping notes. Nothing here scores,
ranks, flags or selects an epoch again; :func:`curves` only thins the analysis's ROC and PR
curves for drawing (``gwa_diag.analysis.metrics.curve_points``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from gwa_diag.analysis.audit import review_status
from gwa_diag.analysis.metrics import curve_points
from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.pipeline import Analysis, analyze
from gwa_diag.analysis.survey import RecallBound
from gwa_diag.store import AnalysisError

from .jobs import compute_summary
from .state import audit_key, decisions_key

__all__ = ["CURVE_POINTS", "analysis", "detection", "per_class", "curves", "stopping_notes", "review"]

CURVE_POINTS = 400  # points per ROC/PR curve sent to the browser: the line looks the same


def analysis(path: str, generation: str, options: AnalysisOptions) -> Analysis:
    """:func:`gwa_diag.analysis.pipeline.analyze` of the run with ``options`` (checked when
    they were made), once per (run state, options, audit state), on the shared summaries of
    ``options.window``; shared, read-only. Its detection tables and stopping notes are
    computed on first use.

    Raises:
        AnalysisError: the run has no complete epoch with sample rows.
        InputError: rule ``p_wrong`` on a run without an answered audit.
    """
    # The audit's answers change the analysis (its count, p_wrong, the p_wrong rule) without
    # a new epoch: each answer, from this session or any other, is a new cache entry.
    return _analysis(path, generation, options, audit_key(path))


# (Streamlit hashes a dataclass argument by its fields, so equal options share one entry.)
@st.cache_resource(max_entries=8, show_spinner=False)
def _analysis(path: str, generation: str, options: AnalysisOptions, audit: tuple[int, int, str]) -> Analysis:
    summ = compute_summary(path, generation, options.window)
    return analyze(path, options=options, summary=summ)


def _no_truth(result: Analysis) -> AnalysisError:
    return AnalysisError(str(result.truth_reason))


@st.cache_data(max_entries=8, show_spinner=False)
def detection(path: str, generation: str, window: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """The analysis's detection table (``gwa_diag.analysis.metrics.detection_table``) and
    its counts (n, n_noisy, k).

    Raises:
        AnalysisError: the run has no ground truth.
    """
    result = analysis(path, generation, AnalysisOptions(window=window))
    if result.detection is None:
        raise _no_truth(result)
    return result.detection, dict(result.detection.attrs)


@st.cache_data(max_entries=16, show_spinner=False)
def per_class(path: str, generation: str, window: str, scorer: str) -> pd.DataFrame:
    """The analysis's per-class table for ``scorer`` (``gwa_diag.analysis.metrics.per_class_table``).

    Raises:
        AnalysisError: the run has no ground truth.
    """
    result = analysis(path, generation, AnalysisOptions(window=window, scorer=scorer))
    if result.per_class is None:
        raise _no_truth(result)
    return result.per_class


@st.cache_data(max_entries=16, show_spinner=False)
def curves(path: str, generation: str, window: str, scorers: tuple[str, ...]) -> pd.DataFrame:
    """ROC and PR points per scorer of the analysis's summary against its ground truth,
    thinned for drawing (``gwa_diag.analysis.metrics.curve_points``): columns curve
    (roc|pr), scorer, x, y. ROC needs both noisy and clean samples, PR a noisy one.

    Raises:
        AnalysisError: the run has no ground truth.
    """
    result = analysis(path, generation, AnalysisOptions(window=window))
    summ, truth = result.summary, result.truth
    if truth is None:
        raise _no_truth(result)
    common = summ.index.intersection(truth.index)
    y = truth.loc[common].to_numpy(dtype=bool)
    kinds = [kind for kind, drawable in (("roc", y.any() and not y.all()), ("pr", y.any())) if drawable]
    parts = []
    for name in scorers:
        scores = summ.loc[common, name].to_numpy(dtype=np.float64, na_value=np.nan)
        for kind in kinds:
            x, v = curve_points(scores, y, kind=kind, points=CURVE_POINTS)
            parts.append(pd.DataFrame({"curve": kind, "scorer": name, "x": x, "y": v}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["curve", "scorer", "x", "y"])


def stopping_notes(path: str, generation: str, window: str) -> tuple[str, list[str]]:
    """How far to trust the GWA choice (``clear``, ``weak`` or ``none``) and the early-stopping
    sentences of the analysis's :attr:`~gwa_diag.analysis.pipeline.Analysis.stopping` (trust,
    LabelWave's choice, evaluation accuracy and its rank correlation with GWA)."""
    result = analysis(path, generation, AnalysisOptions(window=window)).stopping
    return result.trust.level, result.lines()


def review(path: str, generation: str, options: AnalysisOptions, target: float) -> RecallBound | None:
    """How far the top-down review of the ranking of the analysis with ``options`` has got,
    against ``target`` (``gwa_diag.analysis.audit.review_status``): the relabel decisions on
    disk now and the audit's answers. None without an answered audit with every stratum
    answered, or before the top of the ranking has a decision."""
    return _review(path, generation, options, float(target), audit_key(path), decisions_key(path))


@st.cache_data(max_entries=16, show_spinner=False)
def _review(path: str, generation: str, options: AnalysisOptions, target: float, audit: tuple[int, int, str],
            decisions: tuple[int, str]) -> RecallBound | None:
    # The keys audit and decisions only make a new answer or decision a new entry.
    result = analysis(path, generation, options)
    if result.audit is None:
        return None
    return review_status(path, result.audit, result.ranking.index, target=target)
