"""Lake mode: every table is Parquet under one root, so runs for different partitions write at once.

Layout: ``<root>/<table>/date=YYYY-MM-DD/part-0.parquet`` for a partitioned table (one file per
partition), ``<root>/<table>/data.parquet`` for the rest (registry, seeds, feedback). A connection is an
in-memory DuckDB whose tables are views over those files. Writes go through ``frames.rewriting``: the
block's rows land in a temporary table that shadows the view, and are then published as one file,
written under a temporary name and renamed over the old one, so a reader never sees half a partition.
Each table's partition is replaced atomically; a write of several tables publishes them one by one.
Under Celery, only the execution that holds its step's claim publishes (``distributed/fence.py``).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

import duckdb

from bankanom_pipeline import settings
from bankanom_pipeline.warehouse import SCHEMA_SQL

_ROOT_VARIABLE = "bankanom_lake_root"
PARQUET = "FORMAT parquet, COMPRESSION zstd"


def is_url(root: str) -> bool:
    return "://" in root


def check_root(root: str) -> None:
    """Fail fast, naming the setting, when a local lake root cannot be written."""
    if is_url(root):
        return
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise settings.SettingError(f"BANKANOM_LAKE_ROOT={root!r} is not writable: {error}") from None


def connect(root: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that sees the lake at ``root`` as tables (views), ready for ``rewriting``."""
    root = root.rstrip("/")
    check_root(root)
    spill = Path(tempfile.gettempdir()) / f"bankanom-duckdb-{os.getpid()}"
    con = duckdb.connect(
        ":memory:",
        config={"memory_limit": settings.duckdb_memory_limit(), "temp_directory": str(spill)},
    )
    if is_url(root):
        # S3-compatible roots: credentials come from DuckDB's secrets (CREATE SECRET) or the AWS env.
        con.execute("INSTALL httpfs; LOAD httpfs")
    con.execute(f"SET VARIABLE {_ROOT_VARIABLE} = {literal(root)}")
    # Tables nothing has written yet still have their columns (readers and shadows need them).
    con.execute(SCHEMA_SQL.read_text())
    for table in tables(con, root):
        # a view schema.sql defines is derived from the tables (validated_logs); files under its name
        # are from a lake written before it was a view, and are not read
        if kind(con, table) != "VIEW":
            expose(con, table)
    return con


def root_of(con: duckdb.DuckDBPyConnection) -> str | None:
    """The lake root a connection was opened on, or None for the embedded warehouse."""
    return con.execute(f"SELECT getvariable('{_ROOT_VARIABLE}')").fetchone()[0]


def tables(con: duckdb.DuckDBPyConnection, root: str) -> list[str]:
    files = con.execute("SELECT file FROM glob(?)", [f"{root}/*/**/*.parquet"]).fetchall()
    prefix = len(root) + 1
    return sorted({file[prefix:].split("/", 1)[0] for (file,) in files})


def expose(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """Make ``table`` the view over its files (replacing the empty table schema.sql made)."""
    root = root_of(con)
    if kind(con, table) == "BASE TABLE":
        con.execute(f'DROP TABLE memory.main."{table}"')
    files = literal(f"{root}/{table}/**/*.parquet")
    con.execute(
        f'CREATE OR REPLACE VIEW memory.main."{table}" AS '
        f"SELECT * FROM read_parquet({files}, hive_partitioning = false, union_by_name = true)"
    )


def publish(con: duckdb.DuckDBPyConnection, table: str, day: str | None) -> None:
    """Write what ``table`` resolves to (the block's shadow, else the table itself) as the file of
    partition ``day`` (or of the whole table), then point the view at the lake again."""
    # here, not at the top: it imports the Redis client, which only Celery runs use and every process
    # loading the code location would otherwise import
    from bankanom_pipeline.distributed import fence

    root = root_of(con)
    wide = [name for name, kind, *_ in con.execute(f'DESCRIBE "{table}"').fetchall() if "HUGEINT" in kind]
    if wide:
        # Parquet has no 128-bit integers: DuckDB would write DOUBLE and the modes would disagree on types.
        raise ValueError(f"{table}: column(s) {wide} are HUGEINT (e.g. a sum()); cast them to BIGINT")
    target = file_of(root, table, day)
    query = f'SELECT * FROM "{table}"'
    if is_url(root):
        fence.verify()
        con.execute(f"COPY ({query}) TO {literal(target)} ({PARQUET})")  # an object PUT is atomic
    else:
        # a step execution that lost its claim to another must not replace its file
        replace_file(con, query, Path(target), before_rename=fence.verify)
    con.execute(f'DROP TABLE IF EXISTS temp.main."{table}"')
    expose(con, table)


def file_of(root: str, table: str, day: str | None) -> str:
    """The one file of partition ``day`` of ``table`` under ``root`` (with no day: the table's file)."""
    return f"{root}/{table}/date={day}/part-0.parquet" if day else f"{root}/{table}/data.parquet"


def replace_file(
    con: duckdb.DuckDBPyConnection, query: str, path: Path, before_rename: Callable[[], None] = lambda: None
) -> None:
    """Write the rows of ``query`` as the local file ``path``: under a temporary name, then renamed over
    the old file, so a reader sees the old file or the new one whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        con.execute(f"COPY ({query}) TO {literal(str(temporary))} ({PARQUET})")
        before_rename()
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


# A lake connection is in-memory, so its catalog is "memory"; a bare ``main.x`` would find the temporary
# shadow first (DuckDB searches the temp catalog before it), so the lake's own objects are named in full.


def shadow(con: duckdb.DuckDBPyConnection, table: str, day: str | None) -> None:
    """A temporary table named ``table`` that the block writes into: empty for a partition (it is being
    replaced), a copy of the whole table otherwise (the block edits it)."""
    if kind(con, table) is None:
        return  # the block creates it (CREATE TABLE IF NOT EXISTS ...), publish reads it from there
    limit = " LIMIT 0" if day else ""
    con.execute(f'CREATE TEMP TABLE "{table}" AS SELECT * FROM memory.main."{table}"{limit}')


def drop_shadow(con: duckdb.DuckDBPyConnection, table: str) -> None:
    con.execute(f'DROP TABLE IF EXISTS temp.main."{table}"')


def kind(con: duckdb.DuckDBPyConnection, table: str, schema: str = "main") -> str | None:
    """BASE TABLE, VIEW, or None: what ``schema.table`` is in the connection's own database."""
    row = con.execute(
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchone()
    return row[0] if row else None


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
