"""SQL over a run's sample parts with DuckDB: the complete epochs' Parquet files, listed
again when a resume removed one while it was being read.

:func:`query_parts` runs one query over every complete part; the readers that stream
(:mod:`gwa_diag.analysis.summaries`) or pick their own files (:mod:`.truth`) use
:func:`vanished_parts_as_file_not_found` around their own connection.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import duckdb

from gwa_diag.store import Run, read_listed_parts

__all__ = ["query_parts", "read_parquet_sql", "vanished_parts_as_file_not_found"]


def read_parquet_sql(files: list[str]) -> str:
    """The DuckDB table expression over ``files`` (hive-partitioned: ``epoch`` from the folder)."""
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"read_parquet([{listed}], hive_partitioning = true)"


@contextmanager
def vanished_parts_as_file_not_found(files: list[str]) -> Iterator[None]:
    """Report a DuckDB read that failed because a listed part vanished (a resume removed it)
    as FileNotFoundError, which :func:`gwa_diag.store.read_listed_parts` retries."""
    try:
        yield
    except duckdb.Error as exc:
        gone = [f for f in files if not os.path.exists(f)]
        if gone:
            raise FileNotFoundError(f"{gone[0]} was removed while it was being read") from exc
        raise


def query_parts(run: Run, query: Callable[[str], str], fetch: Callable[[Any], Any], empty: Callable[[], Any]) -> Any:
    """``fetch(relation)`` of the SQL ``query(source)``, where ``source`` reads every part of
    the run's complete epochs; ``empty()`` when there is none yet."""

    def read() -> Any:
        files = [str(f) for f in run.sample_files()]
        if not files:
            return empty()
        con = duckdb.connect(":memory:")
        try:
            with vanished_parts_as_file_not_found(files):
                return fetch(con.sql(query(read_parquet_sql(files))))
        finally:
            con.close()

    return read_listed_parts(read)
