"""Tiny synthetic run directories with known answers, and a slow pandas reference of the
per-sample summaries, for the analysis tests (imported as a plain module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from gwa_diag.alignment import gwa_from_scores
from gwa_diag.store import SAMPLE_SCHEMA, RunWriter

ROW_COLUMNS = ["sample_id", "step", "label", "alignment", "margin", "loss", "p_label", "pred", "p_pred"]


def write_run(
    path: Path,
    rows: pd.DataFrame,
    *,
    num_classes: int,
    clean_labels: dict[int, int] | None = None,
    labels: dict[int, int] | None = None,
    gwa: dict[int, float | None] | None = None,
    complete: list[int] | None = None,
    extra_epoch: dict[int, dict[str, Any]] | None = None,
    meta: dict[str, Any] | None = None,
    ranks: int = 1,
) -> Path:
    """Write ``rows`` (ROW_COLUMNS + epoch) in the store layout. ``complete`` lists the epochs
    that get an epochs.parquet row (default: all); ``gwa`` overrides the computed GWA;
    ``ranks`` > 1 splits every epoch into that many part files."""
    writer = RunWriter(path, meta={"num_classes": num_classes, **(meta or {})})
    epochs = sorted(int(e) for e in rows["epoch"].unique())
    for epoch in epochs:
        part = rows[rows["epoch"] == epoch].reset_index(drop=True)
        for r in range(ranks):
            chunk = part.iloc[r::ranks]
            table = pa.Table.from_pandas(chunk[ROW_COLUMNS], preserve_index=False).cast(SAMPLE_SCHEMA)
            # Rank r > 0 writes only its own part, as each DDP worker does.
            target = writer if r == 0 else RunWriter(path, rank=r, world_size=ranks)
            target.write_samples(epoch, table)
    for epoch in complete if complete is not None else epochs:
        part = rows[rows["epoch"] == epoch]
        result = gwa_from_scores(torch.tensor(part["alignment"].to_numpy(np.float64)))
        row = {"epoch": int(epoch), **result.as_dict(), "train_loss": float(part["loss"].mean()),
               "train_acc": float((part["pred"] == part["label"]).mean()), "end_step": int(part["step"].max()) + 1,
               "seconds": 0.1}
        if gwa is not None and epoch in gwa:
            row["gwa"] = gwa[epoch]
            row["valid"] = gwa[epoch] is not None
            row["reason"] = "ok" if gwa[epoch] is not None else "set undefined by the test"
        row.update((extra_epoch or {}).get(epoch, {}))
        writer.write_epoch(row)
    if labels is not None or clean_labels is not None:
        given = labels if labels is not None else rows.groupby("sample_id")["label"].first().to_dict()
        ids = sorted(given)
        clean = [clean_labels[i] for i in ids] if clean_labels is not None else None
        writer.write_labels(ids, [given[i] for i in ids], clean)
    return path


def trajectory_rows(spec: dict[int, list[dict[str, Any]]], *, label: dict[int, int]) -> pd.DataFrame:
    """Rows from {sample_id: [per-epoch dicts with epoch + any of alignment, margin, loss,
    p_label, pred, p_pred, step]}; unspecified values get harmless defaults."""
    out = []
    for sid, entries in spec.items():
        for e in entries:
            p_label = e.get("p_label", 0.6)
            pred = e.get("pred", label[sid])
            out.append({
                "epoch": e["epoch"], "sample_id": sid, "step": e.get("step", 10 * e["epoch"] + sid),
                "label": label[sid], "alignment": e.get("alignment", 0.1), "margin": e.get("margin", 0.5),
                "loss": e.get("loss", float(-np.log(p_label))), "p_label": p_label, "pred": pred,
                "p_pred": e.get("p_pred", p_label if pred == label[sid] else 0.7),
            })
    return pd.DataFrame(out)


def noisy_rows(
    *,
    n: int = 300,
    epochs: int = 10,
    num_classes: int = 4,
    noise: float = 0.2,
    seed: int = 0,
    id_offset: int = 0,
    id_stride: int = 1,
    repeats: float = 0.0,
    gaps: float = 0.0,
    nans: float = 0.0,
) -> tuple[pd.DataFrame, dict[int, int], dict[int, int]]:
    """A synthetic training record: noisy samples (given label != clean label) have lower
    alignment, margin and p(label) than clean ones. ``repeats``: fraction of rows presented a
    second time in the same epoch; ``gaps``: fraction of (sample, epoch) rows dropped;
    ``nans``: fraction of rows with non-finite values (as for non-finite logits).
    Returns rows, given labels and clean labels."""
    rng = np.random.default_rng(seed)
    ids = id_offset + id_stride * np.arange(n, dtype=np.int64)
    clean = rng.integers(0, num_classes, n)
    noisy = rng.random(n) < noise
    given = np.where(noisy, (clean + rng.integers(1, num_classes, n)) % num_classes, clean)
    frames = []
    step = 0
    for epoch in range(epochs):
        t = (epoch + 1) / epochs
        mu = np.where(noisy, -0.25 + 0.3 * t, 0.1 + 0.4 * t)
        a = np.clip(mu + 0.2 * rng.standard_normal(n), -1, 1)
        p_label = 1 / (1 + np.exp(-(3 * a + 0.5 * rng.standard_normal(n))))
        wrong = p_label < 0.5
        pred = np.where(wrong, np.where(noisy, clean, rng.integers(0, num_classes, n)), given)
        p_pred = np.where(pred == given, p_label, np.clip(0.9 * (1 - p_label), 0, 1))
        frame = pd.DataFrame({
            "epoch": epoch, "sample_id": ids, "step": step + rng.permutation(n) // 32, "label": given,
            "alignment": a, "margin": np.log(p_label) - np.log1p(-p_label), "loss": -np.log(p_label),
            "p_label": p_label, "pred": pred, "p_pred": p_pred,
        })
        step += -(-n // 32)
        if gaps:
            frame = frame[rng.random(n) >= gaps]
        if repeats:
            again = frame[rng.random(len(frame)) < repeats].copy()
            again["step"] = again["step"] + 1000
            again["alignment"] = np.clip(again["alignment"] + 0.3 * rng.standard_normal(len(again)), -1, 1)
            again["p_label"] = np.clip(again["p_label"] * 0.9, 1e-4, 1)
            again["pred"] = rng.integers(0, num_classes, len(again))
            frame = pd.concat([frame, again], ignore_index=True)
        if nans:
            bad = rng.random(len(frame)) < nans
            for col in ("alignment", "margin", "loss", "p_label", "p_pred"):
                frame.loc[bad, col] = np.nan
        frames.append(frame.sample(frac=1.0, random_state=int(rng.integers(1 << 30))))
    rows = pd.concat(frames, ignore_index=True)
    return rows, dict(zip(ids.tolist(), given.tolist())), dict(zip(ids.tolist(), clean.tolist()))


def run_with_truth(tmp_path: Path, **kwargs: Any) -> tuple[Path, dict[int, int], dict[int, int]]:
    """A 200-sample, 8-epoch, 4-class run with clean labels in labels.parquet: (path, given, clean)."""
    rows, given, clean = noisy_rows(n=200, epochs=8, seed=7)
    path = write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, **kwargs)
    return path, given, clean


def reference_summary(
    rows: pd.DataFrame,
    *,
    window: list[int],
    selected: int,
    last: int,
    el2n_epoch: int,
    num_classes: int,
) -> pd.DataFrame:
    """Per-sample summaries the slow, obvious way (pandas group-bys and Python loops)."""
    r = rows.copy()
    floats = ["alignment", "margin", "loss", "p_label", "p_pred"]
    ok = np.isfinite(r[floats]).all(axis=1)
    for col in ["alignment", "margin", "loss", "p_label"]:
        r[col + "_ok"] = r[col].where(np.isfinite(r[col]))
    r = r.sort_values(["sample_id", "epoch", "step"])
    r["ok"] = ok
    grouped = r.groupby(["sample_id", "epoch"], sort=True)
    per = grouped.agg(
        alignment=("alignment_ok", "mean"), margin=("margin_ok", "mean"), loss=("loss_ok", "mean"),
        p_label=("p_label_ok", "mean"), pred=("pred", "last"), p_pred=("p_pred", "last"), label=("label", "last"),
    ).reset_index()
    per["ok"] = np.isfinite(per[["alignment", "margin", "loss", "p_label", "p_pred"]]).all(axis=1)
    out = {}
    for sid, g in per.groupby("sample_id"):
        g = g.sort_values("epoch")
        w = g[g["epoch"].isin(window) & g["ok"]]
        correct = (g["pred"] == g["label"]).to_numpy()
        forgetting = int(sum(1 for i in range(1, len(correct)) if correct[i - 1] and not correct[i]))
        sel = g[g["epoch"] == selected]["alignment"]
        lst = g[g["epoch"] == last]["alignment"]
        e = g[g["epoch"] == el2n_epoch]
        el2n = np.nan
        if len(e):
            p_y, pred, p_pred = float(e["p_label"].iloc[0]), int(e["pred"].iloc[0]), float(e["p_pred"].iloc[0])
            if pred == int(e["label"].iloc[0]):
                el2n = np.sqrt((1 - p_y) ** 2 + (1 - p_y) ** 2 / (num_classes - 1))
            else:
                rest = max(0.0, 1 - p_y - p_pred)
                el2n = np.sqrt((1 - p_y) ** 2 + p_pred**2 + (rest**2 / (num_classes - 2) if num_classes > 2 else 0))
        counts: dict[int, list[float]] = {}
        for _, row in g[g["epoch"].isin(window) & g["ok"]].iterrows():
            counts.setdefault(int(row["pred"]), []).append(float(row["p_pred"]))
        if counts:
            best = max(counts, key=lambda c: (len(counts[c]), np.mean(counts[c]), -c))
            suggested, prob = best, float(np.mean(counts[best]))
        else:
            suggested, prob = np.nan, np.nan
        out[sid] = {
            "label": int(g["label"].iloc[-1]),
            "suggested_label": suggested,
            "suggested_prob": prob,
            "alignment_selected": float(sel.iloc[0]) if len(sel) else np.nan,
            "n_epochs": len(g),
            "n_window": len(w),
            "align_mean": -w["alignment"].mean() if len(w) else np.nan,
            "align_selected": -float(sel.iloc[0]) if len(sel) else np.nan,
            "align_last": -float(lst.iloc[0]) if len(lst) else np.nan,
            "neg_frac": float((w["alignment"] < 0).mean()) if len(w) else np.nan,
            "aum": -w["margin"].mean() if len(w) else np.nan,
            "loss_mean": w["loss"].mean() if len(w) else np.nan,
            "confidence": -w["p_label"].mean() if len(w) else np.nan,
            "variability": float(np.std(w["p_label"].to_numpy())) if len(w) else np.nan,
            "forgetting": forgetting,
            "el2n": el2n,
        }
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index.name = "sample_id"
    return frame


def colour_images_npz(path: Path, *, n: int = 400, classes: int = 4, seed: int = 0, size: int = 12) -> Path:
    """An .npz of ``size`` x ``size`` images whose class is one of ``classes`` colour templates plus pixel
    noise: the tiny model fits it in a few epochs, so injected label noise stands out."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(classes, 1, 1, 3))
    labels = rng.integers(0, classes, size=n)
    images = np.clip(templates[labels] + rng.normal(0, 40, size=(n, size, size, 3)), 0, 255).astype(np.uint8)
    np.savez(path, images=images, labels=labels)
    return path


#: Per epoch, ``train_acc`` (fit of the given labels) and ``contradicted`` (share the model
#: confidently contradicted) of a run that memorises, for ``write_run(extra_epoch=...)``:
#: the share of unfitted samples fitted per epoch levels off at epoch 4 (22% contradicted
#: there), the fit passes 1 - 0.22 at epoch 6 (the onset) and 1 - 0.11 at epoch 7
#: (gwa_diag.early_stopping.read_phase).
MEMORISING_EPOCHS = {e: {"train_acc": fit, "contradicted": share} for e, (fit, share) in enumerate(zip(
    [0.30, 0.50, 0.62, 0.70, 0.74, 0.77, 0.84, 0.90, 0.95, 0.98],
    [0.50, 0.35, 0.28, 0.24, 0.22, 0.20, 0.12, 0.06, 0.03, 0.01]))}
