"""Confident contradiction has one definition in three forms: the recorder's on the device
(torch), the analysis' over one epoch (numpy) and its per-epoch share over all parts
(DuckDB SQL). They must agree row for row and share for share."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import torch

from gwa_diag.analysis.contradiction import contradicted, share_sql, thresholds
from gwa_diag.signals import contradicted_rows as _contradicted


def _epoch(seed: int, n: int = 500, classes: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, classes - 1, n)  # the last class is never a label: it has no threshold
    pred = np.where(rng.random(n) < 0.6, label, rng.integers(0, classes, n))
    p_label = rng.random(n).astype(np.float32)
    p_pred = np.where(pred == label, p_label, rng.random(n)).astype(np.float32)
    alignment = rng.uniform(-1, 1, n).astype(np.float32)
    alignment[rng.random(n) < 0.05] = np.nan  # non-finite logits: no prediction counts
    p_pred[rng.random(n) < 0.03] = np.inf
    return {"label": label, "pred": pred, "p_label": p_label, "p_pred": p_pred, "alignment": alignment}


def test_numpy_torch_and_sql_agree():
    classes = 5
    frames = []
    for epoch in range(3):
        e = _epoch(epoch, classes=classes)
        ok = np.isfinite(e["alignment"]) & np.isfinite(e["p_label"]) & np.isfinite(e["p_pred"])
        rows = contradicted(e["label"], e["pred"], e["p_label"], e["p_pred"], ok, classes)
        assert 0 < rows.sum() < len(rows)  # the check can tell a wrong definition from a right one
        # Slow reference: the threshold of class j is the mean p(label) of the finite rows labelled j.
        limit = {j: e["p_label"][ok & (e["label"] == j)].astype(np.float64).mean() for j in range(classes - 1)}
        slow = [bool(k) and p != y and p in limit and pp >= limit[p]
                for k, y, p, pp in zip(ok, e["label"], e["pred"], e["p_pred"].astype(np.float64))]
        np.testing.assert_array_equal(rows, slow)
        assert np.isinf(thresholds(e["label"], e["p_label"], ok, classes)[classes - 1])
        # The recorder's device form counts the same rows.
        ints = torch.from_numpy(np.stack([e["label"], e["pred"]], axis=1))
        floats = torch.from_numpy(np.stack([e["alignment"], np.zeros_like(e["alignment"]), np.zeros_like(e["alignment"]),
                                            e["p_label"], e["p_pred"]], axis=1))
        device = _contradicted(ints, floats, torch.isfinite(floats[:, 0]), classes, world_size=1)
        assert float(device) == rows.sum()
        frames.append(pd.DataFrame({**e, "epoch": epoch, "contradicted": rows.mean()}))
    rows_df = pd.concat(frames, ignore_index=True)  # noqa: F841  (read by DuckDB below)
    with duckdb.connect(":memory:") as con:
        out = con.sql(share_sql("rows_df") + " ORDER BY epoch").df()
    np.testing.assert_allclose(out["contradicted"], [f["contradicted"].iloc[0] for f in frames], atol=1e-12)
