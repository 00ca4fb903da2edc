"""Browse: every sample as an image grid, most suspicious first, with filters, an epoch
slider and a detail panel for the selected sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.phase import EpochSelection
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.checks import DEFAULT_SCORER

from . import widgets
from .grid import Cell, image_grid
from .images import grid_images
from .jobs import open_dataset
from .results import analysis
from .state import RunState, latest_decisions
from .table import MISLABELED_CHOICES, SORT_ALIGNMENT, Filters, apply_filters, browse_table, page_slice

__all__ = ["render", "BrowseControls", "controls"]

PAGE_KEY = "browse_page"
COLUMNS = 6
PER_PAGE_CHOICES = (24, 48, 96)


@dataclass(frozen=True)
class BrowseControls:
    """Everything chosen above the grid: the order, the epoch, the page size, the filters
    and the analysis options (the window, the scorer of the order, the flag rule with its k
    or noise rate)."""

    sort_by: str
    epoch: int
    per_page: int
    filters: Filters
    options: AnalysisOptions


def _sort_label(name: str) -> str:
    if name == SORT_ALIGNMENT:
        return "alignment at the chosen epoch (lowest first)"
    return f"{name} (highest first)"


def controls(state: RunState, sel: EpochSelection, window: str) -> BrowseControls:
    """Sort, epoch, flag rule, filters and page size, as chosen in the widgets; the analysis
    options are built here once, over ``window`` (the sidebar's)."""
    sort_col, epoch_col, size_col = st.columns([2, 3, 1])
    orders = [SORT_ALIGNMENT, *SCORERS]
    # Opens on the default ranking, the order the relabel queue, suspects.csv and the first
    # screen use; raw alignment at a chosen epoch stays a choice.
    sort_by = sort_col.selectbox(
        "Sort by", orders, index=orders.index(DEFAULT_SCORER), format_func=_sort_label, key="browse_sort",
        help="Every scorer is oriented higher = more suspicious; raw alignment is shown lowest first.",
    )
    if sort_by != SORT_ALIGNMENT:
        sort_col.caption(SCORERS[sort_by])
    default = sel.used_epoch if sel.used_epoch in state.completed else state.completed[-1]
    epoch = epoch_col.select_slider("Epoch (alignment shown for it)", options=list(state.completed), value=default,
                                    key="browse_epoch")
    per_page = size_col.selectbox("Per page", PER_PAGE_CHOICES, index=1, key="browse_per_page")
    classes = list(range(state.num_classes))
    f1, f2, f3, f4, f5 = st.columns(5)
    given = f1.multiselect("Given label", classes, format_func=state.class_name, key="browse_given")
    suggested = f2.multiselect("Suggested label", classes, format_func=state.class_name, key="browse_suggested")
    true_class: list[int] = []
    mislabeled = "all"
    if state.has_truth:
        true_class = f3.multiselect("True class", classes, format_func=state.class_name, key="browse_true")
        mislabeled = f4.selectbox("Ground truth", MISLABELED_CHOICES, key="browse_mislabeled",
                                  format_func={"all": "all samples", "mislabeled": "mislabeled only",
                                               "correct": "correctly labeled only"}.get)
    else:
        f3.caption("True class: no ground truth in this run")
    # Sorting by alignment flags on the default ranking, as gwa-diag rank does.
    scorer = DEFAULT_SCORER if sort_by == SORT_ALIGNMENT else str(sort_by)
    options = widgets.flag_rule(state, f5, f5, AnalysisOptions(window=window, scorer=scorer),
                                key="browse")
    flagged_only = f5.toggle("Flagged only", key="browse_flagged",
                             help="⚑ marks what the chosen rule flags on this ranking (the default ranking "
                                  "when sorting by alignment), as gwa-diag rank and the relabel queue flag")
    filters = Filters(tuple(given), tuple(suggested), tuple(true_class), bool(flagged_only), str(mislabeled))
    return BrowseControls(str(sort_by), int(epoch), int(per_page), filters, options)


def _cell(state: RunState, sample_id: int, row: Any, src: str | None, decided: bool, selected: bool) -> Cell:
    given = state.class_name(row.label)
    suggested = row.suggested_label
    changed = not pd.isna(suggested) and int(suggested) != int(row.label)
    caption = f"{given} → {state.class_name(suggested)}" if changed else given
    title = [f"sample {sample_id}", f"given: {given}", f"suggested: {state.class_name(suggested)}",
             f"alignment: {widgets.fmt(row.alignment)}"]
    if hasattr(row, "clean_label") and not pd.isna(row.clean_label):
        title.append(f"true: {state.class_name(row.clean_label)}")
    if row.flagged:
        title.append(f"flagged: {row.reason}")
    if decided:
        title.append("has a relabel decision")
    return Cell(int(sample_id), src, caption, f"#{sample_id} · a {widgets.fmt(row.alignment, '+.2f')}",
                "\n".join(title), bool(row.flagged), decided, selected)


def _grid(state: RunState, rows: pd.DataFrame, dataset: Any, selected: int | None) -> None:
    ids = rows.index.to_numpy()
    sources: list[str | None] = [None] * len(ids)
    if dataset is not None:
        try:
            sources = list(grid_images(dataset, ids))
        except ValueError as exc:
            st.warning(f"The images do not match this run: {exc}")
    decided = set(latest_decisions(state.path).index)
    cells = [_cell(state, int(i), row, src, int(i) in decided, int(i) == selected)
             for i, row, src in zip(ids, rows.itertuples(), sources)]
    image_grid(cells, key="browse_grid", on_open=widgets.open_sample, columns=COLUMNS)


@st.fragment
def _results(state: RunState, shown: pd.DataFrame, summ: pd.DataFrame, dataset: Any, ctl: BrowseControls,
             sel: EpochSelection) -> None:
    """Pager, grid and detail panel. A fragment: flipping pages or opening a sample reruns
    only this part, not the filters above."""
    page = widgets.pager(PAGE_KEY, len(shown), ctl.per_page)
    if shown.empty:
        st.info("No sample matches these filters.")
        return
    rows = page_slice(shown, page, ctl.per_page)
    selected = widgets.selected_sample()
    grid_col, detail_col = st.columns([3, 2], gap="large")
    with grid_col:
        _grid(state, rows, dataset, selected)
    with detail_col:
        widgets.goto_sample_input("browse_goto")
        if selected is None:
            st.info("Click an image to see it large, with its trajectory over training and the relabel buttons.")
        else:
            with st.container(border=True, key="sample_detail"):
                widgets.sample_detail(state, selected, summ, dataset=dataset, epoch=ctl.epoch, selection=sel)


def _reset_page_on_change(ctl: BrowseControls) -> None:
    """A new sort, epoch or filter starts again at page 1 (page 7 of another order means nothing)."""
    # The epoch changes the order only when sorting by the alignment at that epoch; the rule
    # changes the rows only when showing flagged ones only.
    signature = (ctl.sort_by, ctl.epoch if ctl.sort_by == SORT_ALIGNMENT else None, ctl.per_page, ctl.filters,
                 (ctl.options.rule, ctl.options.k, ctl.options.noise_rate) if ctl.filters.flagged_only else None)
    if st.session_state.get("browse_signature") != signature:
        st.session_state["browse_signature"] = signature
        st.session_state[PAGE_KEY] = 1


def render(state: RunState, window: str) -> None:
    if state.empty:
        st.info("No complete epoch yet: samples appear here once the first epoch is written.")
        return
    with st.spinner("Computing the per-sample scores (once per run state)…"):
        result = analysis(state.path, state.generation, AnalysisOptions(window=window))
    summ, sel = result.summary, result.selection
    with st.spinner("Loading the images…"):
        dataset, why = open_dataset(state)
    if why:
        st.warning(why, icon="🖼️")
    ctl = controls(state, sel, window)
    table = browse_table(state.path, state.generation, ctl.options, ctl.sort_by, ctl.epoch)
    shown = apply_filters(table, ctl.filters)
    _reset_page_on_change(ctl)
    _results(state, shown, summ, dataset, ctl, sel)
