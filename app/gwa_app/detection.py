"""Detection: how well each scorer finds the truly mislabeled samples (ground truth only)."""

from __future__ import annotations

import streamlit as st

from . import charts, data
from .data import RunState

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
        data.summary(state, window)
    table, counts = data.detection(state.path, state.generation, window)
    st.subheader("Side by side: every scorer against the ground truth")
    st.caption(
        f"{counts.get('n', 0):,} samples with ground truth, {counts.get('n_noisy', 0):,} mislabeled "
        f"({counts.get('n_noisy', 0) / max(counts.get('n', 1), 1):.1%}); k = {counts.get('k', 0):,} for precision/recall "
        f"at k. Scores averaged over the '{window}' window. Every scorer: higher = more suspicious."
    )
    st.dataframe(
        table.style.format(precision=4, na_rep="—").highlight_max(subset=["auroc", "ap", "p_at_k"], color="#d4edda"),
        width="stretch",
    )
    scorers = data.scorer_names()
    with st.expander("What each scorer measures"):
        for name, text in scorers.items():
            st.markdown(f"- **{name}**: {text}")
    chosen = st.multiselect("Curves for", list(scorers), default=[s for s in DEFAULT_CURVES if s in scorers],
                            key="detection_curves")
    if chosen:
        points = data.curves(state.path, state.generation, window, tuple(chosen))
        roc_col, pr_col = st.columns(2)
        with roc_col:
            st.markdown("**ROC** (AUROC in the table)")
            st.vega_lite_chart(spec=charts.roc_pr(points, "roc"), width="stretch")
        with pr_col:
            st.markdown("**Precision-recall** (AP in the table)")
            base = counts.get("n_noisy", 0) / max(counts.get("n", 1), 1)
            st.vega_lite_chart(spec=charts.roc_pr(points, "pr", baseline=base), width="stretch")
    st.subheader("Per class")
    scorer = st.selectbox("Scorer", list(scorers), key="detection_scorer")
    per = data.per_class(state.path, state.generation, window, scorer).copy()
    per.index = [state.class_name(i) for i in per.index]
    st.dataframe(per.style.format(precision=3, na_rep="—"), width="stretch")
