"""Vega-Lite specs (plain dicts with inline data) for the app's charts.

Plain specs instead of Altair objects: nothing to import on the first page, and each
function is a pure mapping from a small frame to a spec that tests can inspect.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

__all__ = ["gwa_curve", "accuracy_curve", "histogram", "trajectory", "roc_pr"]

_RED = "#d62728"
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


def gwa_curve(epochs: pd.DataFrame, selected: int | None, *, fallback: bool = False) -> dict[str, Any]:
    """GWA per epoch. Undefined epochs are gaps in the line (never a made-up value), marked
    by grey bars whose tooltip gives the reason; the selected epoch is a red dashed rule."""
    gwa = _numeric(epochs, "gwa")
    valid = epochs["valid"].fillna(False).to_numpy(dtype=bool) if "valid" in epochs else np.isfinite(gwa)
    defined = np.isfinite(gwa) & valid
    # One line per run of defined epochs: Vega-Lite would otherwise join across the gaps.
    segment = np.cumsum(~defined)
    frame = pd.DataFrame({
        "epoch": epochs["epoch"].to_numpy(dtype=np.int64),
        "gwa": np.where(defined, gwa, np.nan),
        "segment": segment,
        "mean alignment": _numeric(epochs, "mean"),
        "kurtosis": _numeric(epochs, "kurtosis"),
        "reason": epochs["reason"].astype("string").fillna("") if "reason" in epochs else "",
    })
    line = {
        "data": {"values": _records(frame[defined])},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "epoch", "type": "quantitative", "title": "epoch"},
            "y": {"field": "gwa", "type": "quantitative", "title": "GWA = mean / (kurtosis + 1.2)"},
            "detail": {"field": "segment", "type": "nominal"},
            "tooltip": [{"field": "epoch"}, {"field": "gwa", "format": ".4f"},
                        {"field": "mean alignment", "format": ".4f"}, {"field": "kurtosis", "format": ".3f"}],
        },
    }
    layers: list[dict[str, Any]] = [line]
    if (~defined).any():
        layers.append({
            "data": {"values": _records(frame[~defined])},
            "mark": {"type": "rule", "color": _GREY, "strokeWidth": 8, "opacity": 0.35},
            "encoding": {"x": {"field": "epoch", "type": "quantitative"},
                         "tooltip": [{"field": "epoch"}, {"field": "reason", "title": "GWA undefined"}]},
        })
    if selected is not None:
        label = f"last epoch {selected} (GWA selected none)" if fallback else f"selected epoch {selected}"
        layers.append({
            "data": {"values": [{"epoch": int(selected), "label": label}]},
            "mark": {"type": "rule", "color": _RED, "strokeDash": [6, 4], "strokeWidth": 2},
            "encoding": {"x": {"field": "epoch", "type": "quantitative"}, "tooltip": [{"field": "label"}]},
        })
        layers.append({
            "data": {"values": [{"epoch": int(selected), "label": label}]},
            "mark": {"type": "text", "color": _RED, "align": "left", "dx": 4, "dy": -4, "baseline": "top", "y": 0},
            "encoding": {"x": {"field": "epoch", "type": "quantitative"}, "text": {"field": "label"}},
        })
    return {"layer": layers, "height": 280}


def accuracy_curve(epochs: pd.DataFrame) -> dict[str, Any] | None:
    """Training (and evaluation, when recorded) accuracy per epoch; None without either."""
    cols = [c for c in ("train_acc", "eval_acc") if c in epochs and np.isfinite(_numeric(epochs, c)).any()]
    if not cols:
        return None
    long = epochs[["epoch", *cols]].melt("epoch", var_name="series", value_name="accuracy")
    long["series"] = long["series"].map({"train_acc": "train accuracy", "eval_acc": "eval accuracy"})
    long = long[pd.to_numeric(long["accuracy"], errors="coerce").notna()]
    return {
        "data": {"values": _records(long)},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "epoch", "type": "quantitative"},
            "y": {"field": "accuracy", "type": "quantitative", "scale": {"domain": [0, 1]}},
            "color": {"field": "series", "type": "nominal", "title": None},
            "tooltip": [{"field": "epoch"}, {"field": "series"}, {"field": "accuracy", "format": ".4f"}],
        },
        "height": 200,
    }


def histogram(values: np.ndarray, groups: np.ndarray | None = None, *, bins: int = 50) -> dict[str, Any]:
    """Histogram of alignments in [-1, 1], binned here so the browser gets 50 bars, not
    50,000 points; ``groups`` (e.g. clean / mislabeled) overlays one histogram per group."""
    edges = np.linspace(-1.0, 1.0, bins + 1)
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    group_values = np.asarray(groups)[finite] if groups is not None else np.full(finite.sum(), "all samples")
    values = values[finite]
    rows = []
    for name in pd.unique(group_values):
        counts, _ = np.histogram(values[group_values == name], bins=edges)
        rows.extend({"start": float(a), "end": float(b), "count": int(c), "group": str(name)}
                    for a, b, c in zip(edges[:-1], edges[1:], counts))
    return {
        "layer": [
            {
                "data": {"values": rows},
                "mark": {"type": "bar", "opacity": 0.6, "binSpacing": 0},
                "encoding": {
                    "x": {"field": "start", "type": "quantitative", "title": "alignment", "scale": {"domain": [-1, 1]}},
                    "x2": {"field": "end"},
                    "y": {"field": "count", "type": "quantitative", "stack": None, "title": "samples"},
                    "color": {"field": "group", "type": "nominal", "title": None,
                              "scale": {"domain": ["clean", "mislabeled"], "range": ["#1f77b4", _RED]}
                              if groups is not None else {"range": ["#1f77b4"]}},
                    "tooltip": [{"field": "group"}, {"field": "start", "format": ".2f"}, {"field": "count"}],
                },
            },
            {"data": {"values": [{"x": 0}]}, "mark": {"type": "rule", "color": "black"},
             "encoding": {"x": {"field": "x", "type": "quantitative"}}},
        ],
        "height": 240,
    }


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
