"""Confident contradiction: the model predicts another class ``j`` than the given label,
with ``p(j)`` at least class ``j``'s threshold, the mean ``p(label)`` of the rows labelled
``j`` in the same epoch (confident learning's per-class threshold; Northcutt, Jiang and
Chuang, "Confident Learning", JAIR 2021). A class nobody is labelled with has no threshold,
so predicting it never counts.

One definition in two forms, for two sizes of work:

* :func:`contradicted`, numpy over the rows of one epoch: the few epochs the summaries read
  in full (the disagreement and plateau epochs);
* :func:`share_sql`, DuckDB over every part: the per-epoch share, for runs recorded before
  the recorder wrote it to ``epochs.parquet``.

The recorder computes the share on the device while training (``gwa_diag.signals``); the
tests hold the three to the same numbers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["contradicted", "share_sql", "thresholds"]


def thresholds(label: np.ndarray, p_label: np.ndarray, ok: np.ndarray, num_classes: int) -> np.ndarray:
    """Per class (float64, length ``num_classes``): the mean ``p_label`` of the ``ok`` rows
    labelled with it; ``inf`` for a class with no such row."""
    keep = ok & (label >= 0) & (label < num_classes)
    sums = np.bincount(label[keep], weights=p_label[keep].astype(np.float64), minlength=num_classes)
    counts = np.bincount(label[keep], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def contradicted(label: np.ndarray, pred: np.ndarray, p_label: np.ndarray, p_pred: np.ndarray, ok: np.ndarray,
                 num_classes: int) -> np.ndarray:
    """Per row of one epoch (bool): an ``ok`` row whose prediction is another class than its
    label, with ``p_pred`` at least that class's threshold (:func:`thresholds` of the same
    rows). Rows that are not ``ok`` (non-finite values) neither count nor set thresholds."""
    limit = thresholds(label, p_label, ok, num_classes)
    known = (pred >= 0) & (pred < num_classes)
    at = np.where(known, limit[np.clip(pred, 0, num_classes - 1)], np.inf)
    return ok & known & (pred != label) & (p_pred.astype(np.float64) >= at)


def share_sql(source: str) -> str:
    """DuckDB query over ``source`` (sample rows with an ``epoch`` column) giving, per epoch,
    ``contradicted``: the confidently contradicted rows over all rows, as the recorder records it
    in ``epochs.parquet``'s column of the same name (rows with a non-finite alignment,
    p(label) or p(pred) count in the denominator only)."""
    return f"""
        WITH rows AS (
            SELECT CAST(epoch AS BIGINT) AS epoch, label, pred, p_label, p_pred,
                   coalesce(isfinite(alignment) AND isfinite(p_label) AND isfinite(p_pred), false) AS ok
            FROM {source}
        ), limits AS (
            SELECT epoch, label AS cls, avg(p_label) AS t FROM rows WHERE ok GROUP BY ALL
        )
        SELECT r.epoch,
               avg(CASE WHEN r.ok AND r.pred <> r.label AND r.p_pred >= l.t THEN 1.0 ELSE 0.0 END) AS contradicted
        FROM rows r LEFT JOIN limits l ON r.epoch = l.epoch AND r.pred = l.cls
        GROUP BY r.epoch
    """
