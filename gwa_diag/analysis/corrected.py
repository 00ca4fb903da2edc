"""Corrected labels from a reviewed run: the step from review decisions to a label file that
a new run trains on (``gwa-diag train --labels FILE --exclude FILE.excluded.csv``).

:func:`corrected_labels` starts from the labels the run trained on (``labels.parquet``) and
applies, in this order:

1. the review decisions under ``RUN/relabels/`` (the latest per sample wins): ``accept``
   and ``relabel`` set the decision's ``new_label``, ``fine`` keeps the given label;
2. an automatic policy (:data:`AUTO_POLICIES`) for the samples the analysis flags and
   nobody decided: ``keep`` them, ``drop`` them (into the exclusion list, label unchanged) or
   ``relabel`` them to the ranking's ``suggested_label`` when its ``suggested_prob`` (mean
   predicted probability, higher = more confident) reaches ``min_prob``.

The flagged set is :func:`gwa_diag.analysis.pipeline.analyze`'s with the same options
(:class:`~gwa_diag.analysis.options.AnalysisOptions`, or an Analysis already made), so it is
exactly what ``gwa-diag rank`` with those options lists in suspects.csv. A reviewer's
decision always wins over the policy: a decided sample is never relabelled automatically
nor dropped.

:func:`write_corrected_labels` writes three files next to each other (never replacing one):

* ``FILE.csv``: ``sample_id[,path],label,given_label,changed_by``, one row per sample of the
  run (the ``--labels`` reader reads ``sample_id`` and ``label`` and ignores the rest);
* ``FILE.excluded.csv``: ``sample_id[,path],reason``, the samples to leave out
  (``--exclude``), always written, possibly with no rows;
* ``FILE.provenance.json``: where the labels came from (:data:`CorrectedLabels.provenance`);
  ``gwa-diag train --labels FILE.csv`` finds it and records it in the new run's run.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gwa_diag import __version__
from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.pipeline import Analysis, analyze
from gwa_diag.analysis.relabel import RELABEL_DIR, decision_files, latest_decisions
from gwa_diag.checks import AutoPolicy, InputError, check_choice, check_fraction
from gwa_diag.store import Run, atomic_write_bytes, open_run

__all__ = [
    "AUTO_POLICIES",
    "CHANGED_BY",
    "PROVENANCE_FORMAT",
    "CorrectedLabels",
    "CorrectedPaths",
    "check_new_outputs",
    "check_policy",
    "corrected_labels",
    "corrected_paths",
    "provenance_path",
    "read_provenance",
    "trained_on",
    "write_corrected_labels",
]

#: Automatic policies for flagged samples without a decision: name -> what it does. The
#: valid names are :data:`gwa_diag.checks.AutoPolicy`.
AUTO_POLICIES: dict[str, str] = {
    "keep": "leave the given label (only reviewed samples change)",
    "drop": "leave the label but list the sample in the exclusion file, so the next run leaves it out",
    "relabel": "take the suggested label when its suggested_prob is at least min_prob; else keep the given label",
}

#: Values of the ``changed_by`` column: which step set a row's label.
CHANGED_BY: dict[str, str] = {
    "": "not flagged and not reviewed: the given label",
    "decision:accept": "a reviewer accepted the suggested label",
    "decision:relabel": "a reviewer chose the label",
    "decision:fine": "a reviewer confirmed the given label",
    "auto:relabel": "flagged, not reviewed: the suggested label (policy relabel)",
    "auto:drop": "flagged, not reviewed: listed in the exclusion file (policy drop; label unchanged)",
    "auto:keep": "flagged, not reviewed: the given label (policy keep, or relabel without a confident "
                 "suggestion that differs from the given label)",
}

#: ``format`` of the provenance sidecar; a reader checks it before trusting the content.
PROVENANCE_FORMAT = "gwa-diag corrected labels 1"

_LABEL_COLUMNS = ["sample_id", "label", "given_label", "changed_by"]


@dataclass(frozen=True, eq=False)  # eq=False: frames have no single truth value to compare
class CorrectedLabels:
    """What :func:`corrected_labels` made.

    Attributes:
        labels: one row per sample of the run, sorted by ``sample_id``: ``sample_id``
            [, ``path`` when labels.parquet has one], ``label`` (to train on),
            ``given_label`` (what the run trained on) and ``changed_by`` (:data:`CHANGED_BY`).
        excluded: the samples to leave out of the next run (policy ``drop``):
            ``sample_id`` [, ``path``], ``reason``; possibly no rows.
        provenance: JSON-ready: ``format``, ``parent_run_id``, ``parent_run``, ``analysis``
            (scorer, window, rule, k, noise_rate, gwa_epoch, selected_epoch: the epoch the
            flags read), ``auto``, ``min_prob``, ``counts`` (rows, decisions,
            changed_by_decisions, changed_by_auto, dropped, flagged,
            flagged_without_decision), ``created`` and ``gwa_diag_version``.
    """

    labels: pd.DataFrame
    excluded: pd.DataFrame
    provenance: dict[str, Any]


@dataclass(frozen=True)
class CorrectedPaths:
    """The three files :func:`write_corrected_labels` writes for one ``--out FILE.csv``."""

    labels: Path
    excluded: Path
    provenance: Path

    def all(self) -> tuple[Path, Path, Path]:
        return (self.labels, self.excluded, self.provenance)


def provenance_path(label_file: str | os.PathLike) -> Path:
    """``<stem>.provenance.json`` next to a label file (where ``train --labels`` looks)."""
    p = Path(label_file)
    return p.with_name(f"{p.stem}.provenance.json")


def corrected_paths(out: str | os.PathLike) -> CorrectedPaths:
    """The label file, exclusion file and provenance sidecar for ``out`` (a ``.csv`` name).

    Raises:
        InputError: ``out`` does not end in ``.csv`` (the ``--labels`` reader takes CSV).
    """
    p = Path(out)
    if p.suffix.lower() != ".csv":
        raise InputError(f"the label file must be a .csv file (the --labels reader reads CSV), got {p}; "
                         f"pass e.g. {p.with_suffix('.csv')}")
    return CorrectedPaths(labels=p, excluded=p.with_name(f"{p.stem}.excluded.csv"), provenance=provenance_path(p))


def check_policy(auto: str, min_prob: float | None) -> float | None:
    """Check the policy and threshold without reading any data; returns ``min_prob`` as a
    float (0.0 for ``relabel`` when not given, None for the other policies).

    Raises:
        InputError: an unknown policy, ``min_prob`` outside [0, 1], or ``min_prob`` with a
            policy other than ``relabel`` (it would be ignored).
    """
    check_choice(auto, AutoPolicy, "auto policy")
    if min_prob is None:
        return 0.0 if auto == "relabel" else None
    if auto != "relabel":
        raise InputError(f"min_prob applies only to the relabel policy, not {auto!r}: pass auto='relabel' "
                         "or drop min_prob")
    return check_fraction(min_prob, "min_prob")


def corrected_labels(
    run: Run | str | os.PathLike | Analysis,
    *,
    auto: str = "keep",
    min_prob: float | None = None,
    options: AnalysisOptions | None = None,
    scorer: str | None = None,
    window: str | None = None,
    rule: str | None = None,
    k: int | None = None,
    noise_rate: float | None = None,
) -> CorrectedLabels:
    """The labels a new run should train on, from a run, its review decisions and a policy
    for flagged samples nobody reviewed (see the module docstring for the order).

    Args:
        run: a run directory with labels.parquet, an open :class:`gwa_diag.store.Run`, or
            an :class:`~gwa_diag.analysis.pipeline.Analysis` of the run already made (its
            flagged set is used as it is).
        auto: what to do with flagged samples without a decision (:data:`AUTO_POLICIES`).
        min_prob: with ``auto="relabel"``, the lowest ``suggested_prob`` (mean predicted
            probability of the suggestion, higher = more confident) taken; default 0.
        options: the analysis options (:class:`~gwa_diag.analysis.options.AnalysisOptions`),
            or, not both, the keywords below. Beside an Analysis they must agree with its
            own, a default spelled out included
            (:meth:`~gwa_diag.analysis.options.AnalysisOptions.check_agrees`).
        scorer: as for :func:`gwa_diag.analysis.pipeline.analyze`; None takes its default,
            so the flagged set is the one ``gwa-diag rank`` lists with the same options.
        window: as for ``analyze``.
        rule: as for ``analyze``.
        k: as for ``analyze``.
        noise_rate: as for ``analyze``.

    Raises:
        InputError: an unknown policy or analysis option, options that disagree with the
            given Analysis, a bad ``min_prob``, a run without labels.parquet, a decision for
            a sample id not in the run, or a decision label outside the run's classes.
            Checked before anything is returned; nothing is written.
        RunDirError: not a run directory.
    """
    threshold = check_policy(auto, min_prob)
    keywords = {"scorer": scorer, "window": window, "rule": rule, "k": k, "noise_rate": noise_rate}
    # Options are checked before any data is read.
    if isinstance(run, Analysis):
        run.options.check_agrees(options, **keywords)
        the_run = run.run
    else:
        chosen = AnalysisOptions.from_call(options, **keywords)
        the_run = open_run(run)
    given = _given_labels(the_run)
    decisions = latest_decisions(the_run)
    _check_decision_ids(the_run, decisions, given)
    analysis = run if isinstance(run, Analysis) else analyze(the_run, options=chosen)
    _check_decision_labels(the_run, decisions, _num_classes(the_run, analysis))
    return _apply(the_run, given, decisions, analysis, auto=auto, min_prob=threshold)


def _given_labels(run: Run) -> pd.DataFrame:
    labels = run.labels()
    if labels is None:
        raise InputError(
            f"{run.path} has no labels.parquet, so the labels it trained on are unknown: runs of "
            "`gwa-diag train` write it; in your own loop call recorder.writer.write_labels(sample_ids, labels)"
        )
    keep = ["sample_id", "label"] + (["path"] if "path" in labels.columns else [])
    return labels[keep].sort_values("sample_id", kind="stable").reset_index(drop=True)


def _num_classes(run: Run, analysis: Analysis) -> int:
    if run.num_classes:
        return int(run.num_classes)
    if run.class_names:
        return len(run.class_names)
    return int(analysis.summary.attrs["num_classes"])


def _decision_file_names(run: Run, timestamps: pd.Series) -> list[str]:
    """The decision files of the given decisions (file names start with the timestamp), so
    that an error can say which file to delete."""
    by_ns = {f.name.split("-", 1)[0]: f.name for f in decision_files(run.path)}
    return [by_ns.get(f"{pd.Timestamp(t).value:020d}", "?") for t in timestamps]


def _examples(run: Run, decisions: pd.DataFrame, ids: pd.Index) -> str:
    """The first three of ``ids`` with their decision files, for an error message."""
    files = _decision_file_names(run, decisions.loc[ids[:3], "timestamp"])
    return ", ".join(f"{int(s)} ({f})" for s, f in zip(ids[:3], files))


def _check_decision_ids(run: Run, decisions: pd.DataFrame, given: pd.DataFrame) -> None:
    unknown = decisions.index[~decisions.index.isin(given["sample_id"])]
    if len(unknown):
        shown = _examples(run, decisions, unknown)
        raise InputError(
            f"{len(unknown)} review decision(s) under {run.path / RELABEL_DIR} are for sample ids not in this "
            f"run (e.g. {shown}): were they copied from another run? Delete those decision files, or "
            "export the labels of the run they belong to"
        )


def _check_decision_labels(run: Run, decisions: pd.DataFrame, num_classes: int) -> None:
    sets_label = decisions["decision"].isin(["accept", "relabel"])
    new = decisions["new_label"]
    missing = decisions.index[sets_label & new.isna()]
    bad = decisions.index[sets_label & new.notna() & ((new < 0) | (new >= num_classes)).fillna(False)]
    for ids, what in ((missing, "have no new_label"), (bad, f"set a label outside 0..{num_classes - 1}")):
        if len(ids):
            shown = _examples(run, decisions, ids)
            raise InputError(
                f"{len(ids)} accept/relabel decision(s) under {run.path / RELABEL_DIR} {what} (e.g. sample id "
                f"{shown}): record a new decision for each (the latest wins), or delete those files"
            )


def _apply(
    run: Run,
    given: pd.DataFrame,
    decisions: pd.DataFrame,
    analysis: Analysis,
    *,
    auto: str,
    min_prob: float | None,
) -> CorrectedLabels:
    ids = given["sample_id"].to_numpy(np.int64)
    given_label = given["label"].to_numpy(np.int64)
    label = given_label.copy()
    changed_by = np.full(len(ids), "", dtype=object)
    index = pd.Index(ids)

    # 1. Decisions (the latest per sample): a reviewer's word beats any automatic rule.
    at = index.get_indexer(decisions.index)
    kind = decisions["decision"].to_numpy(object)
    sets = np.isin(kind, ["accept", "relabel"])
    label[at[sets]] = decisions["new_label"].to_numpy()[sets].astype(np.int64)
    # (A loop over decisions is fine: people make them, a few thousand at most.)
    changed_by[at] = np.array([f"decision:{k}" for k in kind], dtype=object)

    # 2. The policy, for flagged samples nobody decided (flagged ids all come from the run's
    #    own records, so they are in labels.parquet; any that are not are left alone).
    flagged = analysis.flagged
    undecided = flagged[~flagged.index.isin(decisions.index) & flagged.index.isin(index)]
    pos = index.get_indexer(undecided.index)
    changed_by[pos] = "auto:keep"
    excluded_ids = np.zeros(0, dtype=np.int64)
    reasons = np.zeros(0, dtype=object)
    if auto == "drop":
        changed_by[pos] = "auto:drop"
        excluded_ids = undecided.index.to_numpy(np.int64)
        reasons = ("auto:drop: " + undecided["reason"].astype(str)).to_numpy(object)
    elif auto == "relabel":
        suggested = undecided["suggested_label"].astype("Int64")
        confident = (suggested.notna() & (undecided["suggested_prob"] >= min_prob)).to_numpy(bool)
        new = suggested.fillna(-1).to_numpy(np.int64)
        take = confident & (new != given_label[pos])
        label[pos[take]] = new[take]
        changed_by[pos[take]] = "auto:relabel"

    labels = pd.DataFrame({"sample_id": ids})
    if "path" in given.columns:
        labels["path"] = given["path"].to_numpy()
    labels["label"], labels["given_label"], labels["changed_by"] = label, given_label, changed_by
    excluded = labels.set_index("sample_id").loc[excluded_ids].reset_index()
    excluded = excluded[["sample_id", *(["path"] if "path" in labels.columns else [])]].assign(reason=reasons)
    excluded = excluded.sort_values("sample_id", kind="stable").reset_index(drop=True)

    changed = label != given_label
    from_decision = np.char.startswith(changed_by.astype(str), "decision:")
    opts = analysis.options
    provenance = {
        "format": PROVENANCE_FORMAT,
        "parent_run_id": run.meta.get("run_id"),
        "parent_run": str(run.path.resolve()),
        "analysis": {
            "scorer": opts.scorer, "window": opts.window, "rule": opts.rule, "k": opts.k,
            "noise_rate": opts.noise_rate, "gwa_epoch": analysis.selection.epoch,
            "selected_epoch": analysis.selection.used_epoch,
        },
        "auto": auto,
        "min_prob": min_prob,
        "counts": {
            "rows": int(len(ids)),
            "decisions": int(len(decisions)),
            "changed_by_decisions": int((changed & from_decision).sum()),
            "changed_by_auto": int((changed & ~from_decision).sum()),
            "dropped": int(len(excluded)),
            "flagged": int(len(flagged)),
            "flagged_without_decision": int(len(undecided)),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "gwa_diag_version": __version__,
    }
    return CorrectedLabels(labels=labels, excluded=excluded, provenance=provenance)


def write_corrected_labels(result: CorrectedLabels, out: str | os.PathLike) -> CorrectedPaths:
    """Write the label file ``out`` (``.csv``), ``<stem>.excluded.csv`` and
    ``<stem>.provenance.json``, each atomically; returns their paths.

    The provenance sidecar goes last and records the SHA-256 of the other two, so a label
    file edited after the export is told apart from the one the provenance describes.

    Raises:
        InputError: ``out`` is not a ``.csv`` name, or any of the three files exists already
            (checked before anything is written: nothing is replaced).
    """
    paths = check_new_outputs(out)  # before anything is written
    labels_csv = result.labels.to_csv(index=False).encode("utf-8")
    excluded_csv = result.excluded.to_csv(index=False).encode("utf-8")
    atomic_write_bytes(paths.labels, labels_csv)
    atomic_write_bytes(paths.excluded, excluded_csv)
    provenance = {
        **result.provenance,
        "files": {"labels": paths.labels.name, "excluded": paths.excluded.name},
        "sha256": {"labels": hashlib.sha256(labels_csv).hexdigest(),
                   "excluded": hashlib.sha256(excluded_csv).hexdigest()},
    }
    text = json.dumps(provenance, indent=2) + "\n"
    atomic_write_bytes(paths.provenance, text.encode("utf-8"))
    return paths


def check_new_outputs(out: str | os.PathLike) -> CorrectedPaths:
    """The three output paths for ``out`` (:func:`corrected_paths`), checked to be new.

    Raises:
        InputError: ``out`` is not a ``.csv`` name or is a folder, or any of the three files
            exists already: a label set (possibly one a run trained on) is data, never replaced.
    """
    paths = corrected_paths(out)
    if paths.labels.is_dir():
        raise InputError(f"the label file is a folder ({paths.labels}); pass a file name, e.g. "
                         f"{paths.labels / 'corrected.csv'}")
    existing = [p for p in paths.all() if p.exists()]
    if existing:
        verb = "exists" if len(existing) == 1 else "exist"
        raise InputError(
            f"{', '.join(map(str, existing))} {verb} already and would be replaced: pass another --out "
            "name, or delete the old files (a run may have trained on them) if they are no longer needed"
        )
    return paths


def read_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """Read a provenance sidecar written by :func:`write_corrected_labels`."""
    p = Path(path)
    try:
        content = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {p} as the JSON a label export writes ({exc}): delete it or export "
                         "the labels again with gwa-diag labels") from exc
    if not isinstance(content, dict) or content.get("format") != PROVENANCE_FORMAT:
        raise InputError(f"{p} is not a provenance file of gwa-diag labels (no format {PROVENANCE_FORMAT!r}): "
                         "rename or delete it, it sits where train --labels looks for one")
    return content


def trained_on(run_meta: dict[str, Any]) -> dict[str, Any] | None:
    """Where a run's labels came from, when it trained on a ``gwa-diag labels`` export:
    ``parent_run_id``, ``parent_run``, ``changed_by_review``, ``changed_by_auto``, ``auto``,
    ``excluded`` (samples this run left out), ``label_file``, ``label_file_matches`` and a
    ``line`` for people. None for any other run. Reads run.json's ``label_provenance`` and
    ``exclusion`` (written by ``gwa-diag train --labels/--exclude``)."""
    prov = run_meta.get("label_provenance")
    if not isinstance(prov, dict):
        return None
    counts = prov.get("counts") if isinstance(prov.get("counts"), dict) else {}
    exclusion = run_meta.get("exclusion") if isinstance(run_meta.get("exclusion"), dict) else {}
    info = {
        "parent_run_id": prov.get("parent_run_id"),
        "parent_run": prov.get("parent_run"),
        "changed_by_review": counts.get("changed_by_decisions"),
        "changed_by_auto": counts.get("changed_by_auto"),
        "auto": prov.get("auto"),
        "excluded": int(exclusion.get("count", 0)),
        "label_file": prov.get("label_file"),
        "label_file_matches": prov.get("label_file_matches", True),
    }
    info["line"] = (
        f"trained on corrected labels from run {info['parent_run_id']} ({info['parent_run']}): "
        f"{info['changed_by_review']} changed by review, {info['changed_by_auto']} by the auto policy "
        f"{info['auto']}, {info['excluded']} excluded"
        + ("" if info["label_file_matches"] else " (the label file was edited after the export)")
    )
    return info
