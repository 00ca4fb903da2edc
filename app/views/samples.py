"""Recorded per-sample rows read straight from the run store: every sample at one epoch,
one sample over all epochs, and the most aligned samples of each label at one epoch.

Cached per (run path, generation, ...): see :mod:`.state`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from gwa_diag.store import open_run

__all__ = ["compute_epoch_alignment", "compute_trajectory", "top_aligned"]


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


@st.cache_data(max_entries=64, show_spinner=False)
def top_aligned(path: str, generation: str, epoch: int, k: int) -> pd.DataFrame:
    """The ``k`` most aligned samples of each given label at ``epoch`` (highest first):
    columns label, sample_id, alignment."""
    rows = compute_epoch_alignment(path, generation, epoch).reset_index()
    rows = rows[np.isfinite(rows["alignment"].to_numpy(dtype=np.float64))]
    rows = rows.sort_values(["label", "alignment", "sample_id"], ascending=[True, False, True], kind="stable")
    return rows.groupby("label", sort=True).head(int(k)).reset_index(drop=True)
