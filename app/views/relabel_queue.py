"""Relabel queue: the flagged samples one by one, each decision saved immediately
(``gwa_diag.analysis.relabel``), with a CSV export for the labeling team; with an answered
audit, how many wrong labels the review has found, how many remain and whether its recall
has passed the target (``gwa_diag.analysis.audit.review_status``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd
import streamlit as st

from gwa_diag.analysis import relabel
from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.checks import DEFAULT_SCORER, InputError

from . import widgets
from .images import thumbnail
from .jobs import open_dataset
from .results import analysis, review
from .state import RunState, latest_decisions
from .table import page_slice

__all__ = ["render", "queue_rows", "DEFAULT_TARGET"]

PAGE_KEY = "queue_page"
PER_PAGE = 10
SHOW_CHOICES = ("undecided", "decided", "all")
#: The recall a review should reach before it stops, in percent (the user sets it).
DEFAULT_TARGET = 90


def _rule_controls(state: RunState, window: str) -> AnalysisOptions:
    """The analysis options as chosen above the queue (the flag rule with its k or noise
    rate, the order), over ``window`` (the sidebar's): built once, passed to every part of
    the page."""
    c1, c2, c3 = st.columns([2, 2, 2])
    names = list(SCORERS)
    options = widgets.flag_rule(state, c1, c3, AnalysisOptions(window=window), key="queue")
    scorer = c2.selectbox("Order by", names, index=names.index(DEFAULT_SCORER) if DEFAULT_SCORER in names else 0,
                          key="queue_scorer",
                          help="Most suspicious first (higher = more suspicious)")
    return replace(options, scorer=str(scorer))


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


def _stopping(state: RunState, options: AnalysisOptions) -> None:
    """When to stop reviewing: found so far, estimated to remain, the recall and its lower
    bound against the target, from the decisions above and the audit's answers."""
    st.subheader("When to stop reviewing")
    target_col, text_col = st.columns([1, 3], vertical_alignment="bottom")
    target = target_col.number_input("Target recall (%)", min_value=50, max_value=100, value=DEFAULT_TARGET, step=5,
                                     key="queue_target", help="Stop once the recall's lower bound reaches this")
    result = analysis(state.path, state.generation, options).audit
    if result is None or result.count is None:
        missing = result.needed if result is not None else (
            f"no answered audit yet: draw and verify a sample on the Audit page (or `gwa-diag audit {state.path} "
            "--n 200`)")
        text_col.caption(f"How many wrong labels remain below the reviewed part needs a verified sample: {missing}.")
        return
    bound = review(state.path, state.generation, options, float(target) / 100)
    if bound is None:
        text_col.caption("No review yet: decide the samples from the top of the queue. The recall counts the top "
                         "of the order decided without a gap, and estimates what is left below it from the audit.")
        return
    remaining = bound.remaining
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Reviewed from the top", f"{bound.reviewed:,}")
    m2.metric("Wrong labels found", f"{bound.found:,}")
    m3.metric("Estimated to remain", f"{remaining.estimate:,.0f}",
              help=f"95% interval {remaining.low:,.0f}-{remaining.high:,.0f}")
    m4.metric("Recall", f"{bound.recall:.0%}", help=f"at least {bound.recall_low:.0%} (95%)")
    text_col.caption(f"Estimated to remain: {remaining.estimate:,.0f} (95% interval {remaining.low:,.0f}-"
                     f"{remaining.high:,.0f}); recall {bound.recall:.0%}, at least {bound.recall_low:.0%}.")
    if bound.reached:
        st.success(f"The recall's lower bound, {bound.recall_low:.0%}, has passed the {bound.target:.0%} target: "
                   "the review can stop.")
    else:
        st.info(f"Keep reviewing: the recall's lower bound is {bound.recall_low:.0%}, below the "
                f"{bound.target:.0%} target.")


def render(state: RunState, window: str) -> None:
    if state.empty:
        st.info("No complete epoch yet: there is nothing to flag until the first epoch is written.")
        return
    options = _rule_controls(state, window)
    with st.spinner("Computing the per-sample scores…"):
        flagged = analysis(state.path, state.generation, options).flagged
    latest = latest_decisions(state.path)
    done = int(flagged.index.isin(latest.index).sum())
    m1, m2, m3 = st.columns(3)
    m1.metric("Flagged", f"{len(flagged):,}")
    m2.metric("Decided", f"{done:,}")
    m3.metric("Left", f"{len(flagged) - done:,}")
    if len(flagged):
        st.progress(done / len(flagged))
    _stopping(state, options)
    show = st.segmented_control("Show", SHOW_CHOICES, default="undecided", key="queue_show") or "undecided"
    rows = queue_rows(flagged, latest, show)
    signature = (options, show)
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
