"""The app's charts.

Overview (the first page): PNGs drawn with matplotlib on the server, cheap for the browser.
Elsewhere: Vega-Lite specs (plain dicts with inline data, no Altair objects) for hover and
zoom; each function maps a small frame to a spec that tests can inspect.
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

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


# The first page draws its charts as PNGs on the server: a chart library in the browser
# costs seconds on a slow machine before the first page is complete.
_DPI = 110


def _figure(width: float, height: float) -> Any:
    # Here, not at the top: matplotlib takes about 0.5 s to import and only the Overview's
    # PNGs need it; every page module imports this one at app start.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def phase_png(
    curve: pd.DataFrame, *, window: Sequence[int] = (), onset: int | None = None, plateau: int | None = None
) -> bytes:
    """The training phase (``TrainingPhase.curve``): per epoch the fit of the given labels and
    the confidently contradicted share; the onset, memorising and memorised fits as dashed
    lines when the curve has them; the plateau (dotted)
    and the onset of memorisation (solid) marked; the averaged ``window`` shaded."""
    fig, ax = _figure(10, 3.2)
    if len(window):
        span = f"epochs {window[0]}-{window[-1]}" if len(window) > 1 else f"epoch {window[0]}"
        ax.axvspan(window[0] - 0.5, window[-1] + 0.5, color="#2ca02c", alpha=0.12, zorder=0,
                   label=f"scores averaged ({span})")
    x = curve["epoch"].to_numpy()
    ax.plot(x, _numeric(curve, "fit"), marker="o", markersize=3, color=_BLUE, label="fit of the given labels")
    ax.plot(x, _numeric(curve, "contradicted"), marker="o", markersize=3, color=_RED, label="confidently contradicted")
    for col, colour, text in (("onset_fit", "#ff7f0e", "onset fit 1 - noise"),
                              ("memorising_fit", "#e377c2", "window starts moving"),
                              ("memorised_fit", "#9467bd", "memorised fit")):
        level = _numeric(curve, col)
        if np.isfinite(level).any():
            value = float(level[np.isfinite(level)][0])
            ax.axhline(value, color=colour, linestyle="--", linewidth=1, label=f"{text} = {value:.3f}")
    if plateau is not None:
        ax.axvline(plateau, color=_GREY, linestyle=":", linewidth=1.5, label=f"plateau epoch {plateau}")
    if onset is not None:
        ax.axvline(onset, color="black", linewidth=1.5, label=f"memorising from epoch {onset}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of the training samples")
    ax.legend(loc="best", fontsize=8, frameon=False)
    return _png(fig)


def gwa_curve_png(epochs: pd.DataFrame, selected: int | None, *, fallback: bool = False) -> bytes:
    """GWA per epoch: gaps (grey bands) at undefined epochs, the selected epoch as a red
    dashed line."""
    fig, ax = _figure(10, 3.2)
    for i, part in enumerate(defined_segments(epochs)):
        ax.plot(part["epoch"], part["gwa"], marker="o", markersize=3, color=_BLUE, label="GWA" if i == 0 else None)
    gwa = _numeric(epochs, "gwa")
    valid = epochs["valid"].fillna(False).to_numpy(dtype=bool) if "valid" in epochs else np.isfinite(gwa)
    undefined = epochs["epoch"].to_numpy()[~(np.isfinite(gwa) & valid)]
    for j, e in enumerate(undefined):
        ax.axvspan(e - 0.5, e + 0.5, color="#dddddd", zorder=0, label="GWA undefined" if j == 0 else None)
    if selected is not None:
        label = f"last epoch {selected} (GWA selected none)" if fallback else f"GWA-selected epoch {selected}"
        ax.axvline(selected, color=_RED, linestyle="--", linewidth=1.5, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("GWA = mean / (kurtosis + 1.2)")
    ax.legend(loc="best", fontsize=8, frameon=False)
    return _png(fig)


def accuracy_png(epochs: pd.DataFrame) -> bytes | None:
    """Training (and evaluation, when recorded) accuracy per epoch; None without either."""
    series = {"train_acc": "train accuracy", "eval_acc": "eval accuracy"}
    cols = [c for c in series if c in epochs and np.isfinite(_numeric(epochs, c)).any()]
    if not cols:
        return None
    fig, ax = _figure(10, 2.4)
    for col, colour in zip(cols, ("#9ecae1", _BLUE)):
        ax.plot(epochs["epoch"], _numeric(epochs, col), marker="o", markersize=3, color=colour, label=series[col])
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


def histogram_png(values: np.ndarray, groups: np.ndarray | None = None, *, bins: int = 50) -> bytes:
    """Histogram of alignments in [-1, 1]; with ``groups`` ("clean" / "mislabeled") one
    overlaid histogram per group."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    fig, ax = _figure(10, 2.8)
    if groups is None:
        ax.hist(values[finite], bins=edges, color=_BLUE, alpha=0.8, label="all samples")
    else:
        kinds = np.asarray(groups)[finite]
        for name, colour in (("clean", _BLUE), ("mislabeled", _RED)):
            chosen = values[finite][kinds == name]
            if chosen.size:
                ax.hist(chosen, bins=edges, color=colour, alpha=0.55, label=f"{name} ({chosen.size:,})")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("alignment (< 0: the sample pulls the head against its direction)")
    ax.set_ylabel("samples")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return _png(fig)


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
