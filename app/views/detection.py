"""Detection: how well each scorer finds the truly mislabeled samples (ground truth only)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from gwa_diag.analysis.metrics import ESTIMATE_ROW, RULE_ROW
from gwa_diag.analysis.scorers import SCORERS

from . import charts
from .results import curves, detection, per_class
from .state import RunState
from .widgets import fmt

__all__ = ["render", "NO_TRUTH"]

NO_TRUTH = (
    "This run has no ground truth, so detection quality cannot be measured: labels.parquet has no "
    "clean_label column. Runs on CIFAR-10-N label sets or with injected noise (`--noise-rate`) record "
    "the clean labels; for other data, `gwa-diag score RUN --truth FILE` takes a CSV of sample_id, "
    "clean_label. The Browse and Relabel queue pages work without it."
)

DEFAULT_CURVES = ("align_mean", "align_selected", "aum", "loss_mean", "confidence", "forgetting")


def render(state: RunState, window: str) -> None:
    if state.empty:
        st.info("No complete epoch yet: detection metrics need at least one recorded epoch.")
        return
    if not state.has_truth:
        st.info(NO_TRUTH, icon="ℹ️")
        return
    with st.spinner("Computing the per-sample scores…"):
        table, counts = detection(state.path, state.generation, window)
    st.subheader("Side by side: every scorer against the ground truth")
    n, n_noisy = int(counts.get("n", 0)), int(counts.get("n_noisy", 0))
    st.caption(
        f"{n:,} samples with ground truth, {n_noisy:,} mislabeled ({n_noisy / max(n, 1):.1%}); "
        f"k = {counts.get('k', 0):,} for precision/recall at k. Scores averaged over the '{window}' window. "
        "Every scorer: higher = more suspicious."
    )
    scores = table.drop(index=[ESTIMATE_ROW, RULE_ROW], errors="ignore")[["auroc", "ap", "p_at_k", "r_at_k"]]
    st.dataframe(
        scores.style.format(precision=4, na_rep="—").highlight_max(color="#d4edda"),
        width="stretch", height=36 * (len(scores) + 1) + 3,
        column_config={"auroc": "AUROC", "ap": "AP", "p_at_k": "precision@k", "r_at_k": "recall@k"},
    )
    estimated = counts.get("estimated")
    rules = (
        (ESTIMATE_ROW, "**The default rule: the top of the ranking down to the estimated number of wrong labels** "
                       f"(estimated {estimated if estimated is not None else '—'}, true {n_noisy:,})"),
        (RULE_ROW, "**The paper's rule: alignment < 0 at the selected epoch**"),
    )
    for row_name, title in rules:
        if row_name not in table.index:
            continue
        rule = table.loc[row_name]
        st.markdown(title)
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Precision", fmt(rule["precision"], ".3f"))
        c2.metric("Recall", fmt(rule["recall"], ".3f"))
        c3.metric("F1", fmt(rule["f1"], ".3f"))
        c4.metric("Flagged", f"{int(rule['n_flagged']):,}" if not pd.isna(rule["n_flagged"]) else "—")
    with st.expander("What each scorer measures"):
        for name, text in SCORERS.items():
            st.markdown(f"- **{name}**: {text}")
    chosen = st.multiselect("Curves for", list(SCORERS), default=[s for s in DEFAULT_CURVES if s in SCORERS],
                            key="detection_curves")
    if chosen:
        points = curves(state.path, state.generation, window, tuple(chosen))
        roc_col, pr_col = st.columns(2)
        with roc_col:
            st.markdown("**ROC** (AUROC in the table)")
            st.vega_lite_chart(spec=charts.roc_pr(points, "roc"), width="stretch")
        with pr_col:
            st.markdown("**Precision-recall** (AP in the table)")
            st.vega_lite_chart(spec=charts.roc_pr(points, "pr", baseline=n_noisy / max(n, 1)), width="stretch")
    st.subheader("Per class")
    scorer = st.selectbox("Scorer", list(SCORERS), key="detection_scorer")
    per = per_class(state.path, state.generation, window, scorer).copy()
    per.index = [state.class_name(i) for i in per.index]
    st.dataframe(per.style.format(precision=3, na_rep="—"), width="stretch")
