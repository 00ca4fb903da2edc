"""The Browse table: the samples of one :class:`~gwa_diag.analysis.pipeline.Analysis` in its
order with its flags, the filters, and pages.

The order and the flags are the analysis's own (``Analysis.ranking``, ``Analysis.flagged``:
the user's scorer and flag rule); the one order added here is the raw alignment at an epoch
the user picks, which is a recorded value, not a score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.pipeline import Analysis
from gwa_diag.checks import InputError

from .results import analysis
from .samples import compute_epoch_alignment

__all__ = [
    "SORT_ALIGNMENT",
    "MISLABELED_CHOICES",
    "Filters",
    "browse_order",
    "browse_table",
    "apply_filters",
    "page_count",
    "page_slice",
]

#: ``sort_by`` for the raw alignment at the chosen epoch, lowest first.
SORT_ALIGNMENT = "alignment"
MISLABELED_CHOICES = ("all", "mislabeled", "correct")

_SUMMARY_COLUMNS = ("label", "suggested_label", "suggested_prob", "clean_label", "alignment_selected")


def browse_order(result: Analysis, at_epoch: pd.DataFrame, *, sort_by: str) -> pd.DataFrame:
    """The browse table, most suspicious first.

    ``sort_by``: the analysis's scorer (``result.options.scorer``) keeps the analysis's
    ranking order; ``"alignment"`` (:data:`SORT_ALIGNMENT`) sorts by the raw alignment at
    the chosen epoch (``at_epoch``), lowest first (negative = pulls against the head), NaN
    last, ties by sample id. Either way ``flagged`` marks the rows of ``result.flagged``.

    Columns: label, suggested_label, suggested_prob, [clean_label], alignment_selected,
    alignment (at the chosen epoch), flagged, reason (why it is flagged; NaN when not),
    score (the scorer's, or minus the alignment).

    Raises:
        InputError: ``sort_by`` is another scorer than the analysis ranked by (the order
            would then silently be another one's).
    """
    if sort_by not in (SORT_ALIGNMENT, result.options.scorer):
        raise InputError(f"the analysis ranks by {result.options.scorer!r}, not {sort_by!r}; "
                         f"pass sort_by={result.options.scorer!r} or {SORT_ALIGNMENT!r}")
    ranking = result.ranking
    table = ranking[[c for c in _SUMMARY_COLUMNS if c in ranking]].copy()
    table["alignment"] = at_epoch["alignment"].reindex(table.index).to_numpy(dtype=np.float64)
    table["flagged"] = table.index.isin(result.flagged.index)
    table["reason"] = result.flagged["reason"].reindex(table.index)
    if sort_by != SORT_ALIGNMENT:
        table["score"] = ranking["score"].to_numpy()
        return table
    a = table["alignment"].to_numpy()
    missing = np.isnan(a)
    # lexsort: last key first. Known values before NaN, lowest alignment, then lower id.
    table = table.iloc[np.lexsort((table.index.to_numpy(), np.where(missing, 0.0, a), missing))]
    table["score"] = -table["alignment"]
    return table


@st.cache_resource(max_entries=8, show_spinner=False)
def browse_table(path: str, generation: str, options: AnalysisOptions, sort_by: str, epoch: int) -> pd.DataFrame:
    """:func:`browse_order` of the run's analysis with ``options`` (their scorer is
    ``sort_by``, or any when sorting by alignment; their rule flags), cached per (run state,
    options, sort, epoch); shared, read-only.

    Raises:
        InputError: ``sort_by`` is another scorer than ``options.scorer``.
    """
    result = analysis(path, generation, options)
    return browse_order(result, compute_epoch_alignment(path, generation, epoch), sort_by=sort_by)


@dataclass(frozen=True)
class Filters:
    """Browse filters; an empty tuple means "any"."""

    given: tuple[int, ...] = ()
    suggested: tuple[int, ...] = ()
    true_class: tuple[int, ...] = ()
    flagged_only: bool = False
    mislabeled: str = "all"  # all | mislabeled | correct (ground truth only)


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
    """Pages of ``per_page`` rows needed for ``n_rows`` (at least one, even when empty)."""
    return max(1, -(-int(n_rows) // int(per_page)))


def page_slice(table: pd.DataFrame, page: int, per_page: int) -> pd.DataFrame:
    """Rows of page ``page`` (1-based, clamped to the valid range)."""
    page = min(max(1, int(page)), page_count(len(table), per_page))
    start = (page - 1) * per_page
    return table.iloc[start : start + per_page]
