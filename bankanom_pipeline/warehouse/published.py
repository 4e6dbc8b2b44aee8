"""The published copy of the warehouse: every table as Parquet files that analysts query while runs write.

DuckDB lets one process write a database file or many read it, never both, so an analyst's session on
``warehouse.duckdb`` would make runs fail. Instead, in the embedded mode, each write of a partition (or of
an unpartitioned table) is also published, once its transaction has committed, as a Parquet file under
the published root (``settings.published_dir``)::

    <root>/<table>/date=YYYY-MM-DD/part-<version>.parquet   partitioned tables
    <root>/<table>/data-<version>.parquet                   unpartitioned tables (registry, seeds, feedback)

A file is never changed once it has its name: DuckDB opens a Parquet file more than once in one query
(binding, then each scanning thread), and a file replaced under the same name in between mixed two
versions' blocks ("Snappy decompression failure", wrong counts) in a quick test. So a new version gets a
new, larger name (written under a hidden temporary name, then renamed), readers take the largest name in
each folder, and a superseded version is deleted only ``GRACE_SECONDS`` after it was superseded, so a
query that listed it can still read it.

``connect()`` is the reader (``bankanom sql`` and notebooks): an in-memory DuckDB whose tables are views
that list the current files again at each query. It reads a lake root the same way (one file per folder).
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from pathlib import Path

import duckdb

from bankanom_pipeline import settings
from bankanom_pipeline.warehouse import SCHEMA_SQL, lake

_WRITER_ROOT = "bankanom_published_root"
_READER_ROOT = "bankanom_reader_root"
_FILES_FUNCTION = "bankanom_published_files"
# How long a superseded file stays readable: longer than any query that listed it should take.
GRACE_SECONDS = 3600
# Parquet codec: zstd at level 1 writes files about a third smaller than snappy for the same CPU
# (measured: bench/README.md, "Measurements behind code choices").
COMPRESSION = "zstd, COMPRESSION_LEVEL 1"
# Tables with a partition_date column that are nonetheless written whole (frames.replace_table).
WHOLE_TABLES = frozenset({"feedback"})


# --- writing (the pipeline's own connection to the embedded file) -----------------------------------


def attach(con: duckdb.DuckDBPyConnection, root: str | Path) -> None:
    """Publish what ``con`` commits through ``frames`` under ``root`` from now on; first publish any
    table that has no files there yet (a warehouse from before publishing, a step killed before its
    first publish), and, at most once per ``GRACE_SECONDS``, delete versions superseded longer ago."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET VARIABLE {_WRITER_ROOT} = ?", [str(root)])
    # Every step opens a connection; walking a year of partitions of every table each time costs seconds.
    swept = root / ".swept"
    if not swept.exists() or swept.stat().st_mtime < time.time() - GRACE_SECONDS:
        swept.touch()
        sweep(root)
    for table, partitioned in _base_tables(con):
        if not any(_is_version(name) for _, _, names in os.walk(root / table) for name in names):
            if partitioned:
                days = con.execute(f'SELECT DISTINCT partition_date::VARCHAR FROM "{table}"').fetchall()
                for (day,) in days:
                    publish(con, table, day)
            else:
                publish(con, table, None)


def publish(con: duckdb.DuckDBPyConnection, table: str, day: str | None) -> None:
    """Write partition ``day`` of ``table`` (the whole table with no day) as its newest file, if ``con``
    publishes (``attach``). Call it after the commit: a failed write leaves the previous file current."""
    root = _variable(con, _WRITER_ROOT)
    if root is None:
        return
    folder = Path(root) / table / (f"date={day}" if day else "")
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{'part' if day else 'data'}-{_next_version(folder)}.parquet"
    temporary = folder / f".{name}.{secrets.token_hex(4)}.tmp"
    where = f" WHERE partition_date = {lake.literal(day)}" if day else ""
    try:
        con.execute(
            f'COPY (SELECT * FROM "{table}"{where}) TO {lake.literal(str(temporary))} '
            f"(FORMAT parquet, COMPRESSION {COMPRESSION})"
        )
        os.rename(temporary, folder / name)
    finally:
        temporary.unlink(missing_ok=True)


def sweep(root: Path, now: float | None = None) -> None:
    """Delete file versions superseded more than ``GRACE_SECONDS`` ago, and temporary files as old (left
    by a killed writer). The newest file of each folder is never deleted."""
    limit = (time.time() if now is None else now) - GRACE_SECONDS
    for folder, _, names in os.walk(root):
        versions = sorted(n for n in names if _is_version(n))
        for older, newer in itertools.pairwise(versions):
            if _mtime(Path(folder, newer)) < limit:
                Path(folder, older).unlink(missing_ok=True)
        for name in names:
            if name.startswith(".") and name.endswith(".tmp") and _mtime(Path(folder, name)) < limit:
                Path(folder, name).unlink(missing_ok=True)


def _base_tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, bool]]:
    """The warehouse's tables and whether each is published by partition."""
    rows = con.execute(
        "SELECT t.table_name, bool_or(c.column_name = 'partition_date') FROM information_schema.tables t "
        "JOIN information_schema.columns c USING (table_catalog, table_schema, table_name) "
        "WHERE t.table_catalog = current_database() AND t.table_schema = 'main' "
        "AND t.table_type = 'BASE TABLE' GROUP BY ALL ORDER BY 1"
    ).fetchall()
    return [(table, partitioned and table not in WHOLE_TABLES) for table, partitioned in rows]


def _next_version(folder: Path) -> str:
    """A name part larger than any in ``folder``: the clock, or one past the newest if the clock went
    back. Zero-padded, so that names sort as the versions do."""
    newest = max(
        (int(n.split("-", 1)[1].split(".")[0]) for n in os.listdir(folder) if _is_version(n)), default=0
    )
    return f"{max(time.time_ns(), newest + 1):020d}"


def _is_version(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith(".") and "-" in name


# --- reading ------------------------------------------------------------------------------------------


def default_root() -> str:
    """What ``bankanom sql`` opens: the lake itself in lake mode, else the embedded warehouse's copy."""
    if settings.storage_mode() == "lake":
        return settings.lake_root()
    return str(settings.published_dir())


def connect(root: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that sees the published tables (or a lake's) as views, for reading only.

    It takes no lock on anything a run writes. Each query reads the files current when it starts: whole
    partitions, each as of its last committed write. ``refresh`` shows tables published after this."""
    root = str(root or default_root()).rstrip("/")
    if lake.is_url(root):
        raise ValueError(f"{root}: object-store roots are read with read_parquet(), not this helper")
    con = duckdb.connect(":memory:", config={"memory_limit": settings.duckdb_memory_limit()})
    con.execute(f"SET VARIABLE {_READER_ROOT} = ?", [root])
    con.create_function(
        _FILES_FUNCTION, lambda table: current_files(Path(root), table), ["VARCHAR"], "VARCHAR[]"
    )
    # Tables nothing published yet still have their columns; validated_logs is the same view as in
    # the warehouse, over the published raw_logs, validated_partitions and quarantine_logs.
    con.execute(SCHEMA_SQL.read_text())
    refresh(con)
    return con


def refresh(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Point a ``connect()`` connection's views at every table that has files now; returns the tables."""
    root = Path(_variable(con, _READER_ROOT))
    published = sorted(p.name for p in _folders(root) if current_files(root, p.name))
    ours = {
        name
        for (name,) in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE database_name = 'memory' AND contains(sql, ?)",
            [_FILES_FUNCTION],
        ).fetchall()
    }
    for table in ours - set(published):  # its folder was deleted or renamed
        con.execute(f'DROP VIEW "{table}"')
    for table in published:
        kind = lake.kind(con, table)
        if kind == "VIEW" and table not in ours:
            continue  # a view schema.sql defines (validated_logs) is derived from the tables, not read
        if kind == "BASE TABLE":
            con.execute(f'DROP TABLE "{table}"')
        con.execute(
            f'CREATE OR REPLACE VIEW "{table}" AS SELECT * FROM read_parquet('
            f"{_FILES_FUNCTION}({lake.literal(table)}), hive_partitioning = false, union_by_name = true)"
        )
    return published


def _folders(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []


def current_files(root: Path, table: str) -> list[str]:
    """The newest file of each folder of ``table``: one per partition (or the table's one). What a
    reader of one table reads, without ``connect``'s views over every table."""
    files = []
    for folder, _, names in os.walk(root / table):
        versions = [n for n in names if n.endswith(".parquet") and not n.startswith(".")]
        if versions:
            files.append(os.path.join(folder, max(versions)))
    return sorted(files)


# --- shared -------------------------------------------------------------------------------------------


def _variable(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    return con.execute(f"SELECT getvariable('{name}')").fetchone()[0]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # deleted meanwhile: never the reason to delete another
