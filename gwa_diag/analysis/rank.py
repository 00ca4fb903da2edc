"""Rank samples by a scorer, flag the suspicious ones, and write the suspects file.

Every scorer in :data:`gwa_diag.analysis.scorers.SCORERS` is oriented so that **higher = more
suspicious**; ``rank`` 1 is the most suspicious sample. Ties are broken by ascending
``sample_id`` so that the order is reproducible; NaN scores (a sample absent from the
epochs a scorer reads) rank last.

The suspects file (CSV, one row per flagged sample, most suspicious first) is meant for a
labeling team: ``sample_id[, path], given_label[, given_name], suggested_label[, suggested_name],
suggested_prob[, disagreement][, unfitted][, contradicted_plateau], score, rank, scorer, reason``;
``path`` (the file, relative to the dataset's root) when the run knows it; ``disagreement`` and
``unfitted`` (the share of the three disagreement epochs in which the model confidently, or at
all, predicted another class) and ``contradicted_plateau`` (1 when it confidently did at the
training phase's plateau) for runs analysed since they were added. Above 0.5, ``unfitted`` counts the sample
towards the estimated number of wrong labels, or ``contradicted_plateau`` does in a run that
memorised its labels (:mod:`gwa_diag.analysis.estimate`).

The default ranking is AUM and the default rule ``estimate`` flags its top down to the
estimated number of wrong labels (:data:`gwa_diag.checks.DEFAULT_SCORER`, ``DEFAULT_RULE``),
so the flagged samples are always ranks 1..n.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from gwa_diag.store import atomic_write_bytes
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.analysis.estimate import ESTIMATE_COLUMN, estimate_wrong_labels
from gwa_diag.checks import (
    DEFAULT_RULE, DEFAULT_SCORER, InputError, MissingFileError, Rule, check_choice, check_fraction,
)

__all__ = [
    "RULES", "SUSPECT_COLUMNS", "rank", "flag", "flag_ranking", "estimate_flagged_ids", "check_rule_options",
    "suspects_frame", "write_suspects", "read_suspects",
]

#: Flagging rules: name -> description. The valid names are :data:`gwa_diag.checks.Rule`.
RULES: dict[str, str] = {
    "estimate": (
        "the top of the ranking down to the estimated number of wrong labels: as many samples as "
        "the model did not fit in most of the last three epochs of the window, or, in a run that "
        "memorised its labels, confidently contradicted at the plateau where its learning levelled "
        "off before it did (gwa_diag.analysis.estimate); the default"
    ),
    "negative": (
        "alignment < 0 at the GWA-selected epoch (the last epoch when GWA selects none): the "
        "sample pulls the classifier head against its direction (Hölzl et al. 2025)"
    ),
    "topk": "the k highest-scoring samples by the chosen scorer",
    "noise_rate": "the top round(noise_rate * N) samples by the chosen scorer (an expected noise rate)",
    "p_wrong": (
        "the samples whose calibrated probability of a wrong label (p_wrong, fitted on the run's "
        "verified sample: gwa-diag audit) is at least P_WRONG_FLAG, in ranking order"
    ),
}

#: The ``p_wrong`` rule flags samples at least this likely to be wrong: a wrong label is then
#: the likelier answer (``bench/audit.py`` measures the flagged set).
P_WRONG_FLAG = 0.5

SUSPECT_COLUMNS = [
    "sample_id", "path", "given_label", "given_name", "suggested_label", "suggested_name",
    "suggested_prob", "disagreement", "unfitted", "contradicted_plateau", "p_wrong", "score", "rank", "scorer",
    "reason",
]


def _check_scorer(summary: pd.DataFrame, scorer: str) -> None:
    check_choice(scorer, SCORERS, "scorer")
    if scorer not in summary.columns:
        raise InputError(f"the summary has no {scorer!r} column; pass the frame from gwa_diag.analysis.summaries.summarize")


def rank(summary: pd.DataFrame, *, scorer: str = DEFAULT_SCORER) -> pd.DataFrame:
    """The summary sorted most suspicious first (higher ``scorer`` first, ties by ascending
    sample_id, NaN last), with ``rank`` (1..N), ``score`` and ``scorer`` columns in front.
    The index stays ``sample_id``."""
    _check_scorer(summary, scorer)
    return _rank(summary, scorer)


def _order(summary: pd.DataFrame, scorer: str) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the rows most suspicious first, the scores): NaN last, then the higher
    score first, then the lower sample id."""
    score = summary[scorer].to_numpy(dtype=np.float64, na_value=np.nan)
    ids = summary.index.to_numpy()
    missing = np.isnan(score)
    # lexsort: last key is primary.
    return np.lexsort((ids, -np.where(missing, 0.0, score), missing)), score


def estimate_flagged_ids(summary: pd.DataFrame, *, scorer: str = DEFAULT_SCORER) -> pd.Index:
    """The sample ids the ``estimate`` rule flags (what :func:`flag` returns, without
    building the frame): the top of the ranking down to the estimated number of wrong labels."""
    _check_scorer(summary, scorer)
    _check_rule_columns(summary, "estimate")
    order, _ = _order(summary, scorer)
    return summary.index[order[: estimate_wrong_labels(summary).total]]


def _rank(summary: pd.DataFrame, scorer: str) -> pd.DataFrame:
    order, score = _order(summary, scorer)
    out = summary.iloc[order].copy()
    out.insert(0, "rank", np.arange(1, len(out) + 1, dtype=np.int64))
    out.insert(1, "score", score[order])
    out.insert(2, "scorer", scorer)
    out.attrs = dict(summary.attrs)
    return out


def flag(
    summary: pd.DataFrame,
    *,
    rule: str = DEFAULT_RULE,
    k: int | None = None,
    noise_rate: float | None = None,
    scorer: str = DEFAULT_SCORER,
) -> pd.DataFrame:
    """The flagged samples, most suspicious first (the :func:`rank` frame, filtered), with
    a human-readable ``reason`` column. Rules (:data:`RULES`): ``estimate`` (the top of the
    ranking down to the estimated number of wrong labels; the default), ``negative`` (raw
    alignment < 0 at the selected epoch, whatever the ranking), ``topk`` (needs ``k``),
    ``noise_rate`` (needs ``noise_rate`` in [0, 1]). Every rule but ``negative`` flags a
    top slice of the ranking."""
    check_rule_options(rule, k=k, noise_rate=noise_rate)
    _check_scorer(summary, scorer)
    _check_rule_columns(summary, rule)
    return _flag(_rank(summary, scorer), rule=rule, k=k, noise_rate=noise_rate)


def _check_rule_columns(frame: pd.DataFrame, rule: str) -> None:
    needed = {"negative": "alignment_selected", "estimate": ESTIMATE_COLUMN, "p_wrong": "p_wrong"}.get(rule)
    if rule == "p_wrong" and needed not in frame.columns:
        raise InputError("rule 'p_wrong' needs answers for a verified sample: draw one with gwa-diag audit RUN --n 200, "
                         "answer it (the app's Audit page, or gwa-diag audit RUN --answers SHEET), then flag again")
    if needed is not None and needed not in frame.columns:
        raise InputError(f"rule {rule!r} needs the summary's {needed} column; pass the frame from "
                         "gwa_diag.analysis.summaries.summarize")


def check_rule_options(rule: str, *, k: int | None = None, noise_rate: float | None = None) -> Rule:
    """``rule`` when it is a known rule (:data:`RULES`) and ``k`` / ``noise_rate`` fit it: a
    whole ``k >= 0`` for ``topk`` only, a ``noise_rate`` in [0, 1] for ``noise_rate`` only.
    Reads no data, so callers check their options before any work."""
    check_choice(rule, Rule, "rule")
    if rule == "topk":
        if not _whole(k):
            raise InputError(f"rule 'topk' needs a whole number k >= 0, got {k!r}; pass k=N, how many to flag")
    elif k is not None:
        raise InputError(f"k applies only to rule 'topk', not {rule!r}; pass rule='topk' or leave k out")
    if rule == "noise_rate":
        try:
            check_fraction(noise_rate, "noise_rate")
        except InputError:
            raise InputError(f"rule 'noise_rate' needs noise_rate in [0, 1], got {noise_rate!r}; pass the expected "
                             "fraction of wrong labels") from None
    elif noise_rate is not None:
        raise InputError(f"noise_rate applies only to rule 'noise_rate', not {rule!r}; pass rule='noise_rate' "
                         "or leave noise_rate out")
    return rule  # type: ignore[return-value]


def _whole(k: object) -> bool:
    try:
        return k is not None and not isinstance(k, bool) and int(k) == k and k >= 0  # type: ignore[call-overload, operator]
    except (TypeError, ValueError):
        return False


def flag_ranking(ranking: pd.DataFrame, *, rule: str = DEFAULT_RULE, k: int | None = None,
                 noise_rate: float | None = None) -> pd.DataFrame:
    """The flagged rows of a :func:`rank` frame (most suspicious first, the ranking's order
    and columns, plus ``reason``): :func:`flag` without sorting again, for callers that keep
    the ranking too. The ranking's ``attrs`` (from the summary) name the selected epoch."""
    check_rule_options(rule, k=k, noise_rate=noise_rate)
    _check_rule_columns(ranking, rule)
    return _flag(ranking, rule=rule, k=k, noise_rate=noise_rate)


def _flag(ranked: pd.DataFrame, *, rule: str, k: int | None, noise_rate: float | None) -> pd.DataFrame:
    n = len(ranked)
    scorer = str(ranked["scorer"].iloc[0]) if n else ""
    if rule == "negative":
        align = ranked["alignment_selected"].to_numpy(dtype=np.float64, na_value=np.nan)
        out = ranked[align < 0].copy()
        choices = ranked.attrs.get("epochs")
        epoch = choices.selection.used_epoch if choices is not None else None
        fallback = choices is not None and choices.selection.fallback
        where = (
            "at the selected epoch" if epoch is None
            else f"at epoch {epoch} (last epoch; GWA selected none)" if fallback
            else f"at epoch {epoch} (GWA-selected)"
        )
        out["reason"] = [f"alignment {a:.3f} < 0 {where}" for a in out["alignment_selected"]]
        return out
    if rule == "p_wrong":
        out = ranked[ranked["p_wrong"].to_numpy(dtype=np.float64, na_value=np.nan) >= P_WRONG_FLAG].copy()
        out["reason"] = [f"rank {r} of {n} by {scorer}, p_wrong {p:.2f} >= {P_WRONG_FLAG:g}"
                         for r, p in zip(out["rank"].tolist(), out["p_wrong"].tolist())]
        return out
    if rule == "estimate":
        top = estimate_wrong_labels(ranked).total
    else:
        top = int(k) if rule == "topk" else int(round(float(noise_rate) * n))  # type: ignore[arg-type]
    out = ranked.iloc[: min(top, n)].copy()
    tail = {"estimate": " = the estimated number of wrong labels", "topk": "",
            "noise_rate": f" = {float(noise_rate or 0):.1%} expected noise"}[rule]
    # Plain lists: formatting thousands of rows from pandas' boxed iteration is slow.
    reasons = [f"rank {r} of {n} by {scorer} (score {s:.4g}), within the top {top}{tail}"
               for r, s in zip(out["rank"].tolist(), out["score"].tolist())]
    out["reason"] = reasons
    return out


def _names(labels: pd.Series, class_names: Sequence[str]) -> pd.Series:
    names = list(class_names)

    def name(v: object) -> object:
        if v is pd.NA or v is None or (isinstance(v, float) and np.isnan(v)):
            return pd.NA
        i = int(v)  # type: ignore[call-overload]
        return names[i] if 0 <= i < len(names) else pd.NA

    return pd.Series([name(v) for v in labels], index=labels.index, dtype="string")


def suspects_frame(flagged: pd.DataFrame, *, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """The table :func:`write_suspects` writes (and :func:`read_suspects` returns)."""
    needed = {"label", "suggested_label", "suggested_prob", "score", "rank", "scorer", "reason"}
    missing = sorted(needed - set(flagged.columns))
    if missing:
        raise InputError(f"flagged frame lacks columns {missing}; pass the output of gwa_diag.analysis.rank.flag")
    frame = flagged.reset_index() if "sample_id" not in flagged.columns else flagged.reset_index(drop=True)
    out = pd.DataFrame(
        {
            "sample_id": frame["sample_id"].astype("int64"),
            "given_label": frame["label"].astype("int64"),
            "suggested_label": frame["suggested_label"].astype("Int64"),
            "suggested_prob": frame["suggested_prob"].astype("float64"),
            "score": frame["score"].astype("float64"),
            "rank": frame["rank"].astype("int64"),
            "scorer": frame["scorer"].astype("string"),
            "reason": frame["reason"].astype("string"),
        }
    )
    if class_names is not None:
        out.insert(2, "given_name", _names(out["given_label"], class_names))
        out.insert(4, "suggested_name", _names(out["suggested_label"], class_names))
    for column in ("p_wrong", "contradicted_plateau", "unfitted", "disagreement"):
        if column in frame.columns:
            # The evidence behind the estimated count: the share of the disagreement epochs in
            # which the model (confidently) predicted another class, and whether it confidently
            # did at the plateau (higher = more suspicious); with a verified sample, the
            # calibrated probability that the label is wrong.
            out.insert(out.columns.get_loc("suggested_prob") + 1, column, frame[column].astype("float64"))
    if "path" in frame.columns:  # runs whose dataset knows its files
        out.insert(1, "path", frame["path"].astype("string"))
    return out


def write_suspects(
    path: str | os.PathLike, flagged: pd.DataFrame, class_names: Sequence[str] | None = None
) -> Path:
    """Write the suspects CSV atomically (never half-written). Columns: sample_id[, path],
    given_label[, given_name], suggested_label[, suggested_name], suggested_prob[, disagreement][, unfitted]
    [, contradicted_plateau][, p_wrong], score, rank, scorer, reason; one row per flagged sample, most suspicious first."""
    table = suspects_frame(flagged, class_names=class_names)
    buffer = io.StringIO()
    # Default float formatting writes the shortest repr: floats read back bit-identical.
    table.to_csv(buffer, index=False)
    return atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def read_suspects(path: str | os.PathLike) -> pd.DataFrame:
    """Read a suspects CSV written by :func:`write_suspects` (same columns and dtypes)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"no suspects file at {path}; write one with `gwa-diag rank RUN`")
    # Only empty cells are missing values: a class named "NA" or "null" stays a name.
    blank = {col: [""] for col in ("suggested_label", "suggested_prob", "disagreement", "unfitted", "contradicted_plateau",
                                    "p_wrong", "score", "given_name", "suggested_name", "path")}
    text = {col: "string" for col in ("scorer", "reason", "given_name", "suggested_name", "path")}
    frame = pd.read_csv(path, dtype=text, keep_default_na=False, na_values=blank)
    optional = ("path", "given_name", "suggested_name", "disagreement", "unfitted", "contradicted_plateau", "p_wrong")
    missing = [c for c in SUSPECT_COLUMNS if c not in frame.columns and c not in optional]
    if missing:
        raise InputError(f"{path} is not a suspects file: missing columns {missing}")
    types = {
        "sample_id": "int64", "given_label": "int64", "suggested_label": "Int64",
        "suggested_prob": "float64", "disagreement": "float64", "unfitted": "float64", "contradicted_plateau": "float64",
        "p_wrong": "float64", "score": "float64",
        "rank": "int64",
    }
    frame = frame.astype({k: v for k, v in types.items() if k in frame.columns})
    for col in ("given_name", "suggested_name", "path"):
        if col in frame.columns:
            frame[col] = frame[col].astype("string")
    return frame[[c for c in SUSPECT_COLUMNS if c in frame.columns]]
