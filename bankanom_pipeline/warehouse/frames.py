"""Moving polars frames in and out of DuckDB partitions."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import polars as pl


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ``table`` is in the connection's own database (not in one it has attached)."""
    query = "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND table_name = ?"
    return con.execute(query, [table]).fetchone()[0] > 0


def read_frame(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    return pl.from_arrow(con.execute(sql, params or []).fetch_arrow_table())


def read_batches(
    con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, rows: int = 200_000
) -> Iterator[pl.DataFrame]:
    """The result of ``sql`` as frames of at most ``rows`` rows, streamed: one batch in memory at a time."""
    for batch in con.execute(sql, params or []).fetch_record_batch(rows):
        yield pl.from_arrow(batch)


def replace_partition(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, day: str) -> int:
    """Make ``frame`` the ``partition_date = day`` rows of ``table`` in one transaction (creating the
    table from the frame's schema the first time). Re-running a day replaces it: idempotent."""
    con.register("_incoming", frame.to_arrow())
    try:
        con.execute("BEGIN")
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM _incoming LIMIT 0")
        con.execute(f"DELETE FROM {table} WHERE partition_date = ?", [day])
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_incoming")
    return frame.height
