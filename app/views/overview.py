"""Overview: the training phase (whether and from which epoch the model memorised its labels,
and so which epochs the scores read) with the per-epoch curve it was read from, the GWA
curve with the early-stopping epoch, accuracy, the alignment histogram at any epoch, and the
run's metadata."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.phase import MEMORISED_AT, MEMORISING_FROM, EpochChoices, EpochSelection, fit_at_share
from gwa_diag.store import open_run

from . import charts
from .results import analysis, stopping_notes
from .samples import compute_epoch_alignment
from .audit import DEFAULT_N as AUDIT_N
from .state import RunState, audit_key, label_origin
from .widgets import fmt

__all__ = ["render"]


@st.cache_data(max_entries=16, show_spinner=False)
def _curve_png(path: str, generation: str, selected: int | None, fallback: bool) -> bytes:
    return charts.gwa_curve_png(open_run(path).epochs(), selected, fallback=fallback)


@st.cache_data(max_entries=16, show_spinner=False)
def _phase_png(path: str, generation: str, window: str) -> bytes:
    choices = analysis(path, generation, AnalysisOptions(window=window)).epoch_choices
    phase = choices.phase
    return charts.phase_png(choices.phase.curve, window=list(choices.window),
                            onset=phase.onset if phase.memorising else None, plateau=phase.plateau,
                            memorised=phase.memorised, weight=phase.weight)


@st.cache_data(max_entries=16, show_spinner=False)
def _accuracy_png(path: str, generation: str) -> bytes | None:
    return charts.accuracy_png(open_run(path).epochs())


@st.cache_data(max_entries=64, show_spinner=False)
def _histogram_png(path: str, generation: str, window: str, epoch: int) -> tuple[bytes | None, int, int]:
    """(PNG, samples with alignment < 0, samples) at ``epoch``, coloured by the analysis's
    ground truth when it has one; no PNG when the epoch has no rows."""
    rows = compute_epoch_alignment(path, generation, epoch)
    if rows.empty:
        return None, 0, 0
    values = rows["alignment"].to_numpy(dtype=np.float64)
    truth = analysis(path, generation, AnalysisOptions(window=window)).truth
    groups = None
    if truth is not None:
        noisy = truth.reindex(rows.index).fillna(False).to_numpy(dtype=bool)
        groups = np.where(noisy, "mislabeled", "clean")
    return charts.histogram_png(values, groups), int(np.sum(values < 0)), len(values)


def _headline(state: RunState, sel: EpochSelection) -> None:
    epochs = state.epochs
    cols = st.columns(5)
    planned = f" of {state.planned_epochs}" if state.planned_epochs else ""
    cols[0].metric("Complete epochs", f"{len(state.completed)}{planned}")
    cols[1].metric("Samples", f"{state.num_samples:,}" if state.num_samples else "—")
    cols[2].metric("Classes", state.num_classes or "—")
    cols[3].metric("GWA-selected epoch", sel.epoch if sel.epoch is not None else "none")
    if "eval_acc" in epochs:
        at = epochs.loc[epochs["epoch"] == sel.used_epoch, "eval_acc"]
        cols[4].metric("Eval accuracy there", fmt(at.iloc[0] if len(at) else None, ".3f"))
    elif "train_acc" in epochs:
        at = epochs.loc[epochs["epoch"] == sel.used_epoch, "train_acc"]
        cols[4].metric("Train accuracy there", fmt(at.iloc[0] if len(at) else None, ".3f"))


def _undefined_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    gwa = pd.to_numeric(epochs["gwa"], errors="coerce") if "gwa" in epochs else pd.Series(np.nan, index=epochs.index)
    valid = epochs["valid"].fillna(False).astype(bool) if "valid" in epochs else gwa.notna()
    bad = ~(valid & gwa.notna())
    cols = [c for c in ("epoch", "reason", "kurtosis", "mean") if c in epochs]
    return epochs.loc[bad, cols]


def _phase(state: RunState, window: str, choices: EpochChoices) -> None:
    st.subheader("Training phase")
    note = choices.note
    # Which epochs every score on these pages reads, and why: first, before any score.
    st.info(note[0].upper() + note[1:] + ".")
    st.image(_phase_png(state.path, state.generation, window), width="stretch")
    phase = choices.phase
    head = note.split(": ", 1)[0] + ": "
    reason = phase.reason[len(head):] if phase.reason.startswith(head) else phase.reason
    thresholds = (
        f"Dashed: fit above {1 - phase.noise:.1%} (1 - the {phase.noise:.1%} confidently contradicted at the "
        f"plateau, epoch {phase.plateau}) means fitting labels the model contradicted; from "
        f"{fit_at_share(phase.noise, MEMORISING_FROM):.1%} the window moves towards the epochs before that, "
        f"reaching them at {fit_at_share(phase.noise, MEMORISED_AT):.1%}, where it memorised them. "
        if phase.noise is not None
        else "No fit thresholds: they need the confidently contradicted share where the fit levels off. "
    )
    st.caption(
        (reason[0].upper() + reason[1:] + ". " if reason not in note else "")
        + "Fit: the share of training samples predicted as labelled; contradicted: the share predicted as "
        "another class with at least that class's mean confidence. " + thresholds
        + "Shaded: the epochs the scores average."
    )


def _curve(state: RunState, window: str, sel: EpochSelection) -> None:
    st.subheader("Gradient-weight alignment per epoch")
    st.image(_curve_png(state.path, state.generation, sel.used_epoch, sel.fallback), width="stretch")
    if not sel.fallback:
        st.caption(f"Early stopping without a validation set: epoch **{sel.epoch}** — {sel.reason}.")
    else:
        st.caption(f"GWA selects no epoch yet ({sel.reason}); flags use the last complete epoch {sel.used_epoch}.")
    level, notes = stopping_notes(state.path, state.generation, window)
    trust, others = notes[0], notes[1:]
    # A choice on a rising or flat curve looks as confident as a real peak: say which it is.
    (st.success if level == "clear" else st.warning)(trust[0].upper() + trust[1:] + ".")
    st.caption(" ".join(line[0].upper() + line[1:] + "." for line in others))
    undefined = _undefined_epochs(state.epochs)
    if len(undefined):
        st.warning(
            f"GWA is undefined at {len(undefined)} epoch(s), shown as gaps and left out of the selection.",
            icon="⚠️",
        )
        st.dataframe(undefined, hide_index=True, width="stretch")
    accuracy = _accuracy_png(state.path, state.generation)
    if accuracy is not None:
        st.subheader("Accuracy")
        st.image(accuracy, width="stretch")
        if "eval_acc" not in state.epochs:
            st.caption("No evaluation set was recorded: training accuracy only.")


def _audit_line(state: RunState, result: Any) -> None:
    """The verified sample's count with its 95% interval, or what is missing for one (and how
    to get it): beside the estimate from the recording, which has no interval."""
    audit = result.audit
    if audit is not None and audit.count is not None:
        st.success(f"From the verified sample: {audit.line()}.")
    elif audit is not None and audit.answered:
        st.info(f"For an interval: {audit.line()}. Answer on the Audit page, or `gwa-diag audit {state.path} "
                "--answers SHEET`.")
    elif audit is not None or audit_key(state.path)[0]:
        st.info("A sample to verify is drawn and has no answer yet: answer it on the Audit page, or fill in "
                f"`{state.path}/audit/sheet.csv` and run `gwa-diag audit {state.path} --answers SHEET`.")
    else:
        st.info(f"For this count with a 95% interval, verify about {AUDIT_N} labels: `gwa-diag audit {state.path} "
                f"--n {AUDIT_N}` (or the Audit page), then answer them.")


def _wrong_labels(state: RunState, window: str) -> None:
    st.subheader("How many labels are wrong")
    result = analysis(state.path, state.generation, AnalysisOptions(window=window))
    _audit_line(state, result)
    estimate = result.estimate
    if estimate is None:
        return
    true = f" (ground truth: {int(result.truth.sum()):,})" if result.truth is not None else ""
    c1, c2 = st.columns(2)
    c1.metric("Estimated wrong labels", f"{estimate.total:,}", help=estimate.line())
    c2.metric("Share of the samples", f"{estimate.rate:.1%}")
    if estimate.epoch is None:
        how = (f"the samples whose label the model did not fit in most of epochs "
               f"{', '.join(str(e) for e in result.epoch_choices.disagreement_epochs)}; {estimate.caveat}")
    else:
        how = f"{estimate.method}; {estimate.caveat}"
    st.caption(
        f"Estimated{true}: {how}. "
        f"The default rule flags the top {estimate.total:,} of the ranking by "
        f"**{result.options.scorer}** (area under the margin, which found wrong labels a little better than "
        "mean alignment in every CIFAR-10-N measurement: alignment leaves out the head's bias and divides by "
        "each sample's feature norm). Per given class: "
        + estimate.per_class_text(list(state.class_names or []))
        + "."
    )


def _histogram(state: RunState, window: str, sel: EpochSelection) -> None:
    st.subheader("Alignment of every sample at one epoch")
    default = sel.used_epoch if sel.used_epoch in state.completed else state.completed[-1]
    epoch = st.select_slider("Epoch", options=list(state.completed), value=default, key="overview_epoch")
    png, negative, total = _histogram_png(state.path, state.generation, window, int(epoch))
    if png is None:
        st.info(f"Epoch {epoch} has no sample rows on disk (its part file is missing).")
        return
    st.image(png, width="stretch")
    st.caption(
        f"{negative:,} of {total:,} samples ({negative / max(total, 1):.1%}) have alignment < 0 at "
        f"epoch {epoch}: they pull the classifier head against its direction."
        + (" Colours: ground truth from labels.parquet." if state.has_truth else "")
    )


def _metadata(state: RunState) -> None:
    st.subheader("Run")
    meta: dict[str, Any] = state.meta
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    dataset = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    facts = {
        "directory": state.path,
        "status": meta.get("status", "?"),
        "created": meta.get("created", "?"),
        "model": meta.get("model_name") or meta.get("model") or config.get("model") or "?",
        "dataset": f"{dataset.get('source', '?')} {dataset.get('path') or dataset.get('root') or ''}".strip(),
        "label steps": ", ".join(str(s.get("op")) for s in dataset.get("steps", []) or []) or "none",
        "ground truth": "clean labels in labels.parquet" if state.has_truth else "none",
        "mode": config.get("mode", "scratch"),
        "device": meta.get("device", "?"),
    }
    origin = label_origin(state)
    if origin is not None:
        facts["labels"] = origin
    # Markdown rather than a table element: the first page then needs no table renderer.
    st.markdown("\n".join(f"- **{name}**: `{value}`" for name, value in facts.items()))
    with st.expander("run.json"):
        st.json(meta, expanded=1)


def render(state: RunState, window: str) -> None:
    if state.empty:
        st.info(
            "No complete epoch yet: the GWA curve and the scores appear once training finishes its "
            "first epoch (this page refreshes on its own while the run is in progress)."
        )
        _metadata(state)
        return
    with st.spinner("Computing the per-sample scores…"):
        choices = analysis(state.path, state.generation, AnalysisOptions(window=window)).epoch_choices
    sel = choices.selection
    _headline(state, sel)
    _phase(state, window, choices)
    _curve(state, window, sel)
    _wrong_labels(state, window)
    _histogram(state, window, sel)
    _metadata(state)
