"""Relabel queue: the flagged samples one by one, each decision saved immediately
(``gwa_diag.analysis.relabel``), with a CSV export for the labeling team."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from gwa_diag.analysis import relabel
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.checks import DEFAULT_SCORER, InputError

from . import widgets
from .images import thumbnail
from .jobs import open_dataset
from .results import analysis
from .state import RunState, latest_decisions
from .table import page_slice

__all__ = ["render", "queue_rows"]

PAGE_KEY = "queue_page"
PER_PAGE = 10
SHOW_CHOICES = ("undecided", "decided", "all")


def _rule_controls(state: RunState) -> tuple[str, str, int | None, float | None]:
    """(rule, scorer, k, noise_rate) as chosen above the queue."""
    c1, c2, c3 = st.columns([2, 2, 2])
    names = list(SCORERS)
    rule, k, rate = widgets.flag_rule(state, c1, c3, key="queue")
    scorer = c2.selectbox("Order by", names, index=names.index(DEFAULT_SCORER) if DEFAULT_SCORER in names else 0,
                          key="queue_scorer",
                          help="Most suspicious first (higher = more suspicious)")
    return rule, scorer, k, rate


def queue_rows(flagged: pd.DataFrame, latest: pd.DataFrame, show: str) -> pd.DataFrame:
    """The flagged rows to list: undecided, decided or all (order kept)."""
    if show not in SHOW_CHOICES:
        raise InputError(f"unknown queue view {show!r}; valid: {', '.join(SHOW_CHOICES)}")
    decided = flagged.index.isin(latest.index)
    if show == "undecided":
        return flagged[~decided]
    if show == "decided":
        return flagged[decided]
    return flagged


def _item(state: RunState, sample_id: int, row: Any, dataset: Any) -> None:
    with st.container(border=True, key=f"queue_item_{sample_id}"):
        image_col, facts_col, action_col = st.columns([1, 2, 3.2])
        if dataset is not None:
            try:
                image_col.image(thumbnail(dataset, sample_id, 128))
            except ValueError as exc:
                image_col.caption(f"no image: {exc}")
        lines = [
            f"**#{sample_id}** · rank {int(row['rank']):,}",
            *([f"file: `{row['path']}`"] if "path" in row.index and not pd.isna(row["path"]) else []),
            f"given: **{state.class_name(row['label'])}**",
            f"suggested: **{state.class_name(row['suggested_label'])}** "
            f"(p {widgets.fmt(row['suggested_prob'], '.2f')})",
        ]
        if "clean_label" in row.index and not pd.isna(row["clean_label"]):
            lines.append(f"true: {state.class_name(row['clean_label'])}")
        lines.append(f"<small>{row['reason']}</small>")
        facts_col.markdown("  \n".join(lines), unsafe_allow_html=True)
        with action_col:
            widgets.decision_controls(state, sample_id, row["label"], row["suggested_label"], key="queue")


def _export(state: RunState, latest: pd.DataFrame) -> None:
    st.subheader("Export")
    st.caption(
        f"{len(latest):,} sample(s) have a decision (the latest per sample counts). Decisions are saved the "
        f"moment a button is pressed, one file each under {state.path}/relabels/."
    )
    c1, c2 = st.columns(2)
    c1.download_button("Download decisions (CSV)", data=relabel.decisions_csv(state.path),
                       file_name="relabels.csv", mime="text/csv", key="queue_download", on_click="ignore")
    if c2.button("Write analysis/relabels.csv in the run directory", key="queue_write"):
        try:
            path = relabel.export_csv(state.path)
            st.success(f"Wrote {path}")
        except OSError as exc:
            st.error(f"Could not write the CSV: {exc}")
    if len(latest):
        with st.expander("All decisions"):
            shown = latest.reset_index().assign(
                new_label=lambda f: f["new_label"].map(lambda v: state.class_name(v) if not pd.isna(v) else ""),
                given_label=lambda f: f["given_label"].map(lambda v: state.class_name(v) if not pd.isna(v) else ""),
            )
            st.dataframe(shown.drop(columns=["suggested_label"]), hide_index=True, width="stretch")


def render(state: RunState, window: str) -> None:
    if state.empty:
        st.info("No complete epoch yet: there is nothing to flag until the first epoch is written.")
        return
    rule, scorer, k, rate = _rule_controls(state)
    with st.spinner("Computing the per-sample scores…"):
        flagged = analysis(state.path, state.generation, window, scorer, rule, k, rate).flagged
    latest = latest_decisions(state.path)
    done = int(flagged.index.isin(latest.index).sum())
    m1, m2, m3 = st.columns(3)
    m1.metric("Flagged", f"{len(flagged):,}")
    m2.metric("Decided", f"{done:,}")
    m3.metric("Left", f"{len(flagged) - done:,}")
    if len(flagged):
        st.progress(done / len(flagged))
    show = st.segmented_control("Show", SHOW_CHOICES, default="undecided", key="queue_show") or "undecided"
    rows = queue_rows(flagged, latest, show)
    signature = (rule, scorer, k, rate, show)
    if st.session_state.get("queue_signature") != signature:
        st.session_state["queue_signature"] = signature
        st.session_state[PAGE_KEY] = 1
    with st.spinner("Loading the images…"):
        dataset, why = open_dataset(state)
    if why:
        st.warning(why, icon="🖼️")
    if rows.empty:
        st.success("Nothing left to review in this view." if len(flagged) else "No sample is flagged by this rule.")
    else:
        page = widgets.pager(PAGE_KEY, len(rows), PER_PAGE)
        for sample_id, row in page_slice(rows, page, PER_PAGE).iterrows():
            _item(state, int(sample_id), row, dataset)
    _export(state, latest)
