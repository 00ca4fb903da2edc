"""The app's charts.

Overview (the first page): the report's figures (:mod:`gwa_diag.analysis.plots`) as PNGs
drawn on the server, cheap for the browser.
Elsewhere: Vega-Lite specs (plain dicts with inline data, no Altair objects) for hover and
zoom; each function maps a small frame to a spec that tests can inspect.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gwa_diag.analysis import plots

__all__ = ["defined_segments", "phase_png", "gwa_curve_png", "accuracy_png", "histogram_png", "trajectory", "roc_pr"]

_RED = "#d62728"
_BLUE = "#1f77b4"
_GREY = "#9e9e9e"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe rows: NaN and pandas NA become null (Vega-Lite's missing value)."""
    out = []
    for row in frame.to_dict("records"):
        out.append({k: (None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else
                        (v.item() if isinstance(v, np.generic) else v)) for k, v in row.items()})
    return out


def _numeric(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)


def defined_segments(epochs: pd.DataFrame) -> list[pd.DataFrame]:
    """Runs of consecutive epochs with a defined GWA (columns epoch, gwa), in order.

    Drawn as separate lines, so an undefined epoch is a gap, never a made-up value.
    """
    gwa = _numeric(epochs, "gwa")
    valid = epochs["valid"].fillna(False).to_numpy(dtype=bool) if "valid" in epochs else np.isfinite(gwa)
    defined = np.isfinite(gwa) & valid
    segment = np.cumsum(~defined)
    frame = pd.DataFrame({"epoch": epochs["epoch"].to_numpy(dtype=np.int64), "gwa": gwa, "segment": segment})
    return [part[["epoch", "gwa"]].reset_index(drop=True)
            for _, part in frame[defined].groupby("segment", sort=True)]


# The first page shows the report's own figures (gwa_diag.analysis.plots) as PNGs drawn on
# the server: a chart library in the browser costs seconds on a slow machine before the first
# page is complete, and the same data then looks the same in the report and the app.


def phase_png(
    curve: pd.DataFrame, *, window: Sequence[int] = (), onset: int | None = None, plateau: int | None = None,
    memorised: bool = False, weight: float | None = None,
) -> bytes:
    """The training phase (:func:`gwa_diag.analysis.plots.phase_figure`) as PNG bytes."""
    return plots.png_bytes(plots.phase_figure(curve, window=window, onset=onset, plateau=plateau,
                                              memorised=memorised, weight=weight))


def gwa_curve_png(epochs: pd.DataFrame, selected: int | None, *, fallback: bool = False,
                  labelwave: int | None = None) -> bytes:
    """The GWA curve (:func:`gwa_diag.analysis.plots.gwa_figure`) as PNG bytes."""
    return plots.png_bytes(plots.gwa_figure(epochs, selected, fallback=fallback, labelwave=labelwave))


def accuracy_png(epochs: pd.DataFrame) -> bytes | None:
    """Training (and evaluation) accuracy per epoch as PNG bytes; None without either."""
    fig = plots.accuracy_figure(epochs)
    return None if fig is None else plots.png_bytes(fig)


def histogram_png(values: np.ndarray, groups: np.ndarray | None = None, *, title: str = "alignment") -> bytes:
    """The alignment histogram (:func:`gwa_diag.analysis.plots.histogram_figure`, one panel)
    as PNG bytes; ``groups`` ("clean" / "mislabeled") overlays the two."""
    mask = None if groups is None else np.asarray(groups) == "mislabeled"
    return plots.png_bytes(plots.histogram_figure({title: (np.asarray(values, dtype=np.float64), mask)}))


def trajectory(traj: pd.DataFrame, *, marks: Sequence[tuple[int, str]] = ()) -> list[dict[str, Any]]:
    """One sample's alignment, margin and p(label) over epochs: three small charts (one per
    signal, each on its own scale), with dashed vertical rules at ``marks`` ((epoch, label)
    pairs, at most two: red for the first, grey for the second)."""
    titles = {"alignment": "alignment (< 0: pulls against the head)", "margin": "margin (logit[label] - max other)",
              "p_label": "p(given label)"}
    rules = [{"epoch": int(e), "what": w} for e, w in marks]
    specs = []
    for col, title in titles.items():
        layer: list[dict[str, Any]] = [{
            "data": {"values": _records(traj[["epoch", col]])},
            "mark": {"type": "line", "point": True},
            "encoding": {"x": {"field": "epoch", "type": "quantitative", "title": None},
                         "y": {"field": col, "type": "quantitative", "title": None},
                         "tooltip": [{"field": "epoch"}, {"field": col, "format": ".4f"}]},
        }]
        if col in ("alignment", "margin"):
            layer.append({"data": {"values": [{"y": 0}]}, "mark": {"type": "rule", "color": _GREY},
                          "encoding": {"y": {"field": "y", "type": "quantitative"}}})
        if rules:
            layer.append({"data": {"values": rules}, "mark": {"type": "rule", "strokeDash": [4, 3]},
                          "encoding": {"x": {"field": "epoch", "type": "quantitative"},
                                       # Fixed colours, no legend (it would squeeze these small
                                       # charts); the caption under them names the rules.
                                       "color": {"field": "what", "type": "nominal", "legend": None,
                                                 "scale": {"domain": [w for _, w in marks],
                                                           "range": [_RED, "#7f7f7f"][: len(marks)]}},
                                       "tooltip": [{"field": "what"}, {"field": "epoch"}]}})
        specs.append({"title": {"text": title, "fontSize": 11, "anchor": "start"}, "layer": layer, "height": 90})
    return specs


def roc_pr(points: pd.DataFrame, curve: str, *, baseline: float | None = None) -> dict[str, Any]:
    """ROC (``curve="roc"``) or precision-recall (``"pr"``) curves, one line per scorer."""
    part = points[points["curve"] == curve]
    # Draw each curve in threshold order (a PR curve can step back in x at equal recall).
    part = part.assign(i=part.groupby("scorer").cumcount())
    x_title, y_title = ("false positive rate", "true positive rate") if curve == "roc" else ("recall", "precision")
    layers: list[dict[str, Any]] = [{
        "data": {"values": _records(part[["scorer", "x", "y", "i"]])},
        "mark": {"type": "line", "strokeWidth": 1.5},
        "encoding": {
            "x": {"field": "x", "type": "quantitative", "title": x_title, "scale": {"domain": [0, 1]}},
            "y": {"field": "y", "type": "quantitative", "title": y_title, "scale": {"domain": [0, 1]}},
            "color": {"field": "scorer", "type": "nominal"},
            "order": {"field": "i", "type": "quantitative"},
            "tooltip": [{"field": "scorer"}, {"field": "x", "format": ".3f"}, {"field": "y", "format": ".3f"}],
        },
    }]
    if curve == "roc":
        layers.append({"data": {"values": [{"x": 0, "y": 0}, {"x": 1, "y": 1}]},
                       "mark": {"type": "line", "color": _GREY, "strokeDash": [2, 2]},
                       "encoding": {"x": {"field": "x", "type": "quantitative"},
                                    "y": {"field": "y", "type": "quantitative"}}})
    elif baseline is not None:
        layers.append({"data": {"values": [{"y": float(baseline)}]},
                       "mark": {"type": "rule", "color": _GREY, "strokeDash": [2, 2]},
                       "encoding": {"y": {"field": "y", "type": "quantitative"}}})
    return {"layer": layers, "height": 320}
