"""The Browse image grid: one page of thumbnails as a single clickable element.

One element instead of 48 images and 48 buttons: the page arrives in one message with the
thumbnails inline (small PNGs at their own size, scaled up in the browser with
``image-rendering: pixelated``, i.e. nearest neighbour), so a page flip costs one render
and no image requests. Clicking (or Enter on) a thumbnail reports its sample id back.
"""

from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import streamlit as st
from PIL import Image

__all__ = ["Cell", "png_data_url", "image_grid", "GRID_NAME"]

GRID_NAME = "gwa_diag_image_grid"
MAX_SIDE = 96  # larger images are downscaled on the server: no point sending more pixels

_CSS = """
.gwa-grid { display: grid; grid-template-columns: repeat(var(--gwa-columns, 6), minmax(0, 1fr)); gap: 10px; }
.gwa-cell { margin: 0; cursor: pointer; border-radius: 6px; padding: 3px; outline: none;
            border: 2px solid transparent; font-family: var(--st-font, sans-serif); }
.gwa-cell:hover, .gwa-cell:focus-visible { border-color: var(--st-primary-color, #ff4b4b); }
.gwa-cell.selected { border-color: var(--st-primary-color, #ff4b4b); background: rgba(255, 75, 75, 0.08); }
.gwa-cell img, .gwa-cell .gwa-missing { width: 100%; aspect-ratio: 1 / 1; object-fit: contain; display: block;
            image-rendering: pixelated; background: #f0f2f6; border-radius: 4px; }
.gwa-missing { display: flex; align-items: center; justify-content: center; font-size: 11px; color: #808495; }
.gwa-cap { font-size: 12px; line-height: 1.25; margin-top: 3px; color: var(--st-text-color, #31333f);
           white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.gwa-sub { font-size: 11px; color: #808495; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.gwa-flag { color: #d62728; font-weight: 600; }
"""

# Builds the cells with textContent (never innerHTML), so labels and captions cannot inject
# markup. Rebuilds only when the page's content changes.
_JS = """
export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  let root = parentElement.querySelector('.gwa-grid');
  if (!root) {
    root = document.createElement('div');
    root.className = 'gwa-grid';
    parentElement.appendChild(root);
  }
  root.style.setProperty('--gwa-columns', String(data.columns || 6));
  root.onclick = (e) => {
    const cell = e.target.closest('[data-id]');
    if (cell) setTriggerValue('open', cell.dataset.id);
  };
  root.onkeydown = (e) => {
    const cell = e.target.closest('[data-id]');
    if (cell && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      setTriggerValue('open', cell.dataset.id);
    }
  };
  if (root.dataset.signature === data.signature) return;
  root.dataset.signature = data.signature;
  root.replaceChildren(...data.cells.map((c) => {
    const fig = document.createElement('figure');
    fig.className = 'gwa-cell' + (c.selected ? ' selected' : '');
    fig.dataset.id = String(c.sample_id);
    fig.tabIndex = 0;
    fig.title = c.title;
    let img;
    if (c.src) {
      img = document.createElement('img');
      img.src = c.src;
      img.alt = 'sample ' + c.sample_id;
    } else {
      img = document.createElement('div');
      img.className = 'gwa-missing';
      img.textContent = 'no image';
    }
    const cap = document.createElement('div');
    cap.className = 'gwa-cap';
    if (c.flagged) {
      const flag = document.createElement('span');
      flag.className = 'gwa-flag';
      flag.textContent = '⚑ ';
      cap.appendChild(flag);
    }
    cap.appendChild(document.createTextNode((c.decided ? '✔ ' : '') + c.caption));
    const sub = document.createElement('div');
    sub.className = 'gwa-sub';
    sub.textContent = c.subcaption;
    fig.append(img, cap, sub);
    return fig;
  }));
}
"""


@dataclass(frozen=True)
class Cell:
    """One thumbnail of the grid."""

    sample_id: int
    src: str | None  # data: URL of the PNG, None when the image is unavailable
    caption: str
    subcaption: str
    title: str
    flagged: bool = False
    decided: bool = False
    selected: bool = False


def png_data_url(img: np.ndarray, max_side: int = MAX_SIDE) -> str:
    """A ``data:image/png`` URL of ``img`` (uint8 HWC), downscaled to ``max_side`` when larger.

    Small images are sent at their own size: the browser scales them up pixelated.
    """
    pil = Image.fromarray(img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2))
    if max(pil.size) > max_side:
        pil.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    # Fast compression: these PNGs live for one page view.
    pil.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_component: Any = None


def _grid_component() -> Any:
    """Register the component once per process (re-registering on every run is wasteful)."""
    global _component
    if _component is None:
        _component = st.components.v2.component(GRID_NAME, css=_CSS, js=_JS)
    return _component


def image_grid(cells: Sequence[Cell], *, key: str, on_open: Callable[[int], None], columns: int = 6) -> None:
    """Draw the grid; ``on_open(sample_id)`` runs (as a callback) when a thumbnail is clicked."""

    def opened() -> None:
        value = (st.session_state.get(key) or {}).get("open")
        if value is not None:
            on_open(int(value))

    # Ids travel as strings: a JavaScript number is a float and rounds ids above 2**53.
    payload = [{**asdict(c), "sample_id": str(c.sample_id)} for c in cells]
    # Everything shown except the pixels (an id always has the same image).
    signature = "|".join(
        f"{c.sample_id}:{c.caption}:{c.subcaption}:{c.flagged:d}{c.decided:d}{c.selected:d}{c.src is not None:d}"
        for c in cells
    )
    _grid_component()(data={"cells": payload, "columns": int(columns), "signature": signature}, key=key,
                      on_open_change=opened)
