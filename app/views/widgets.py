"""Pieces shared by several pages: the sample detail panel, the relabel buttons, pagers,
the flag-rule choice."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from gwa_diag.analysis import relabel
from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.phase import EpochSelection
from gwa_diag.analysis.rank import RULES
from gwa_diag.checks import Rule, values

from . import charts
from .images import thumbnail
from .samples import compute_epoch_alignment, compute_trajectory
from .state import RunState, latest_decisions
from .table import page_count

__all__ = [
    "session_id", "open_sample", "selected_sample", "goto_sample_input", "pager", "decision_controls",
    "sample_detail", "fmt", "RULE_LABELS", "flag_rule",
]

SAMPLE_PARAM = "sample"
# Short names for the flag rules of gwa_diag.analysis.rank.RULES (its text is the help).
RULE_LABELS = {
    "estimate": "the estimated number of wrong labels (default)",
    "negative": "alignment < 0 at the selected epoch",
    "topk": "the k most suspicious",
    "noise_rate": "the top fraction (expected noise rate)",
    "p_wrong": "p_wrong >= 0.5 (needs answers on the Audit page)",
}


def session_id() -> str:
    """A short id for this browser session, stored with each decision it records."""
    if "gwa_session" not in st.session_state:
        st.session_state["gwa_session"] = uuid.uuid4().hex[:12]
    return str(st.session_state["gwa_session"])


def fmt(value: Any, spec: str = "+.3f") -> str:
    """A number for display; an em dash for a missing one."""
    if value is None or value is pd.NA:
        return "—"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "—" if np.isnan(number) else format(number, spec)


# --------------------------------------------------------------------------------------
# the selected sample lives in the session and in the URL (so a reload keeps it open)
# --------------------------------------------------------------------------------------


def open_sample(sample_id: int | None) -> None:
    """Select a sample (callback-safe: only touches session state and the URL)."""
    if sample_id is None:
        st.session_state.pop("sample", None)
        if SAMPLE_PARAM in st.query_params:
            del st.query_params[SAMPLE_PARAM]
        return
    st.session_state["sample"] = int(sample_id)
    st.query_params[SAMPLE_PARAM] = str(int(sample_id))


def selected_sample() -> int | None:
    """The selected sample id: this session's choice, else the one in the URL."""
    if "sample" not in st.session_state:
        raw = st.query_params.get(SAMPLE_PARAM)
        if raw is not None and str(raw).strip().lstrip("-").isdigit():
            st.session_state["sample"] = int(raw)
    value = st.session_state.get("sample")
    return int(value) if value is not None else None


def _goto(key: str) -> None:
    raw = str(st.session_state.get(key) or "").strip().replace(",", "").replace("_", "")
    st.session_state.pop(key + "_error", None)
    if not raw:
        return
    try:
        open_sample(int(raw))
    except ValueError:
        st.session_state[key + "_error"] = f"{raw!r} is not a sample id: type a whole number"


def goto_sample_input(key: str) -> None:
    """Open any sample by typing its id (also the keyboard path to the detail panel).

    A text field, not a number field: a browser number is a float, and ids above 2**53
    (hashes, database keys) would come back as a neighbouring id."""
    st.text_input("Open sample by id", key=key, on_change=_goto, args=(key,), placeholder="sample id")
    if key + "_error" in st.session_state:
        st.caption(f":red[{st.session_state[key + '_error']}]")


# --------------------------------------------------------------------------------------
# pagination
# --------------------------------------------------------------------------------------


def _step_page(key: str, delta: int, pages: int) -> None:
    st.session_state[key] = min(max(1, int(st.session_state.get(key, 1)) + delta), pages)


def pager(key: str, n_rows: int, per_page: int, *, label: str = "samples") -> int:
    """Prev / page number / Next controls; returns the current page (1-based).

    The page lives in ``st.session_state[key]``; callers reset it to 1 when the rows change.
    """
    pages = page_count(n_rows, per_page)
    current = int(st.session_state.get(key, 1))
    if current > pages or current < 1:
        st.session_state[key] = min(max(1, current), pages)
    prev_col, num_col, next_col, info_col = st.columns([1, 1.2, 1, 4], vertical_alignment="bottom")
    prev_col.button("◀ Prev", key=f"{key}_prev", on_click=_step_page, args=(key, -1, pages),
                    disabled=int(st.session_state.get(key, 1)) <= 1, width="stretch")
    page = num_col.number_input("Page", min_value=1, max_value=pages, step=1, key=key)
    next_col.button("Next ▶", key=f"{key}_next", on_click=_step_page, args=(key, 1, pages),
                    disabled=int(page) >= pages, width="stretch")
    first = (int(page) - 1) * per_page + 1 if n_rows else 0
    last = min(int(page) * per_page, n_rows)
    info_col.markdown(f"Page **{int(page)} of {pages}** · {label} {first:,}–{last:,} of **{n_rows:,}**")
    return int(page)


# --------------------------------------------------------------------------------------
# the flag rule
# --------------------------------------------------------------------------------------


def flag_rule(state: RunState, rule_col: Any, param_col: Any, options: AnalysisOptions, *,
              key: str) -> AnalysisOptions:
    """``options`` with the flag rule as chosen: the rule in ``rule_col`` (widget
    ``{key}_rule``), and for ``topk`` its k, for ``noise_rate`` the expected rate, in
    ``param_col`` (``{key}_k``, ``{key}_rate``)."""
    rule = rule_col.selectbox("Flag", list(values(Rule)), format_func=lambda r: RULE_LABELS.get(r, r),
                              key=f"{key}_rule", help="\n".join(f"- **{name}**: {text}" for name, text in RULES.items()))
    k: int | None = None
    rate: float | None = None
    if rule == "topk":
        most = max(1, int(state.num_samples or 1_000_000))
        k = int(param_col.number_input("k", min_value=1, max_value=most, value=min(100, most), step=50,
                                       key=f"{key}_k"))
    elif rule == "noise_rate":
        rate = float(param_col.slider("Expected noise rate", 0.0, 0.6, 0.1, 0.01, key=f"{key}_rate"))
    return replace(options, rule=str(rule), k=k, noise_rate=rate)


# --------------------------------------------------------------------------------------
# relabel decisions
# --------------------------------------------------------------------------------------


def _record(state: RunState, sample_id: int, decision: str, given: int | None, suggested: int | None,
            new_key: str | None, note_key: str) -> None:
    """Button callback: write the decision through gwa_diag.analysis.relabel right away."""
    new_label = int(st.session_state[new_key]) if new_key is not None else None
    try:
        relabel.record_decision(
            state.path, int(sample_id), decision, new_label=new_label, given_label=given,
            suggested_label=suggested, note=str(st.session_state.get(note_key, "") or ""),
            session=session_id(), num_classes=state.num_classes or None,
        )
    except (ValueError, TypeError, OSError) as exc:
        st.session_state.setdefault("decision_errors", {})[int(sample_id)] = f"Decision not saved: {exc}"
        return
    st.session_state.setdefault("decision_errors", {}).pop(int(sample_id), None)
    # Shown by the next render: elements drawn inside a callback of a fragment would land
    # at the top of the page.
    st.session_state["decision_saved"] = f"Saved: sample {sample_id} → {decision}"


def _int_or_none(value: Any) -> int | None:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return int(value)


def describe_decision(state: RunState, row: pd.Series) -> str:
    what = str(row["decision"])
    when = pd.Timestamp(row["timestamp"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    if what == "fine":
        text = "label is fine"
    else:
        text = f"{what} → **{state.class_name(row['new_label'])}**"
    note = f" — “{row['note']}”" if isinstance(row.get("note"), str) and row["note"] else ""
    return f"Decision: {text}{note} ({when})"


def decision_controls(state: RunState, sample_id: int, given: Any, suggested: Any, *, key: str) -> None:
    """Accept suggested / choose another label / mark fine, and the current decision."""
    given_i, suggested_i = _int_or_none(given), _int_or_none(suggested)
    saved = st.session_state.pop("decision_saved", None)
    if saved:
        st.toast(saved, icon="✅")
    latest = latest_decisions(state.path)
    if int(sample_id) in latest.index:
        st.success(describe_decision(state, latest.loc[int(sample_id)]), icon="✅")
    error = st.session_state.get("decision_errors", {}).get(int(sample_id))
    if error:
        st.error(error)
    note_key = f"{key}_note_{sample_id}"
    can_accept = suggested_i is not None and suggested_i != given_i
    accept_col, fine_col = st.columns(2)
    accept_col.button(
        f"Accept {state.class_name(suggested_i)}" if suggested_i is not None else "Accept suggested",
        key=f"{key}_accept_{sample_id}", type="primary", disabled=not can_accept,
        help="Relabel to the suggested label (the model's most frequent prediction)",
        on_click=_record, args=(state, sample_id, "accept", given_i, suggested_i, None, note_key), width="stretch",
    )
    fine_col.button("Label is fine", key=f"{key}_fine_{sample_id}", help="Keep the given label",
                    on_click=_record, args=(state, sample_id, "fine", given_i, suggested_i, None, note_key),
                    width="stretch")
    new_key = f"{key}_new_{sample_id}"
    choices = list(range(state.num_classes))
    default = choices.index(suggested_i) if suggested_i in choices else 0
    choose_col, relabel_col = st.columns(2, vertical_alignment="bottom")
    choose_col.selectbox("Or another label", choices, index=default, format_func=state.class_name, key=new_key)
    relabel_col.button("Relabel", key=f"{key}_relabel_{sample_id}", disabled=not choices,
                       on_click=_record, args=(state, sample_id, "relabel", given_i, suggested_i, new_key, note_key),
                       width="stretch")
    st.text_input("Note (optional)", key=note_key, placeholder="why, for the labeling team")


# --------------------------------------------------------------------------------------
# sample detail
# --------------------------------------------------------------------------------------


def _facts(state: RunState, sample_id: int, row: pd.Series, at_epoch: float | None, epoch: int,
           selection: EpochSelection) -> pd.DataFrame:
    rows = [("file", str(row["path"]))] if "path" in row.index and not pd.isna(row["path"]) else []
    rows += [
        ("given label", state.class_name(row.get("label"))),
        ("suggested label",
         f"{state.class_name(row.get('suggested_label'))} (p {fmt(row.get('suggested_prob'), '.2f')})"),
    ]
    if "clean_label" in row.index:
        clean = row.get("clean_label")
        verdict = ""
        if not pd.isna(clean):
            verdict = " — given label is wrong" if int(clean) != int(row["label"]) else " — given label is right"
        rows.append(("true label", state.class_name(clean) + verdict))
    rows.append((f"alignment at epoch {epoch}", fmt(at_epoch)))
    rows.append((f"alignment at {'selected' if not selection.fallback else 'last'} epoch {selection.used_epoch}",
                 fmt(row.get("alignment_selected"))))
    rows.append(("mean alignment (window)", fmt(-row["align_mean"]) if "align_mean" in row.index else "—"))
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


def sample_detail(state: RunState, sample_id: int, summ: pd.DataFrame, *, dataset: Any, epoch: int,
                  selection: EpochSelection, key: str = "detail") -> None:
    """The selected sample large, its labels, its trajectory and the relabel buttons."""
    head, close = st.columns([4, 1], vertical_alignment="center")
    head.subheader(f"Sample {sample_id}")
    close.button("Close", key=f"{key}_close", on_click=open_sample, args=(None,))
    if sample_id not in summ.index:
        st.warning(f"Sample {sample_id} is not in this run's complete epochs.")
        return
    row = summ.loc[sample_id]
    image_col, facts_col = st.columns([1, 1.4])
    if dataset is not None:
        try:
            image_col.image(thumbnail(dataset, sample_id, 224), caption=f"sample {sample_id}")
        except ValueError as exc:
            image_col.info(f"No image: {exc}")
    at = compute_epoch_alignment(state.path, state.generation, epoch)["alignment"]
    at_epoch = float(at.get(sample_id, np.nan))
    facts_col.table(_facts(state, sample_id, row, at_epoch, epoch, selection))
    traj = compute_trajectory(state.path, state.generation, sample_id)
    which = "last epoch (GWA selected none)" if selection.fallback else "GWA-selected epoch"
    marks = [(selection.used_epoch, f"{which} ({selection.used_epoch})"), (epoch, f"epoch shown ({epoch})")]
    for spec in charts.trajectory(traj, marks=marks) if len(traj) else []:
        st.vega_lite_chart(spec=spec, width="stretch", height=130)
    if len(traj):
        st.caption(" · ".join(f"{colour} dashed line: {what}" for colour, (_, what) in zip(("red", "grey"), marks)))
    decision_controls(state, sample_id, row.get("label"), row.get("suggested_label"), key=key)
