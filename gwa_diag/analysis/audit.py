"""A verified sample: which samples a person should check, what they answered, and what the
answers say about the whole run (:mod:`gwa_diag.analysis.survey` does the statistics).

One recording cannot say how many of its labels are wrong; a few hundred labels checked by
a person can, when the tool chooses which ones. The design is a stratified random sample
along the default ranking:

* the samples are split into :data:`DEFAULT_STRATA` strata of equal size by their rank;
* each stratum gets a share of the ``n`` samples to verify by Neyman allocation
  (``n_h`` proportional to ``N_h sqrt(p_h (1 - p_h))``, with ``p_h`` a guess of the
  stratum's share of wrong labels: its mean of ``0.08 + 0.45 unfitted``, clipped to
  [0.05, 0.95]: a guess that only moves the precision, never the validity), at least
  :data:`MIN_PER_STRATUM` each. The map is the share truly wrong at ``unfitted`` = 0 and 1
  over the tuning cells of ``bench/audit.py`` (each run weighing equally; linear between).
  Why not the share of unfitted samples itself: it takes them all for wrong ones, and where a
  weak model leaves many right labels unfitted (few wrong labels, a short run) it starves the
  lower strata, and the interval came out wider than a plain random sample's. Why five
  strata: with more, more strata hold few wrong labels and the interval's coverage fell for
  barely narrower intervals. ``bench/audit.py`` measures both;
* within each stratum the samples are put in a random order (the recorded seed) once, and
  the first ``n_h`` are the sample: growing the sample later takes the next ones, so every
  answer already given stays part of a simple random sample of its stratum.

Files, under ``RUN/audit/`` (:data:`AUDIT_DIR`):

* ``design.json``: the audit id, the seed, the strata (ranks, sizes, verified sizes), and
  where the ranking came from (the report id of ``analysis/report.json`` when it was that
  ranking, the scorer and window);
* ``frame.parquet``: every sample's stratum, rank, given label and place in its stratum's
  random order (the design, frozen: a later analysis of the run does not move it);
* ``sheet.csv``: the samples to verify, in random order, with an empty ``verified_label``
  column (answered ones filled in) for a labelling team;
* ``answers/``: one Parquet file per batch of answers, never rewritten (as ``relabels/``):
  the latest answer for a sample wins.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gwa_diag.analysis.survey import Interval, RecallBound, fit_p_wrong, recall_bound, stratified_total
from gwa_diag.analysis.truth import class_indices, read_table_file
from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.store import Run, atomic_write_bytes, atomic_write_table, open_run

__all__ = [
    "AUDIT_DIR", "DEFAULT_STRATA", "MIN_PER_STRATUM", "Design", "AuditResult", "allocate", "stratify", "draw_sample", "read_design", "read_answer_file",
    "record_answers", "latest_answers", "audit_result", "has_audit", "sheet_frame", "review_status",
]

AUDIT_DIR = "audit"
DEFAULT_STRATA = 5
MIN_PER_STRATUM = 2
#: The guess of each stratum's share of wrong labels that steers the allocation is clipped to
#: this range, so no stratum is starved by a guess of 0 or 1.
_GUESS_RANGE = (0.05, 0.95)
#: The guess of the share of wrong labels among samples with a given ``unfitted`` share: the
#: share truly wrong at ``unfitted`` = 0 and 1 over the tuning cells (module docstring).
_GUESS_AT_FITTED, _GUESS_AT_UNFITTED = 0.08, 0.53

ANSWER_SCHEMA = pa.schema([
    pa.field("sample_id", pa.int64(), nullable=False),
    pa.field("verified_label", pa.int32(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("timestamp", pa.timestamp("ns", tz="UTC"), nullable=False),
    pa.field("session", pa.string()),
])


def _audit_dir(run: Run) -> Path:
    return run.path / AUDIT_DIR


@dataclass(frozen=True, eq=False)
class Design:
    """A verified sample's design (see the module docstring).

    Attributes:
        audit_id: names this design; answer sheets carry it.
        seed: of the random orders within the strata.
        meta: design.json as read (strata, source ranking, created time).
        frame: one row per sample (index ``sample_id``): ``rank`` (1 = most suspicious, at
            design time), ``stratum`` (0 = top), ``order`` (place in the stratum's random
            order), ``given`` (the label trained on), ``drawn`` (in the sample).
    """

    audit_id: str
    seed: int
    meta: dict[str, Any]
    frame: pd.DataFrame

    @property
    def n(self) -> int:
        return int(self.frame["drawn"].sum())

    @property
    def population(self) -> np.ndarray:
        """Per stratum, its number of samples ``N_h``."""
        return self.frame.groupby("stratum").size().sort_index().to_numpy()

    @property
    def sampled(self) -> np.ndarray:
        """Per stratum, the number drawn ``n_h``."""
        return self.frame.groupby("stratum")["drawn"].sum().sort_index().to_numpy().astype(int)

    @property
    def drawn(self) -> pd.DataFrame:
        """The drawn samples' rows of ``frame``."""
        return self.frame[self.frame["drawn"]]


def read_design(run_or_path: Run | str | os.PathLike) -> Design | None:
    """The run's audit design, or None when none was drawn."""
    run = open_run(run_or_path)
    folder = _audit_dir(run)
    if not (folder / "design.json").is_file():
        return None
    meta = json.loads((folder / "design.json").read_text())
    frame = pd.read_parquet(folder / "frame.parquet").set_index("sample_id")
    sampled = {int(s["stratum"]): int(s["sampled"]) for s in meta["strata"]}
    frame["drawn"] = frame["order"] < frame["stratum"].map(sampled)
    return Design(audit_id=str(meta["audit_id"]), seed=int(meta["seed"]), meta=meta, frame=frame)


def stratify(ranking: pd.DataFrame, strata: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The design's frame for a ranking (most suspicious first, index ``sample_id``, with
    ``rank``, ``label`` and, when known, ``unfitted``): ``strata`` strata of equal size by
    rank, a random order within each (``seed``), and each stratum's guessed share of wrong
    labels (its mean of ``0.08 + 0.45 unfitted``, clipped), which steers the
    allocation. Returns (frame with ``rank``, ``stratum``, ``given``, ``order``; guesses)."""
    total = len(ranking)
    rng = np.random.default_rng(seed)
    stratum = (np.arange(total) * strata) // total  # equal sizes by rank, 0 = top
    frame = pd.DataFrame({"rank": ranking["rank"].to_numpy(np.int64), "stratum": stratum.astype(np.int64),
                          "given": ranking["label"].to_numpy(np.int64)}, index=ranking.index)
    order = np.empty(total, dtype=np.int64)
    for h in range(strata):
        members = np.flatnonzero(stratum == h)
        order[members] = rng.permutation(len(members))
    frame["order"] = order
    unfitted = ranking["unfitted"].to_numpy(float) if "unfitted" in ranking else np.full(total, 0.5)
    unfitted = np.where(np.isnan(unfitted), 0.5, unfitted)
    share = _GUESS_AT_FITTED + (_GUESS_AT_UNFITTED - _GUESS_AT_FITTED) * unfitted
    guess = np.array([np.mean(share[stratum == h]) if (stratum == h).any() else 0.5 for h in range(strata)])
    return frame, np.clip(guess, *_GUESS_RANGE)


def allocate(n: int, sizes: np.ndarray, guess: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Neyman allocation of ``n`` over strata of ``sizes`` (``n_h`` proportional to
    ``N_h sqrt(g_h (1 - g_h))`` for the guesses ``guess``), at least ``floor`` each (already
    drawn, or the minimum), at most the stratum's size; largest remainders round it."""
    weight = sizes * np.sqrt(guess * (1 - guess))
    out = np.minimum(np.maximum(floor, 0), sizes).astype(np.int64)
    for _ in range(len(sizes) + 1):
        left = n - out.sum()
        open_ = out < sizes
        if left <= 0 or not open_.any():
            break
        share = np.where(open_, weight, 0.0)
        share = share / share.sum() if share.sum() > 0 else open_ / open_.sum()
        # The total each open stratum would get; strata already above it keep theirs.
        target = np.minimum(sizes, np.maximum(out, (out.sum() + left) * share * (share > 0)))
        extra = np.floor(target).astype(np.int64) - out
        extra = np.maximum(extra, 0)
        if extra.sum() > left:
            extra = np.floor(extra * left / extra.sum()).astype(np.int64)
        out += extra
        left = n - out.sum()
        if left > 0:
            # Largest remainders, one each, among strata with room.
            remainder = np.where(out < sizes, target - np.floor(target) + weight * 1e-12, -np.inf)
            for h in np.argsort(-remainder)[:left]:
                if out[h] < sizes[h]:
                    out[h] += 1
    return out


def draw_sample(run_or_path: Run | str | os.PathLike, n: int, *, seed: int | None = None,
                strata: int = DEFAULT_STRATA, analysis: Any = None) -> Design:
    """Draw ``n`` samples to verify, or grow the run's existing sample to ``n``.

    A new design ranks the run with the default analysis (or ``analysis``, an
    :class:`~gwa_diag.analysis.pipeline.Analysis` of it), splits the ranking into ``strata``
    strata of equal size and allocates ``n`` over them (module docstring). Growing keeps the
    strata, the seed and every drawn sample, and draws the next ones in each stratum's
    random order. Writes design.json, frame.parquet and sheet.csv atomically.

    Raises:
        InputError: ``n`` below 1, above the number of samples, below the number already
            drawn, or fewer samples than strata; a ``seed`` or ``strata`` that differs from
            the existing design's.
    """
    run = open_run(run_or_path)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise InputError(f"--n must be a whole number >= 1, got {n!r}")
    n = int(n)
    existing = read_design(run)
    if existing is not None:
        if seed is not None and int(seed) != existing.seed:
            raise InputError(f"the run's audit {existing.audit_id} was drawn with seed {existing.seed}, not {seed}; "
                             "leave --seed out to grow it")
        if strata != DEFAULT_STRATA and strata != len(existing.population):
            raise InputError(f"the run's audit {existing.audit_id} has {len(existing.population)} strata, not {strata}")
        if n < existing.n:
            raise InputError(f"the run's audit {existing.audit_id} already holds {existing.n} samples; --n must be at "
                             f"least {existing.n} to grow it (answers are never thrown away)")
        design = existing
        frame = existing.frame.drop(columns=["drawn"])
        guess = np.asarray([s["guess"] for s in existing.meta["strata"]], dtype=float)
        sizes = existing.population
        floor = existing.sampled
    else:
        if strata < 1:
            raise InputError(f"strata must be >= 1, got {strata}")
        if analysis is None:
            from gwa_diag.analysis.pipeline import analyze  # noqa: PLC0415 (the pipeline imports this module)

            analysis = analyze(run)
        ranking = analysis.ranking
        total = len(ranking)
        if n > total:
            raise InputError(f"--n {n} is more than the run's {total} samples")
        if total < strata:
            raise InputError(f"the run has {total} samples, fewer than {strata} strata")
        seed = int(seed) if seed is not None else int(np.random.SeedSequence().entropy % (2**31))
        frame, guess = stratify(ranking, strata, seed)
        sizes = np.bincount(frame["stratum"].to_numpy(), minlength=strata)
        floor = np.minimum(sizes, MIN_PER_STRATUM)
        design = None
    if n > int(sizes.sum()):
        raise InputError(f"--n {n} is more than the run's {int(sizes.sum())} samples")
    sampled = allocate(n, sizes, guess, floor)
    audit_id = design.audit_id if design is not None else uuid.uuid4().hex
    meta = {
        "audit_id": audit_id,
        "seed": int(design.seed if design is not None else seed),  # type: ignore[arg-type]
        "created": design.meta["created"] if design is not None else time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "grown": time.strftime("%Y-%m-%dT%H:%M:%S%z") if design is not None else None,
        "n": int(sampled.sum()),
        "source": design.meta["source"] if design is not None else _source(run, analysis),
        "allocation": "Neyman on a guess of each stratum's share of wrong labels (0.08 + 0.45 unfitted), at least "
                      f"{MIN_PER_STRATUM} each",
        "strata": [
            {"stratum": h, "rank_first": int(frame.loc[frame["stratum"] == h, "rank"].min()),
             "rank_last": int(frame.loc[frame["stratum"] == h, "rank"].max()), "size": int(sizes[h]),
             "sampled": int(sampled[h]), "guess": float(guess[h])}
            for h in range(len(sizes))
        ],
    }
    folder = _audit_dir(run)
    if design is None:
        table = pa.Table.from_pandas(frame.reset_index()[["sample_id", "rank", "stratum", "given", "order"]],
                                     preserve_index=False)
        atomic_write_table(folder / "frame.parquet", table)
    atomic_write_bytes(folder / "design.json", (json.dumps(meta, indent=2) + "\n").encode())
    out = read_design(run)
    assert out is not None
    write_sheet(run, out)
    return out


def _source(run: Run, analysis: Any) -> dict[str, Any]:
    """Where the ranking came from: the report id when analysis/report.json holds this ranking."""
    report_id = None
    report = run.path / "analysis" / "report.json"
    options = analysis.options
    if report.is_file():
        try:
            saved = json.loads(report.read_text())
            if saved.get("scorer") == options.scorer and saved.get("window", {}).get("name", saved.get("window")) \
                    in (options.window, None):
                report_id = saved.get("report_id")
        except (OSError, ValueError, AttributeError):
            report_id = None
    return {"report_id": report_id, "scorer": options.scorer, "window": options.window,
            "window_epochs": list(analysis.summary.attrs.get("window_epochs", [])),
            "n_samples": int(len(analysis.ranking))}


def sheet_frame(run_or_path: Run | str | os.PathLike, design: Design) -> pd.DataFrame:
    """The sheet to verify: the drawn samples in random order (seeded by the audit), with
    ``audit_id``, ``sample_id``, ``path`` (when the run knows its files), ``given_label``
    (and ``given_name``), and ``verified_label``: the latest answer, else empty."""
    run = open_run(run_or_path)
    drawn = design.drawn
    order = np.random.default_rng(design.seed + 1).permutation(len(drawn))
    rows = drawn.iloc[order]
    out = pd.DataFrame({"audit_id": design.audit_id, "sample_id": rows.index.to_numpy(np.int64)})
    labels = run.labels()
    if labels is not None and "path" in labels.columns:
        out["path"] = labels.set_index("sample_id")["path"].reindex(rows.index).to_numpy()
    out["given_label"] = rows["given"].to_numpy(np.int64)
    names = run.class_names
    if names:
        out["given_name"] = [names[i] if 0 <= i < len(names) else "" for i in out["given_label"]]
    answers = latest_answers(run)
    out["verified_label"] = pd.array(answers["verified_label"].reindex(rows.index).to_numpy(), dtype="Int64") \
        if len(answers) else pd.array([pd.NA] * len(out), dtype="Int64")
    return out


def write_sheet(run_or_path: Run | str | os.PathLike, design: Design) -> Path:
    """Write ``RUN/audit/sheet.csv`` (:func:`sheet_frame`) atomically."""
    run = open_run(run_or_path)
    buffer = io.StringIO()
    sheet_frame(run, design).to_csv(buffer, index=False)
    return atomic_write_bytes(_audit_dir(run) / "sheet.csv", buffer.getvalue().encode("utf-8"))


def read_answer_file(path: str | os.PathLike, run_or_path: Run | str | os.PathLike, design: Design) -> pd.DataFrame:
    """Answers from a filled-in sheet, or any CSV / TSV / Parquet file with columns
    ``sample_id`` and ``verified_label`` (or ``clean_label``; class indices or the run's class
    names). Rows without an answer are skipped.

    Returns:
        frame (sample_id, verified_label) of the answered samples that are in the drawn
        sample; ``attrs["outside"]`` counts answered samples of the run outside it (left out).

    Raises:
        MissingFileError: the file does not exist.
        InputError: unreadable, without the columns, from another audit (its ``audit_id``),
            with no answer at all, with ids the run does not have, or labels that are not the
            run's classes.
    """
    run = open_run(run_or_path)
    frame = read_table_file(Path(path), what="answer sheet", columns=("sample_id",))
    column = "verified_label" if "verified_label" in frame.columns else "clean_label" if "clean_label" in frame else None
    if column is None:
        raise InputError(f"answer sheet {path} has no verified_label column (found: {', '.join(map(str, frame.columns))}); "
                         "fill in the sheet gwa-diag audit wrote, or pass a file with sample_id, verified_label")
    if "audit_id" in frame.columns:
        other = sorted({str(v) for v in frame["audit_id"].dropna().unique()} - {design.audit_id})
        if other:
            raise InputError(f"answer sheet {path} belongs to audit {other[0]}, not to this run's audit "
                             f"{design.audit_id}; pass the sheet of {run.path / AUDIT_DIR / 'sheet.csv'}")
    answered = frame[frame[column].notna() & (frame[column].astype(str).str.strip() != "")]
    if answered.empty:
        raise InputError(f"answer sheet {path} holds no answer: fill in its {column} column")
    if answered["sample_id"].duplicated().any():
        raise InputError(f"answer sheet {path} answers some sample_id more than once")
    ids = answered["sample_id"].astype("int64")
    unknown = ids[~ids.isin(design.frame.index)]
    if len(unknown):
        raise InputError(f"answer sheet {path}: {len(unknown)} sample id(s) are not in the run, e.g. "
                         f"{', '.join(map(str, unknown.iloc[:5]))}; check that it uses the dataset's sample ids")
    labels = class_indices(answered.set_index(ids)[column], run, f"answer sheet {path}", column)
    inside = labels[labels.index.isin(design.drawn.index)]
    out = pd.DataFrame({"sample_id": inside.index.to_numpy(np.int64), "verified_label": inside.to_numpy(np.int64)})
    out.attrs["outside"] = int(len(labels) - len(inside))
    return out


def record_answers(run_or_path: Run | str | os.PathLike, answers: pd.DataFrame, *, source: str,
                   session: str | None = None) -> Path:
    """Append ``answers`` (sample_id, verified_label) as one new file under ``audit/answers/``
    (never rewritten; the latest answer for a sample wins). Labels are checked against the
    run's classes and ids against the drawn sample before anything is written."""
    run = open_run(run_or_path)
    design = read_design(run)
    if design is None:
        raise InputError(f"{run.path} has no audit yet: draw one first (gwa-diag audit {run.path} --n 200)")
    ids = answers["sample_id"].astype("int64").to_numpy()
    labels = answers["verified_label"].astype("int64").to_numpy()
    outside = ids[~np.isin(ids, design.drawn.index.to_numpy())]
    if len(outside):
        raise InputError(f"sample id(s) {', '.join(map(str, outside[:5]))} are not in the audit's sample")
    classes = run.num_classes or (len(run.class_names) if run.class_names else None)
    bad = labels[(labels < 0) | (labels >= classes)] if classes else labels[labels < 0]
    if len(bad):
        raise InputError(f"verified_label {int(bad[0])} is not one of the run's classes [0, {classes})")
    now = time.time_ns()
    table = pa.table({
        "sample_id": pa.array(ids, pa.int64()), "verified_label": pa.array(labels, pa.int32()),
        "source": pa.array([source] * len(ids), pa.string()),
        "timestamp": pa.array(now + np.arange(len(ids)), pa.timestamp("ns", tz="UTC")),
        "session": pa.array([session or f"pid{os.getpid()}"] * len(ids), pa.string()),
    }, schema=ANSWER_SCHEMA)
    name = f"{now:020d}-{uuid.uuid4().hex}.parquet"
    return atomic_write_table(_audit_dir(run) / "answers" / name, table)


def _answer_files(run: Run) -> list[Path]:
    folder = _audit_dir(run) / "answers"
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith(".")) if folder.is_dir() else []


def has_audit(run_or_path: Run | str | os.PathLike) -> bool:
    """Whether the run has an audit design (no file is read)."""
    return (_audit_dir(open_run(run_or_path)) / "design.json").is_file()


def latest_answers(run_or_path: Run | str | os.PathLike) -> pd.DataFrame:
    """The latest answer per sample (index ``sample_id``): ``verified_label``, ``timestamp``."""
    run = open_run(run_or_path)
    files = _answer_files(run)
    if not files:
        return pd.DataFrame({"verified_label": pd.Series(dtype="int64"), "timestamp": pd.Series(dtype="datetime64[ns, UTC]")},
                            index=pd.Index([], name="sample_id", dtype="int64"))
    table = pa.concat_tables([pq.read_table(f, schema=ANSWER_SCHEMA) for f in files])
    frame = table.to_pandas().sort_values("timestamp", kind="stable")
    latest = frame.groupby("sample_id").last()
    return latest[["verified_label", "timestamp"]].astype({"verified_label": "int64"})


@dataclass(frozen=True, eq=False)
class AuditResult:
    """What the verified sample says about the run (:func:`audit_result`).

    Attributes:
        audit_id: the design's id.
        drawn, answered: samples in the design's sample, and answered among them.
        complete: every stratum has at least one answer (else no interval can be made).
        count: the number of wrong labels in the run, with its interval (None until complete).
        per_class: the same per given label (class index -> Interval).
        flagged: the share of the flagged samples whose label is wrong (precision), with its
            interval; None when nothing is flagged.
        p_wrong: the calibrated probability that each label is wrong (by sample_id).
        review: how far a top-down review of the ranking has got (None without one).
        needed: a sentence for people when the answers are not enough yet.
    """

    audit_id: str
    drawn: int
    answered: int
    complete: bool
    count: Interval | None
    per_class: dict[int, Interval]
    flagged: Interval | None
    p_wrong: pd.Series | None
    review: RecallBound | None
    needed: str | None
    design: Design | None = None
    wrong: pd.Series | None = None  # answered samples: True = the label is wrong

    def precision_of(self, ids: pd.Index) -> Interval | None:
        """The share of the samples ``ids`` whose label is wrong, with its interval; None
        before every stratum has an answer, or for an empty set."""
        if not self.complete or self.design is None or self.wrong is None or len(ids) == 0:
            return None
        inside = pd.Series(self.design.frame.index.isin(ids), index=self.design.frame.index)
        total = _totals(self.design, self.wrong, inside)
        return None if total is None else total.share_of(len(ids))

    def line(self) -> str:
        """The count in one sentence for people."""
        if self.count is None:
            return f"verified sample: {self.answered} of {self.drawn} answered; {self.needed}"
        c = self.count
        text = (f"wrong labels: {c.estimate:,.0f} (95% interval {c.low:,.0f}-{c.high:,.0f}), from {self.answered} "
                f"verified samples")
        if self.flagged is not None:
            f = self.flagged
            text += f"; precision of the flagged set {f.estimate:.0%} ({f.low:.0%}-{f.high:.0%})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "audit_id": self.audit_id, "drawn": self.drawn, "answered": self.answered, "complete": self.complete,
            "count": self.count.as_dict() if self.count else None,
            "per_class": {str(k): v.as_dict() for k, v in self.per_class.items()},
            "flagged_precision": self.flagged.as_dict() if self.flagged else None,
            "review": self.review.as_dict() if self.review else None,
            "needed": self.needed,
        }


def _domain_counts(design: Design, wrong: pd.Series, domain: pd.Series) -> tuple[list[int], list[int], list[int]] | None:
    """Per stratum, within a domain of the samples (``domain``: True by sample_id): its size,
    its answered samples and the wrong labels among them. The answered samples of a domain
    are a simple random sample of the domain's part of the stratum (given their number), so
    each stratum's part is estimated on its own; a part without an answer is pooled with the
    next stratum down (the last with the one above). None when no sample of the domain was
    answered."""
    frame = design.frame
    inside = domain.reindex(frame.index).fillna(False).astype(bool)
    strata = frame.loc[inside, "stratum"]
    answered = wrong.index[inside.reindex(wrong.index).to_numpy()]
    size = strata.value_counts()
    n = frame.loc[answered, "stratum"].value_counts()
    x = wrong.loc[answered].groupby(frame.loc[answered, "stratum"]).sum()
    pop: list[int] = []
    smp: list[int] = []
    hit: list[int] = []
    carry = [0, 0, 0]
    for h in sorted(size.index):
        carry = [carry[0] + int(size[h]), carry[1] + int(n.get(h, 0)), carry[2] + int(x.get(h, 0))]
        if carry[1] > 0:
            pop.append(carry[0]), smp.append(carry[1]), hit.append(carry[2])
            carry = [0, 0, 0]
    if not pop:
        return None
    pop[-1] += carry[0]
    return pop, smp, hit


def _totals(design: Design, wrong: pd.Series, domain: pd.Series) -> Interval | None:
    """Interval of the number of wrong labels within ``domain`` (True by sample_id), from the
    answered samples (``wrong`` by sample_id: True = the label is wrong); None when no sample
    of the domain was answered."""
    counts = _domain_counts(design, wrong, domain)
    return None if counts is None else stratified_total(*counts)


def audit_result(run_or_path: Run | str | os.PathLike, *, summary: pd.DataFrame, score: pd.Series,
                 ranking_ids: pd.Index, review_target: float = 0.9) -> AuditResult | None:
    """What the run's verified sample says, or None when the run has no audit. The
    precision of a flagged set comes after, from :meth:`AuditResult.precision_of` (the
    ``p_wrong`` rule flags by this result's probabilities).

    Args:
        summary: the analysis' per-sample summary (for ``p_wrong``'s features).
        score: the ranking's score by sample_id (higher = more suspicious).
        ranking_ids: every sample id, most suspicious first (for the review's depth).
        review_target: the recall a top-down review should reach (default 90%).
    """
    from gwa_diag.analysis.relabel import latest_decisions  # noqa: PLC0415

    run = open_run(run_or_path)
    design = read_design(run)
    if design is None:
        return None
    answers = latest_answers(run)
    answers = answers[answers.index.isin(design.drawn.index)]
    given = design.frame["given"]
    wrong = answers["verified_label"] != given.reindex(answers.index)
    per_stratum = design.frame.loc[answers.index, "stratum"].value_counts()
    missing = [h for h in range(len(design.population)) if per_stratum.get(h, 0) == 0]
    base = dict(audit_id=design.audit_id, drawn=design.n, answered=int(len(answers)))
    if missing:
        left = int(design.drawn[design.drawn["stratum"].isin(missing)].shape[0])
        needed = (f"answer at least one sample in every stratum for an interval ({len(missing)} stratum(s) "
                  f"without an answer, {left} of their samples drawn)")
        return AuditResult(**base, complete=False, count=None, per_class={}, flagged=None, p_wrong=None, review=None,
                           needed=needed)
    everything = pd.Series(True, index=design.frame.index)
    count = _totals(design, wrong, everything)
    per_class = {int(c): interval for c in sorted(given.unique())
                 if (interval := _totals(design, wrong, given == c)) is not None}
    weights = design.frame.loc[answers.index, "stratum"].map(
        dict(enumerate(design.population / np.maximum(design.sampled, 1))))
    p_wrong = fit_p_wrong(summary, score, wrong, weights) if len(answers) >= 2 else None
    review = _review(run, design, wrong, ranking_ids, latest_decisions(run), review_target)
    return AuditResult(**base, complete=True, count=count, per_class=per_class, flagged=None, p_wrong=p_wrong,
                       review=review, needed=None, design=design, wrong=wrong)


def review_status(run_or_path: Run | str | os.PathLike, result: AuditResult, ranking_ids: pd.Index, *,
                  target: float = 0.9) -> RecallBound | None:
    """The recall of the top-down review made so far, as :attr:`AuditResult.review` but with
    the relabel decisions on disk now and another ``target`` (the app's relabel queue asks
    again after each decision without fitting the whole result again). None before every
    stratum has an answer, or before the top of ``ranking_ids`` has a decision."""
    from gwa_diag.analysis.relabel import latest_decisions  # noqa: PLC0415

    if not result.complete or result.design is None or result.wrong is None:
        return None
    run = open_run(run_or_path)
    return _review(run, result.design, result.wrong, ranking_ids, latest_decisions(run), target)


def _review(run: Run, design: Design, wrong: pd.Series, ranking_ids: pd.Index, decisions: pd.DataFrame,
            target: float) -> RecallBound | None:
    """The recall of the review made in the relabel queue: the top of the ranking decided
    without a gap, plus the verified sample below it (:func:`_domain_counts`)."""
    if decisions is None or len(decisions) == 0:
        return None
    decided = ranking_ids.isin(decisions.index)
    depth = int(np.argmin(decided)) if not decided.all() else len(decided)
    if depth == 0:
        return None
    top = decisions.reindex(ranking_ids[:depth])
    given = design.frame["given"].reindex(top.index)
    changed = top["decision"].isin(["accept", "relabel"]) & (top["new_label"].astype("Int64") != given.astype("Int64"))
    found = int(changed.fillna(False).sum())
    below = pd.Series(~design.frame.index.isin(ranking_ids[:depth]), index=design.frame.index)
    counts = _domain_counts(design, wrong, below)
    if counts is None:
        return None
    pop, smp, hit = counts
    return recall_bound(found, depth, pop, smp, hit, target=target)
