"""The figures the report and the app both show, drawn once: the training phase, the GWA
curve, training accuracy and the alignment histogram. The report writes them to PNG files,
the app's Overview shows the same PNGs (``app/views/charts.py``), so a run looks the same in
both. Interactive charts (trajectories, ROC/PR in the browser) stay in the app.

matplotlib is imported inside the functions: it takes about half a second to load, and the
app imports this module at start.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["accuracy_figure", "gwa_figure", "hist_bins", "histogram_figure", "phase_figure", "png_bytes"]

_RED, _BLUE, _GREY, _GREEN = "#d62728", "#1f77b4", "#9e9e9e", "#2ca02c"
_DPI = 110


def _figure(width: float, height: float, panels: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    for ax in axes:
        ax.grid(True, color="#e6e6e6", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _numeric(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)


def phase_figure(curve: pd.DataFrame, *, window: Sequence[int] = (), onset: int | None = None,
                 plateau: int | None = None, memorised: bool = False, weight: float | None = None) -> Any:
    """The training phase (``TrainingPhase.curve``): per epoch the fit of the given labels and
    the confidently contradicted share; the onset, memorising and memorised fits as dashed
    lines when the curve has them; the plateau (dotted) and the onset of memorisation (solid,
    when the run began memorising) marked; the averaged ``window`` shaded. ``memorised`` and
    ``weight`` (the phase's memorisation weight) word the title."""
    fig, (ax,) = _figure(10, 3.2)
    if len(window):
        span = f"epochs {window[0]}-{window[-1]}" if len(window) > 1 else f"epoch {window[0]}"
        ax.axvspan(window[0] - 0.5, window[-1] + 0.5, color=_GREEN, alpha=0.12, zorder=0,
                   label=f"scores averaged ({span})")
    x = curve["epoch"].to_numpy()
    ax.plot(x, _numeric(curve, "fit"), marker="o", markersize=3, color=_BLUE, label="fit of the given labels")
    ax.plot(x, _numeric(curve, "contradicted"), marker="o", markersize=3, color=_RED, label="confidently contradicted")
    thresholds = False
    for col, colour, text in (("onset_fit", "#ff7f0e", "onset fit 1 - noise"),
                              ("memorising_fit", "#e377c2", "window starts moving"),
                              ("memorised_fit", "#9467bd", "memorised fit")):
        level = _numeric(curve, col)
        if np.isfinite(level).any():
            thresholds = True
            value = float(level[np.isfinite(level)][0])
            ax.axhline(value, color=colour, linestyle="--", linewidth=1, label=f"{text} = {value:.3f}")
    if not thresholds:
        ax.text(0.01, 0.97, "no plateau: no fit thresholds", transform=ax.transAxes, fontsize=8, va="top")
    if plateau is not None:
        ax.axvline(plateau, color=_GREY, linestyle=":", linewidth=1.5, label=f"plateau epoch {plateau}")
    what = "memorised" if memorised else "memorising"
    if onset is not None:
        ax.axvline(onset, color="black", linewidth=1.5, label=f"{what} from epoch {onset}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of the training samples")
    status = ("no memorisation found" if onset is None else f"memorised from epoch {onset}" if memorised
              else f"began memorising at epoch {onset}" + (f" (weight {weight:.2f})" if weight is not None else ""))
    ax.set_title(f"Training phase: {status}", fontsize=10)
    ax.legend(loc="best", fontsize=8, frameon=False)
    return fig


def gwa_figure(epochs: pd.DataFrame, selected: int | None, *, fallback: bool = False,
               labelwave: int | None = None) -> Any:
    """GWA per epoch: undefined epochs as grey bands (a gap in the line, never a made-up
    value), the selected epoch as a red dashed line, LabelWave's epoch when given, and the
    evaluation accuracy on a second axis when the run recorded one."""
    fig, (ax,) = _figure(10, 3.2)
    x = epochs["epoch"].to_numpy()
    gwa = _numeric(epochs, "gwa")
    valid = epochs["valid"].fillna(False).to_numpy(dtype=bool) if "valid" in epochs else np.isfinite(gwa)
    defined = np.isfinite(gwa) & valid
    # NaN breaks the line at undefined epochs.
    ax.plot(x, np.where(defined, gwa, np.nan), marker="o", markersize=3, color=_BLUE, label="GWA")
    for j, e in enumerate(x[~defined]):
        ax.axvspan(e - 0.5, e + 0.5, color="#dddddd", zorder=0, label="GWA undefined" if j == 0 else None)
    if selected is not None:
        label = f"last epoch {selected} (GWA selected none)" if fallback else f"GWA-selected epoch {selected}"
        ax.axvline(selected, color=_RED, linestyle="--", linewidth=1.5, label=label)
    if labelwave is not None:
        ax.axvline(labelwave, color="#9467bd", linestyle=":", linewidth=1.5, label=f"LabelWave epoch {labelwave}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("GWA = mean / (kurtosis + 1.2)")
    handles, labels = ax.get_legend_handles_labels()
    accuracy = _numeric(epochs, "eval_acc")
    if np.isfinite(accuracy).any():
        twin = ax.twinx()
        twin.plot(x, accuracy, color=_GREEN, alpha=0.8, label="eval accuracy")
        twin.set_ylabel("eval accuracy")
        more, names = twin.get_legend_handles_labels()
        handles, labels = handles + more, labels + names
    ax.legend(handles, labels, loc="best", fontsize=8, frameon=False)
    return fig


def accuracy_figure(epochs: pd.DataFrame) -> Any | None:
    """Training (and evaluation, when recorded) accuracy per epoch; None without either."""
    series = {"train_acc": "train accuracy", "eval_acc": "eval accuracy"}
    cols = [c for c in series if c in epochs and np.isfinite(_numeric(epochs, c)).any()]
    if not cols:
        return None
    fig, (ax,) = _figure(10, 2.4)
    for col, colour in zip(cols, ("#9ecae1", _BLUE)):
        ax.plot(epochs["epoch"], _numeric(epochs, col), marker="o", markersize=3, color=colour, label=series[col])
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def hist_bins(values: np.ndarray, count: int = 50) -> np.ndarray:
    """Bin edges over the data's range, with 0 in view: alignments often lie within +-0.2,
    which a fixed [-1, 1] axis squeezes into a few bars. The 0.1% tails on each side are left
    out of the range (clipped into the end bins they would be misstated)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.linspace(-1.0, 1.0, count + 1)
    lo, hi = np.quantile(finite, [0.001, 0.999])
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    pad = 0.03 * (hi - lo) if hi > lo else 0.05
    return np.linspace(max(lo - pad, -1.0), min(hi + pad, 1.0), count + 1)


def histogram_figure(panels: Mapping[str, tuple[np.ndarray, np.ndarray | None]]) -> Any:
    """Alignment histograms, one panel per entry (title -> (alignments, mislabeled mask or
    None)), on shared bins over the data's range (:func:`hist_bins`): with a mask, the clean
    and mislabeled samples overlaid as densities (their counts differ), else counts."""
    values = [np.asarray(v, dtype=np.float64) for v, _ in panels.values()]
    bins = hist_bins(np.concatenate(values) if values else np.zeros(0))
    fig, axes = _figure(max(3.2 * len(panels), 5.0), 3.2, panels=max(len(panels), 1))
    for ax, (title, (a, mask)) in zip(axes, panels.items()):
        a = np.asarray(a, dtype=np.float64)
        finite = np.isfinite(a)
        if mask is None:
            ax.hist(a[finite], bins=bins, color=_BLUE, alpha=0.8, label=f"all samples ({int(finite.sum()):,})")
        else:
            noisy = np.asarray(mask, dtype=bool)
            for name, chosen, colour in (("clean", finite & ~noisy, _BLUE), ("mislabeled", finite & noisy, _RED)):
                if chosen.any():
                    ax.hist(a[chosen], bins=bins, color=colour, alpha=0.55, density=True,
                            label=f"{name} ({int(chosen.sum()):,})")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("alignment (< 0: pulls the head against its direction)", fontsize=8)
        ax.legend(loc="upper left", fontsize=7, frameon=False)
    return fig
