"""The run directory: the on-disk contract between training, analysis and the app.

Layout (schema version ``SCHEMA_VERSION``)::

    run.json                          metadata: schema_version, run_id, config, dataset spec ...
    epochs.parquet                    one row per completed epoch (GWA, moments, loss, acc ...)
    labels.parquet                    sample_id, label trained on, clean_label when known,
                                      path (the file, relative to the dataset's root) when known
    samples/epoch=E/part-R.parquet    one row per sample presentation in epoch E on rank R

Every file is written to a temporary name and renamed into place, so a crash or a
concurrent reader never sees half a file. An epoch counts as complete once its row is in
``epochs.parquet``; readers only show complete epochs, so a run that training is still
writing can be opened at any time.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from gwa_diag.checks import InputError

__all__ = [
    "SCHEMA_VERSION",
    "SAMPLE_SCHEMA",
    "RunDirError",
    "AnalysisError",
    "RunWriter",
    "Run",
    "open_run",
    "atomic_write_bytes",
    "atomic_write_table",
    "file_sha256",
    "WriteQueue",
]

SCHEMA_VERSION = 1
_META_KEY = b"gwa_diag.schema_version"

# One row per sample presentation. A sampler that repeats a sample inside an epoch gives
# several rows with the same sample_id, told apart by `step`.
SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),  # batch index counted across the run
        pa.field("label", pa.int32(), nullable=False),  # label trained on (possibly noisy)
        pa.field("alignment", pa.float32()),  # cos(-grad_W, W); lower = more suspicious
        pa.field("margin", pa.float32()),  # logit[label] - max other logit; lower = more suspicious
        pa.field("loss", pa.float32()),  # cross-entropy; higher = more suspicious
        pa.field("p_label", pa.float32()),  # softmax probability of the label; lower = more suspicious
        pa.field("pred", pa.int32()),  # argmax of the logits
        pa.field("p_pred", pa.float32()),  # softmax probability of pred (suggested-label confidence)
    ]
)

# Rows per row group of a sample part (parts are sorted by sample_id, then step).
PART_ROW_GROUP = 8_192

_EPOCH_TYPES = {
    "epoch": pa.int32(),
    "n": pa.int64(),
    "n_nan": pa.int64(),
    "mean": pa.float64(),
    "m2": pa.float64(),
    "m4": pa.float64(),
    "kurtosis": pa.float64(),
    "gwa": pa.float64(),
    "valid": pa.bool_(),
    "reason": pa.string(),
}


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (another run, missing, wrong version)."""


class AnalysisError(RunDirError):
    """The run cannot be analysed as asked (no complete epoch yet, no ground truth ...)."""


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str, error: type[Exception] = RunDirError) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (a folder, or a file created when missing)
    for the ``with`` block; raise ``error(busy)`` when another process holds it.

    Why flock rather than a lock file that is deleted afterwards: the kernel drops the lock
    when the process dies (kill -9 included), so a crash never leaves a stale lock behind.
    Where flock does not exist (not POSIX), nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    fd = os.open(path, os.O_RDONLY if path.is_dir() else os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise error(busy) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


_T = TypeVar("_T")

# How often a read is retried when a part it listed vanished before it was opened.
_READ_ATTEMPTS = 3


def read_listed_parts(read: Callable[[], _T]) -> _T:
    """Call ``read`` (which lists the complete epochs' parts and reads them) and call it
    again when a listed part vanished in between.

    Why: a resumed run forgets the epochs it re-records (:meth:`RunWriter.drop_epochs_from`)
    by first removing their ``epochs.parquet`` rows and then their parts. A reader that
    listed the parts just before can find one gone; listing again no longer includes that
    epoch, so the retry reads a consistent set."""
    for attempt in range(_READ_ATTEMPTS):
        try:
            return read()
        except FileNotFoundError:
            if attempt == _READ_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with mode 0666 and the kernel applies the process's current umask: the mode a
    # plain open() gives (a labeling team can read suspects.csv), with no umask juggling
    # that could race another thread. O_EXCL and a random name: no two writers share it.
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


class WriteQueue:
    """One background thread that writes a run's files in the order they were submitted.

    The recorder hands it each epoch's part and row, so that the training loop never waits
    for the disk; the engine hands it its checkpoints and run.json updates after them, so a
    checkpoint never claims an epoch whose records are not written yet."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gwa-diag-writer")
        self._inflight: list[Future] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the writer thread after everything submitted before it."""
        self._inflight.append(self._pool.submit(fn, *args))

    def flush(self) -> None:
        """Wait until everything submitted is done (re-raises a failed write)."""
        pending, self._inflight = self._inflight, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Flush, then stop the thread (also when the flush raises)."""
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (label files, checkpoints and reports that
    run.json or report.json point at are recorded with it, so a changed file is noticed)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and rename (never half-written)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return _atomic(Path(path), write)


def atomic_write_table(path: str | os.PathLike, table: pa.Table, *, row_group_size: int | None = None) -> Path:
    """Write a Parquet file atomically, tagged with the schema version."""
    meta = dict(table.schema.metadata or {})
    meta[_META_KEY] = str(SCHEMA_VERSION).encode()
    table = table.replace_schema_metadata(meta)
    return _atomic(
        Path(path), lambda tmp: pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
    )


def _epoch_table(frame: pd.DataFrame) -> pa.Table:
    fields = []
    for col in frame.columns:
        if col in _EPOCH_TYPES:
            fields.append(pa.field(col, _EPOCH_TYPES[col]))
        else:
            fields.append(pa.field(col, pa.Table.from_pandas(frame[[col]], preserve_index=False).schema[0].type))
    return pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)


class RunWriter:
    """Writes one run directory. Rank 0 owns run.json and epochs.parquet; every rank
    writes its own per-epoch sample parts.

    Opening a directory that already holds another run raises :class:`RunDirError`
    (nothing is touched); ``resume=True`` continues the run that is there.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        meta: dict[str, Any] | None = None,
        rank: int = 0,
        world_size: int = 1,
        resume: bool = False,
    ) -> None:
        self.path = Path(path)
        self.rank = int(rank)
        self.world_size = int(world_size)
        meta_path = self.path / "run.json"
        if self.rank != 0:
            # Rank 0 creates the directory; other ranks only add their own parts. Resuming,
            # they read run.json too (next_step: steps must go on counting on every rank).
            self.path.mkdir(parents=True, exist_ok=True)
            self.meta = {**(json.loads(meta_path.read_text()) if resume and meta_path.exists() else {}), **(meta or {})}
            return
        if meta_path.exists():
            existing = json.loads(meta_path.read_text())
            if not resume:
                raise RunDirError(
                    f"{self.path} already holds run {existing.get('run_id', '?')} "
                    f"(created {existing.get('created', '?')}). Choose a new output directory, "
                    "or resume that run (resume=True / --resume)."
                )
            _check_version(existing, self.path)
            self.meta = existing
            # A resumed run is training again, also one that had finished (more epochs).
            self.update_meta(status="running", **{k: v for k, v in (meta or {}).items() if k not in ("run_id", "created")})
            return
        if resume:
            raise RunDirError(f"cannot resume: {self.path} holds no run (no run.json). Start a new run instead.")
        if self.path.exists() and any(self.path.iterdir()):
            raise RunDirError(
                f"{self.path} is not empty and is not a gwa-diag run; choose a new or empty output directory."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta = {
            "schema_version": SCHEMA_VERSION,
            "run_id": uuid.uuid4().hex,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
            **(meta or {}),
        }
        self._write_meta()

    def _write_meta(self) -> None:
        atomic_write_bytes(self.path / "run.json", (json.dumps(self.meta, indent=2, default=_json_default) + "\n").encode())

    def update_meta(self, **values: Any) -> None:
        """Merge keys into run.json (rank 0 only; other ranks ignore the call)."""
        if self.rank != 0:
            return
        self.meta.update(values)
        self._write_meta()

    def write_samples(self, epoch: int, table: pa.Table) -> Path:
        """Atomically write this rank's rows for ``epoch`` (replaces a part left by a crash),
        sorted by sample id, then step."""
        if table.schema.remove_metadata() != SAMPLE_SCHEMA:
            table = table.cast(SAMPLE_SCHEMA)
        # Sorted rows in row groups of PART_ROW_GROUP rows give each row group a narrow
        # sample-id range, so reading one sample's trajectory skips all but one row group
        # per epoch by its statistics (10x faster at 500,000 samples per epoch) instead of
        # decoding every row of the run.
        table = table.take(pc.sort_indices(table, sort_keys=[("sample_id", "ascending"), ("step", "ascending")]))
        path = self.path / "samples" / f"epoch={int(epoch)}" / f"part-{self.rank}.parquet"
        return atomic_write_table(path, table, row_group_size=PART_ROW_GROUP)

    def write_epoch(self, row: dict[str, Any]) -> None:
        """Insert or replace one epoch's summary row in epochs.parquet (rank 0 only)."""
        if self.rank != 0:
            return
        path = self.path / "epochs.parquet"
        new = pd.DataFrame([row])
        if path.exists():
            old = pd.read_parquet(path)
            old = old[old["epoch"] != int(row["epoch"])]
            new = pd.concat([old, new], ignore_index=True) if len(old) else new
        new = new.sort_values("epoch").reset_index(drop=True)
        atomic_write_table(path, _epoch_table(new))

    def write_labels(
        self, sample_ids: Any, labels: Any, clean_labels: Any | None = None, *, paths: Any | None = None
    ) -> Path | None:
        """Write labels.parquet: the label each sample id was trained with and, when known,
        its ground-truth label (CIFAR-10-N clean labels, or the labels before injected noise)
        and its file (``paths``: strings relative to the dataset's root, as an image folder's
        or a manifest's ``relative_paths()`` gives them), which the suspects file and the app
        show so a labeling team can find each image. Rank 0 only."""
        if self.rank != 0:
            return None
        ids = np.asarray(sample_ids, dtype=np.int64)
        lab = np.asarray(labels, dtype=np.int32)
        if ids.shape != lab.shape or ids.ndim != 1:
            raise InputError(f"sample_ids {ids.shape} and labels {lab.shape} must be 1-D of equal length")
        if len(np.unique(ids)) != len(ids):
            raise InputError("sample_ids must be unique in labels.parquet")
        cols = {"sample_id": pa.array(ids), "label": pa.array(lab)}
        if clean_labels is not None:
            clean = np.asarray(clean_labels, dtype=np.int32)
            if clean.shape != ids.shape:
                raise InputError(f"clean_labels {clean.shape} must match sample_ids {ids.shape}")
            cols["clean_label"] = pa.array(clean)
        if paths is not None:
            files = [str(f) for f in paths]
            if len(files) != len(ids):
                raise InputError(f"paths has {len(files)} entries but sample_ids has {len(ids)}: give one path per sample")
            cols["path"] = pa.array(files, type=pa.string())
        return atomic_write_table(self.path / "labels.parquet", pa.table(cols))

    def drop_epochs_from(self, epoch: int) -> None:
        """Forget epochs ``epoch`` and later: their summary rows and sample parts (used when
        resuming from a checkpoint taken before them; they are recorded again)."""
        if self.rank != 0:
            return
        path = self.path / "epochs.parquet"
        if path.exists():
            old = pd.read_parquet(path)
            atomic_write_table(path, _epoch_table(old[old["epoch"] < int(epoch)].reset_index(drop=True)))
        # Rows first, then parts: a reader never sees a complete epoch without its parts.
        for folder in (self.path / "samples").glob("epoch=*"):
            try:
                e = int(folder.name.split("=", 1)[1])
            except ValueError:
                continue
            if e >= int(epoch):
                for part in folder.glob("part-*.parquet"):
                    part.unlink()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _check_version(meta: dict, path: Path) -> None:
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RunDirError(
            f"{path} has run-directory schema version {version!r}; this gwa-diag reads version "
            f"{SCHEMA_VERSION}. Use the gwa-diag version that wrote it, or re-record the run."
        )


class Run:
    """Read access to a run directory (complete epochs only)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta_path = self.path / "run.json"
        if not meta_path.exists():
            raise RunDirError(
                f"{self.path} is not a gwa-diag run directory (no run.json). "
                "Pass the --out directory of `gwa-diag train` or of an AlignmentRecorder."
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        _check_version(self.meta, self.path)

    def reload(self) -> "Run":
        """Re-read run.json (a run in progress changes it)."""
        return Run(self.path)

    @property
    def num_classes(self) -> int | None:
        return self.meta.get("num_classes")

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Class names from run.json (``class_names``, or ``dataset.class_names``), None when
        neither is recorded: then labels are shown and accepted as class indices only."""
        names = self.meta.get("class_names")
        if names is None and isinstance(self.meta.get("dataset"), dict):
            names = self.meta["dataset"].get("class_names")
        return tuple(str(n) for n in names) if isinstance(names, (list, tuple)) and len(names) else None

    def epochs(self) -> pd.DataFrame:
        """One row per complete epoch, sorted by epoch (empty frame before the first)."""
        path = self.path / "epochs.parquet"
        if not path.exists():
            return pd.DataFrame({k: pd.Series(dtype="float64") for k in _EPOCH_TYPES}).astype({"epoch": "int32"})
        return pd.read_parquet(path).sort_values("epoch").reset_index(drop=True)

    def labels(self) -> pd.DataFrame | None:
        """labels.parquet (``sample_id, label[, clean_label][, path]``) or None when not written."""
        path = self.path / "labels.parquet"
        return pd.read_parquet(path) if path.exists() else None

    def completed_epochs(self) -> list[int]:
        return [int(e) for e in self.epochs()["epoch"].tolist()]

    def sample_files(self, epochs: Iterable[int] | None = None) -> list[Path]:
        """Parquet parts of complete epochs (all ranks), in epoch order."""
        done = self.completed_epochs()
        wanted = done if epochs is None else [e for e in epochs if e in set(done)]
        files: list[Path] = []
        for e in sorted(wanted):
            files.extend(sorted((self.path / "samples" / f"epoch={e}").glob("part-*.parquet")))
        return files

    def dataset(self, epochs: Iterable[int] | None = None) -> pads.Dataset:
        """A pyarrow dataset over the complete epochs' parts, with an ``epoch`` column."""
        files = [str(f) for f in self.sample_files(epochs)]
        part = pads.partitioning(pa.schema([("epoch", pa.int32())]), flavor="hive")
        return pads.dataset(
            files, schema=SAMPLE_SCHEMA.append(pa.field("epoch", pa.int32())), format="parquet", partitioning=part,
            partition_base_dir=str(self.path / "samples"),
        )

    def samples(
        self,
        *,
        epochs: Iterable[int] | None = None,
        columns: list[str] | None = None,
        sample_ids: Iterable[int] | None = None,
    ) -> pd.DataFrame:
        """All rows (or a filtered subset) as a pandas frame with an ``epoch`` column."""
        filt = None
        if sample_ids is not None:
            filt = pads.field("sample_id").isin(pa.array(np.asarray(list(sample_ids), dtype=np.int64)))
        cols = None if columns is None else list(dict.fromkeys(["epoch", *columns]))
        wanted = None if epochs is None else list(epochs)  # an iterator would be spent by a retry
        table = read_listed_parts(lambda: self.dataset(wanted).to_table(columns=cols, filter=filt))
        frame = table.to_pandas()
        sort = [c for c in ("epoch", "step", "sample_id") if c in frame.columns]
        return frame.sort_values(sort, kind="stable").reset_index(drop=True)

    def trajectory(self, sample_id: int) -> pd.DataFrame:
        """One sample's rows over the run, sorted by epoch then step.

        Raises ValueError for an id with no rows in the complete epochs (sample ids are the
        dataset's own, e.g. CIFAR-10 training indices, not positions)."""
        rows = self.samples(sample_ids=[int(sample_id)])
        if rows.empty and self.completed_epochs():
            raise InputError(
                f"sample id {int(sample_id)} has no rows in the complete epochs of {self.path}; "
                "ids are the dataset's own (see labels.parquet or samples(columns=['sample_id']))"
            )
        return rows

    def epoch_scores(self, epoch: int) -> pd.DataFrame:
        """Every row of one complete epoch."""
        if int(epoch) not in set(self.completed_epochs()):
            raise InputError(f"epoch {epoch} is not complete in {self.path}; complete epochs: {self.completed_epochs()}")
        return self.samples(epochs=[int(epoch)])


def open_run(path: str | os.PathLike | Run) -> Run:
    """Open a run directory for reading; an already open :class:`Run` is returned as it is
    (so every reader can take either, without opening run.json twice)."""
    if isinstance(path, Run):
        return path
    return Run(path)
