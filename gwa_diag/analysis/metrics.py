"""Detection metrics: how well each scorer finds the truly mislabeled samples.

Inputs are scores oriented **higher = more suspicious** (every column of
:data:`gwa_diag.analysis.summaries.SCORERS`) and a boolean ``is_noisy`` (given label != clean
label). Implemented with numpy; the definitions match scikit-learn's
``roc_auc_score`` and ``average_precision_score`` (ties included). NaN scores count as
least suspicious (-inf).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gwa_diag.store import Run, read_listed_parts
from gwa_diag.analysis.summaries import SCORERS, AnalysisError, _as_run, vanished_parts_as_file_not_found
from gwa_diag.checks import InputError, MissingFileError

__all__ = [
    "TruthCoverageWarning",
    "RULE_ROW",
    "auroc",
    "average_precision",
    "precision_recall_at_k",
    "rule_scores",
    "roc_points",
    "pr_points",
    "ground_truth",
    "run_class_names",
    "detection_table",
    "per_class_table",
]

#: Name of the detection-table row for the paper's rule "alignment < 0 at the selected epoch".
RULE_ROW = "rule: alignment < 0 at selected epoch"


def _arrays(scores: Any, is_noisy: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(is_noisy).reshape(-1)
    if s.shape != y.shape:
        raise InputError(f"scores ({s.size}) and is_noisy ({y.size}) must have the same length")
    if y.dtype != np.bool_:
        if not np.isin(y, [0, 1]).all():
            raise InputError("is_noisy must be boolean (or 0/1)")
        y = y.astype(bool)
    return np.where(np.isnan(s), -np.inf, s), y


def _both_classes(y: np.ndarray, what: str) -> None:
    if y.all() or not y.any():
        raise InputError(f"{what} needs both noisy and clean samples; got {int(y.sum())} noisy of {y.size}")


def auroc(scores: Any, is_noisy: Any) -> float:
    """Area under the ROC curve: the probability that a random noisy sample scores higher
    than a random clean one, ties counting one half (equals sklearn ``roc_auc_score``)."""
    s, y = _arrays(scores, is_noisy)
    _both_classes(y, "AUROC")
    return _auroc(s, y)


class _Sorted:
    """Scores sorted once, highest first (stable: ties keep their input order), with the
    cumulative true / false positives at each distinct score. Every metric here reads it."""

    def __init__(self, s: np.ndarray, y: np.ndarray) -> None:
        order = np.argsort(-s, kind="stable")
        s_sorted = s[order]
        self.y = y[order]
        # Last position of each run of equal scores: tied samples cross a threshold together.
        last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.size - 1]
        self.tp = np.cumsum(self.y)[last].astype(np.float64)
        self.fp = (last + 1) - self.tp
        self.n_pos = float(y.sum())
        self.n_neg = float(y.size) - self.n_pos

    def auroc(self) -> float:
        # Trapezoids between distinct thresholds: a tie between a noisy and a clean sample
        # counts one half, exactly the Mann-Whitney statistic.
        fpr = np.r_[0.0, self.fp / self.n_neg]
        tpr = np.r_[0.0, self.tp / self.n_pos]
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))

    def average_precision(self) -> float:
        precision = self.tp / (self.tp + self.fp)
        recall = self.tp / self.n_pos
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))

    def at_k(self, k: int) -> tuple[float, float]:
        k = min(k, self.y.size)
        if k == 0:
            return float("nan"), 0.0
        hits = float(self.y[:k].sum())
        return hits / k, hits / self.n_pos


def _auroc(s: np.ndarray, y: np.ndarray) -> float:
    return _Sorted(s, y).auroc()


def _threshold_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true / false positives at each distinct score, highest score first."""
    ranked = _Sorted(s, y)
    return ranked.tp, ranked.fp


def average_precision(scores: Any, is_noisy: Any) -> float:
    """Average precision, scikit-learn's definition: sum over score thresholds (ties
    grouped) of (R_n - R_{n-1}) * P_n, without interpolation."""
    s, y = _arrays(scores, is_noisy)
    if not y.any():
        raise InputError("average precision needs at least one noisy sample")
    return _average_precision(s, y)


def _average_precision(s: np.ndarray, y: np.ndarray) -> float:
    return _Sorted(s, y).average_precision()


def precision_recall_at_k(scores: Any, is_noisy: Any, *, k: int | None = None) -> tuple[float, float]:
    """Precision and recall among the ``k`` highest scores (default k = number of truly
    noisy samples, where precision = recall = 1 - miss rate). Ties at the cut are broken
    by position (stable), as a ranked list would be."""
    s, y = _arrays(scores, is_noisy)
    if k is None:
        k = int(y.sum())
    if int(k) != k or k < 0:
        raise InputError(f"k must be a whole number >= 0, got {k!r}")
    if not y.any():
        raise InputError("recall at k needs at least one noisy sample")
    return _precision_recall_at_k(s, y, int(k))


def _precision_recall_at_k(s: np.ndarray, y: np.ndarray, k: int) -> tuple[float, float]:
    return _Sorted(s, y).at_k(k)


def rule_scores(flags: Any, is_noisy: Any) -> dict[str, float]:
    """Precision, recall and F1 of a boolean rule (``flags`` True = flagged as noisy);
    precision is NaN when nothing is flagged, recall NaN when nothing is noisy."""
    f = np.asarray(flags).reshape(-1)
    y = np.asarray(is_noisy).reshape(-1)
    if f.shape != y.shape:
        raise InputError(f"flags ({f.size}) and is_noisy ({y.size}) must have the same length")
    f, y = f.astype(bool), y.astype(bool)
    tp = float((f & y).sum())
    precision = tp / f.sum() if f.any() else float("nan")
    recall = tp / y.sum() if y.any() else float("nan")
    f1 = (
        2 * precision * recall / (precision + recall)
        if np.isfinite(precision) and np.isfinite(recall) and precision + recall > 0
        else (0.0 if tp == 0 and f.any() and y.any() else float("nan"))
    )
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "n_flagged": int(f.sum())}


def roc_points(scores: Any, is_noisy: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0)."""
    s, y = _arrays(scores, is_noisy)
    _both_classes(y, "a ROC curve")
    tp, fp = _threshold_counts(s, y)
    return np.r_[0.0, fp / (~y).sum()], np.r_[0.0, tp / y.sum()]


def pr_points(scores: Any, is_noisy: Any) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, highest threshold first."""
    s, y = _arrays(scores, is_noisy)
    if not y.any():
        raise InputError("a precision-recall curve needs at least one noisy sample")
    tp, fp = _threshold_counts(s, y)
    return tp / y.sum(), tp / (tp + fp)


# --------------------------------------------------------------------------------------
# ground truth
# --------------------------------------------------------------------------------------


def ground_truth(
    run_or_path: Run | str | os.PathLike,
    *,
    truth_file: str | os.PathLike | None = None,
    given: pd.Series | None = None,
) -> pd.Series:
    """Which samples are truly mislabeled: bool Series indexed by sample_id (True = the
    given label differs from the clean label).

    Sources, in order: ``truth_file``, else labels.parquet's ``clean_label``. The given
    labels come from ``given`` (a Series sample_id -> label, e.g. a summary's ``label``
    column), else labels.parquet, else the recorded rows. Samples whose clean label is
    unknown (missing from the truth, or an empty cell) are left out.

    The truth file is Parquet when its name ends in ``.parquet`` or ``.pq`` (any case),
    tab-separated for ``.tsv``/``.tab``, else CSV; columns ``sample_id, clean_label``.
    ``clean_label`` holds class indices in ``[0, num_classes)``, or class names, which are
    mapped to indices through run.json's ``class_names`` (or ``dataset.class_names``); a run
    that records no class names accepts indices only.

    Coverage: ``out.attrs["coverage"]`` is ``{"matched", "samples", "truth_rows"}`` (samples
    scored, samples in the run, truth rows with a label). When the truth does not cover every
    sample, or names samples the run does not have, a :class:`TruthCoverageWarning` says so.

    Raises:
        AnalysisError: no ground truth anywhere (with how to provide it), or a truth that
            shares no sample_id with the run.
        FileNotFoundError: the truth file does not exist.
        ValueError: a truth file that is a folder, unreadable as CSV/Parquet, without the
            needed columns, with repeated sample ids, or with labels that are not the run's
            classes (out of range, non-integer, unknown names).
    """
    run = _as_run(run_or_path)
    if truth_file is not None:
        clean = _clean_as_indices(_read_truth(Path(truth_file)), run, Path(truth_file))
    else:
        labels = run.labels()
        if labels is None or "clean_label" not in labels.columns:
            where = (
                "it has no labels.parquet (a run recorded by AlignmentRecorder in your own loop: "
                "write one with recorder.writer.write_labels(ids, labels, clean_labels))"
                if labels is None
                else "labels.parquet has no clean_label column"
            )
            raise AnalysisError(
                f"no ground truth for {run.path}: {where}. "
                "Or pass a truth file (--truth FILE, a CSV with columns sample_id, clean_label)."
            )
        clean = labels.set_index("sample_id")["clean_label"]
    if given is None:
        given = _given_labels(run)
    given = given.dropna()
    clean = clean.dropna()
    common = given.index.intersection(clean.index)
    if len(common) == 0:
        raise AnalysisError(
            f"the ground truth shares no sample_id with the run's labels ({len(clean)} truth rows, "
            f"{len(given)} labelled samples); check that the truth file uses the dataset's sample ids"
        )
    noisy = given.loc[common].astype("int64").to_numpy() != clean.loc[common].astype("int64").to_numpy()
    out = pd.Series(noisy, index=pd.Index(common, name="sample_id"), name="is_noisy").sort_index()
    # Scores over a part of the run are easy to misread as scores over all of it: say so.
    out.attrs["coverage"] = {"matched": int(len(common)), "samples": int(len(given)), "truth_rows": int(len(clean))}
    notes = []
    if len(common) < len(given):
        notes.append(
            f"the ground truth covers {len(common)} of the run's {len(given)} samples; detection "
            "scores are over those only (does the truth file use the dataset's sample ids?)"
        )
    if len(common) < len(clean):
        # Rows for samples the run never saw usually mean ids from another numbering.
        notes.append(f"{len(clean) - len(common)} truth rows name sample ids the run does not have and are ignored")
    if notes:
        warnings.warn("; ".join(notes), TruthCoverageWarning, stacklevel=2)
    return out


class TruthCoverageWarning(UserWarning):
    """The ground truth covers only part of the run's samples."""


def run_class_names(run: Run) -> list[str] | None:
    """Class names from run.json (``class_names``, or ``dataset.class_names``), if recorded."""
    names = run.meta.get("class_names")
    if names is None and isinstance(run.meta.get("dataset"), dict):
        names = run.meta["dataset"].get("class_names")
    return [str(n) for n in names] if isinstance(names, (list, tuple)) and len(names) else None


def _clean_as_indices(clean: pd.Series, run: Run, path: Path) -> pd.Series:
    """Clean labels as class indices in [0, num_classes): class names are mapped through
    run.json's class names (:func:`run_class_names`); anything else is refused with the
    values that do not fit."""
    names = run_class_names(run) or []
    num_classes = run.num_classes or len(names) or None
    values = clean.dropna()
    if not pd.api.types.is_numeric_dtype(values):
        lookup = {name: i for i, name in enumerate(names)}
        as_text = values.astype(str)
        unknown = sorted(set(as_text) - set(lookup))
        if not names or unknown:
            known = (
                f"the run's class names are {', '.join(names)}" if names
                else "the run records no class names in run.json, so labels must be class indices"
            )
            raise InputError(
                f"truth file {path}: clean_label holds {', '.join(map(repr, unknown[:5]))}, which are "
                f"not class indices or class names ({known}); write class indices 0..{(num_classes or 1) - 1}"
            )
        values = as_text.map(lookup)
    if pd.api.types.is_float_dtype(values) and not np.all(np.mod(values.to_numpy(), 1) == 0):
        raise InputError(f"truth file {path}: clean_label holds non-integer values; write class indices")
    values = values.astype("int64")
    bad = values[(values < 0) | (values >= num_classes)] if num_classes else values[values < 0]
    if len(bad):
        raise InputError(
            f"truth file {path}: clean_label {int(bad.iloc[0])} (sample {bad.index[0]}) is outside the "
            f"run's classes [0, {num_classes}); {len(bad)} row(s) are out of range"
        )
    return values


_PARQUET_SUFFIXES = (".parquet", ".pq")
_TSV_SUFFIXES = (".tsv", ".tab")


def _read_truth(path: Path) -> pd.Series:
    if not path.exists():
        raise MissingFileError(
            f"truth file not found ({path}); pass a CSV or Parquet file with columns sample_id, clean_label"
        )
    if path.is_dir():
        raise InputError(f"truth file is a directory ({path}); pass the CSV or Parquet file itself")
    # The suffix decides the format, in any case: T.PARQUET and t.pq are Parquet too.
    suffix = path.suffix.lower()
    kind = "Parquet" if suffix in _PARQUET_SUFFIXES else "tab-separated" if suffix in _TSV_SUFFIXES else "CSV"
    try:
        if kind == "Parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep="\t" if kind == "tab-separated" else ",")
    except (ValueError, pd.errors.ParserError) as exc:
        # pandas / pyarrow say what broke but not in which file: name it, and the format tried.
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fix = (
            "write a Parquet file with columns sample_id, clean_label" if kind == "Parquet"
            else f"write a {kind} file whose first line is the header sample_id, clean_label "
                 "(Parquet files must end in .parquet or .pq)"
        )
        raise InputError(f"truth file could not be read as {kind}: {detail} ({path}); {fix}") from exc
    missing = [c for c in ("sample_id", "clean_label") if c not in frame.columns]
    if missing:
        hint = (
            "; the header looks tab- or semicolon-separated: write commas, or name a tab-separated file .tsv"
            if kind == "CSV" and len(frame.columns) == 1 and any(c in str(frame.columns[0]) for c in "\t;")
            else ""
        )
        raise InputError(
            f"truth file {path} lacks columns {missing}; it needs sample_id and clean_label "
            f"(found: {', '.join(map(str, frame.columns))}){hint}"
        )
    if frame["sample_id"].duplicated().any():
        raise InputError(f"truth file {path} lists some sample_id more than once")
    return frame.set_index("sample_id")["clean_label"]


def _given_labels(run: Run) -> pd.Series:
    labels = run.labels()
    if labels is not None:
        return labels.set_index("sample_id")["label"]
    import duckdb

    def read() -> dict[str, Any]:
        files = [str(f) for f in run.sample_files()]
        if not files:
            raise AnalysisError(f"{run.path} has no labels.parquet and no complete epoch to read labels from")
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        with vanished_parts_as_file_not_found(files), duckdb.connect(":memory:") as con:
            return con.sql(
                f"SELECT sample_id, arg_max(label, step) AS label FROM read_parquet([{listed}]) GROUP BY sample_id"
            ).fetchnumpy()

    out = read_listed_parts(read)
    return pd.Series(np.asarray(out["label"]), index=pd.Index(np.asarray(out["sample_id"]), name="sample_id"))


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------


def _align(summary: pd.DataFrame, is_noisy: pd.Series) -> tuple[pd.DataFrame, np.ndarray]:
    if not isinstance(summary, pd.DataFrame) or not isinstance(is_noisy, pd.Series):
        raise TypeError("summary must be a DataFrame and is_noisy a Series, both indexed by sample_id")
    common = summary.index.intersection(is_noisy.index)
    if len(common) == 0:
        raise InputError("summary and is_noisy share no sample_id")
    return summary.loc[common], is_noisy.loc[common].to_numpy(dtype=bool)


def _score_row(s: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if not y.any():
        return {"auroc": float("nan"), "ap": float("nan"), "p_at_k": float("nan"), "r_at_k": float("nan")}
    ranked = _Sorted(s, y)
    p, r = ranked.at_k(int(y.sum()))
    return {
        "auroc": ranked.auroc() if not y.all() else float("nan"),
        "ap": ranked.average_precision(),
        "p_at_k": p,
        "r_at_k": r,
    }


def detection_table(
    summary: pd.DataFrame, is_noisy: pd.Series, *, scorers: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per scorer (AUROC, AP, precision and recall at k = number of noisy
    samples) and one row, :data:`RULE_ROW`, for the rule "alignment < 0 at the selected
    epoch" (precision, recall, F1, number flagged). Samples without ground truth are left
    out; ``frame.attrs`` holds n, n_noisy and k."""
    names = list(SCORERS) if scorers is None else list(scorers)
    unknown = [s for s in names if s not in SCORERS]
    if unknown:
        raise InputError(f"unknown scorer(s) {unknown}; valid scorers: {', '.join(SCORERS)}")
    frame, y = _align(summary, is_noisy)
    rows: dict[str, dict[str, float]] = {}
    for name in names:
        if name not in frame.columns:
            raise InputError(f"the summary has no {name!r} column")
        v = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        rows[name] = _score_row(np.where(np.isnan(v), -np.inf, v), y)
    if "alignment_selected" in frame.columns:
        a = frame["alignment_selected"].to_numpy(dtype=np.float64, na_value=np.nan)
        rows[RULE_ROW] = rule_scores(a < 0, y)
    table = pd.DataFrame.from_dict(rows, orient="index")
    columns = ["auroc", "ap", "p_at_k", "r_at_k", "precision", "recall", "f1", "n_flagged"]
    table = table.reindex(columns=columns)
    table["n_flagged"] = table["n_flagged"].astype("Int64")
    table.index.name = "method"
    table.attrs = {"n": int(y.size), "n_noisy": int(y.sum()), "k": int(y.sum())}
    return table


def per_class_table(summary: pd.DataFrame, is_noisy: pd.Series, *, scorer: str = "align_mean") -> pd.DataFrame:
    """Breakdown by given label: samples, noisy samples, noise rate, AUROC and AP of
    ``scorer`` within the class, and precision / recall of the rule "alignment < 0 at the
    selected epoch"."""
    if scorer not in SCORERS:
        raise InputError(f"unknown scorer {scorer!r}; valid scorers: {', '.join(SCORERS)}")
    frame, y = _align(summary, is_noisy)
    labels = frame["label"].to_numpy()
    v = frame[scorer].to_numpy(dtype=np.float64, na_value=np.nan)
    s = np.where(np.isnan(v), -np.inf, v)
    a = frame["alignment_selected"].to_numpy(dtype=np.float64, na_value=np.nan) if "alignment_selected" in frame else None
    rows = []
    for label in np.unique(labels):
        m = labels == label
        ys, ss = y[m], s[m]
        row: dict[str, Any] = {"label": int(label), "n": int(m.sum()), "n_noisy": int(ys.sum()), "noise_rate": float(ys.mean())}
        row.update({k: row_v for k, row_v in _score_row(ss, ys).items() if k in ("auroc", "ap")})
        if a is not None:
            rule = rule_scores(a[m] < 0, ys)
            row.update({"rule_precision": rule["precision"], "rule_recall": rule["recall"], "n_flagged": rule["n_flagged"]})
        rows.append(row)
    out = pd.DataFrame(rows).set_index("label")
    out.attrs = {"scorer": scorer}
    return out
