"""Simple to complex: the most aligned images of each class at chosen epochs.

Early in training the most aligned samples are the visually simple ones; later they become
complex but typical (Hölzl et al. 2025). One row per class, one column per epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from .images import thumbnails
from .jobs import open_dataset
from .samples import top_aligned
from .state import RunState

__all__ = ["render", "default_epochs", "strip"]

STRIP_SIZE = 64
GAP = 3


def default_epochs(completed: tuple[int, ...], count: int = 4) -> list[int]:
    """``count`` epochs spread evenly from the first to the last complete epoch."""
    if len(completed) <= count:
        return list(completed)
    picks = np.linspace(0, len(completed) - 1, count).round().astype(int)
    return [completed[i] for i in sorted(set(picks.tolist()))]


def strip(images: list[np.ndarray], size: int = STRIP_SIZE, gap: int = GAP) -> np.ndarray:
    """Images side by side in one array (one element to send instead of k)."""
    if not images:
        return np.full((size, size, 3), 255, dtype=np.uint8)
    tiles = []
    for img in images:
        tile = np.full((size, size, 3), 255, dtype=np.uint8)
        h, w = img.shape[:2]
        tile[: min(h, size), : min(w, size)] = img[:size, :size]
        tiles.append(tile)
        tiles.append(np.full((size, gap, 3), 255, dtype=np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def _cell(state: RunState, dataset: Any, rows: pd.DataFrame) -> None:
    ids = rows["sample_id"].to_numpy()
    caption = " ".join(f"#{i}" for i in ids)
    if dataset is None:
        st.caption(", ".join(f"#{i} ({a:+.2f})" for i, a in zip(ids, rows["alignment"])))
        return
    try:
        st.image(strip(thumbnails(dataset, ids, STRIP_SIZE)), caption=caption)
    except ValueError as exc:
        st.caption(f"no images: {exc}")


def render(state: RunState, window: str) -> None:
    if state.empty:
        st.info("No complete epoch yet: this view needs at least one recorded epoch.")
        return
    st.caption(
        "The most aligned training images of each given label (highest alignment first) at the chosen epochs. "
        "Early on they are the simple, prototypical ones; later the model aligns with more complex but typical images."
    )
    c1, c2 = st.columns([4, 1])
    epochs = c1.multiselect("Epochs", list(state.completed), default=default_epochs(state.completed),
                            key="simple_epochs")
    k = c2.slider("Images per class", 1, 12, 6, key="simple_k")
    if not epochs:
        st.info("Choose at least one epoch.")
        return
    epochs = sorted(int(e) for e in epochs)
    with st.spinner("Loading the images…"):
        dataset, why = open_dataset(state)
    if why:
        st.warning(why, icon="🖼️")
    tops = {e: top_aligned(state.path, state.generation, e, int(k)) for e in epochs}
    labels = sorted({int(v) for t in tops.values() for v in t["label"].unique()})
    widths = [1.2] + [4] * len(epochs)
    header = st.columns(widths)
    header[0].markdown("**class**")
    for col, e in zip(header[1:], epochs):
        col.markdown(f"**epoch {e}**")
    for label in labels:
        cols = st.columns(widths, vertical_alignment="center")
        cols[0].markdown(state.class_name(label))
        for col, e in zip(cols[1:], epochs):
            part = tops[e][tops[e]["label"] == label]
            with col:
                _cell(state, dataset, part)
