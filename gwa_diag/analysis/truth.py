"""Ground truth: which samples are truly mislabeled, read from a truth file or from
labels.parquet's ``clean_label``.

The result is a boolean Series indexed by ``sample_id`` (True = the given label differs
from the clean label). It is what :mod:`gwa_diag.analysis.metrics` scores against; reading
and checking the files is kept here, apart from the metric math.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gwa_diag.analysis.parts import vanished_parts_as_file_not_found
from gwa_diag.store import AnalysisError
from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.store import Run, open_run, read_listed_parts

__all__ = ["TruthCoverageWarning", "class_indices", "ground_truth", "given_labels", "read_table_file"]


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
    run = open_run(run_or_path)
    if truth_file is not None:
        clean = class_indices(_read_truth(Path(truth_file)), run, f"truth file {Path(truth_file)}", "clean_label")
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
        given = given_labels(run)
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


def class_indices(labels: pd.Series, run: Run, source: str, column: str) -> pd.Series:
    """``labels`` as class indices in [0, num_classes): class names are mapped through
    run.json's class names (:attr:`gwa_diag.store.Run.class_names`); anything else is refused
    with the values that do not fit (``source`` and ``column`` name them in the error)."""
    names = list(run.class_names or ())
    num_classes = run.num_classes or len(names) or None
    values = labels.dropna()
    if not pd.api.types.is_numeric_dtype(values):
        as_text = values.astype(str).str.strip()
        numeric = pd.to_numeric(as_text, errors="coerce")
        if numeric.notna().all():
            values = numeric
        else:
            lookup = {name: i for i, name in enumerate(names)}
            unknown = sorted(set(as_text) - set(lookup))
            if not names or unknown:
                known = (
                    f"the run's class names are {', '.join(names)}" if names
                    else "the run records no class names in run.json, so labels must be class indices"
                )
                raise InputError(
                    f"{source}: {column} holds {', '.join(map(repr, unknown[:5]))}, which are "
                    f"not class indices or class names ({known}); write class indices 0..{(num_classes or 1) - 1}"
                )
            values = as_text.map(lookup)
    if pd.api.types.is_float_dtype(values) and not np.all(np.mod(values.to_numpy(), 1) == 0):
        raise InputError(f"{source}: {column} holds non-integer values; write class indices")
    values = values.astype("int64")
    bad = values[(values < 0) | (values >= num_classes)] if num_classes else values[values < 0]
    if len(bad):
        raise InputError(
            f"{source}: {column} {int(bad.iloc[0])} (sample {bad.index[0]}) is outside the "
            f"run's classes [0, {num_classes}); {len(bad)} row(s) are out of range"
        )
    return values


_PARQUET_SUFFIXES = (".parquet", ".pq")
_TSV_SUFFIXES = (".tsv", ".tab")


def _read_truth(path: Path) -> pd.Series:
    frame = read_table_file(path, what="truth file", columns=("sample_id", "clean_label"))
    if frame["sample_id"].duplicated().any():
        raise InputError(f"truth file {path} lists some sample_id more than once")
    return frame.set_index("sample_id")["clean_label"]


def read_table_file(path: Path, *, what: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A small table a person wrote: Parquet when the name ends in ``.parquet`` or ``.pq`` (any
    case), tab-separated for ``.tsv``/``.tab``, else CSV; it must hold ``columns``. ``what``
    names the file in errors ("truth file", "answer sheet")."""
    if not path.exists():
        raise MissingFileError(
            f"{what} not found ({path}); pass a CSV or Parquet file with columns {', '.join(columns)}"
        )
    if path.is_dir():
        raise InputError(f"{what} is a directory ({path}); pass the CSV or Parquet file itself")
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
            f"write a Parquet file with columns {', '.join(columns)}" if kind == "Parquet"
            else f"write a {kind} file whose first line is the header {', '.join(columns)} "
                 "(Parquet files must end in .parquet or .pq)"
        )
        raise InputError(f"{what} could not be read as {kind}: {detail} ({path}); {fix}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        hint = (
            "; the header looks tab- or semicolon-separated: write commas, or name a tab-separated file .tsv"
            if kind == "CSV" and len(frame.columns) == 1 and any(c in str(frame.columns[0]) for c in "\t;")
            else ""
        )
        raise InputError(
            f"{what} {path} lacks columns {missing}; it needs {' and '.join(columns)} "
            f"(found: {', '.join(map(str, frame.columns))}){hint}"
        )
    return frame


def given_labels(run: Run) -> pd.Series:
    """The label each sample was trained on (Series sample_id -> label): labels.parquet, else
    the last recorded label of each sample in the complete epochs."""
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
