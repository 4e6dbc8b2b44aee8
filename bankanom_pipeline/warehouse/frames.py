"""Moving rows in and out of warehouse partitions, the same way in the embedded file and in the lake."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import polars as pl
import pyarrow as pa

from bankanom_pipeline.warehouse import store

# DuckDB's row group (rows). Its parallel insert stores each Arrow batch as row groups of its own: a batch
# that is not a whole number of them leaves a partial row group, which the commit's checkpoint merges and
# compresses a second time (1M scored transactions in the 125,000-row batches of a concat: ~6 CPU s to
# write instead of ~3.5).
ROW_GROUP_ROWS = 122_880


def arrow_for_insert(table: pa.Table) -> pa.Table:
    """``table`` in batches of whole DuckDB row groups (the last one excepted), same rows in the same
    order: what an ``INSERT ... SELECT`` from it writes without merging partial row groups."""
    return pa.Table.from_batches(
        table.combine_chunks().to_batches(max_chunksize=ROW_GROUP_ROWS), schema=table.schema
    )


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether ``table`` is in the connection's own database (not in one it has attached)."""
    query = (
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_name = ?"
    )  # tables and views: in lake mode a table is a view over its Parquet files
    return con.execute(query, [table]).fetchone()[0] > 0


@contextmanager
def rewriting(
    con: duckdb.DuckDBPyConnection, *tables: str, day: dt.date | str | None = None
) -> Iterator[None]:
    """The block's statements replace partition ``day`` of ``tables`` (with no day: edit them whole), as
    the warehouse ``con`` is on writes a partition (store.py): embedded, one transaction that first
    deletes the partition, then published for readers; lake, temporary tables of the same names, each
    then published as its partition's Parquet file. A re-run never duplicates rows and a failure leaves
    the old ones. Tables the block creates must be created inside it or before it."""
    with store.of(con).rewriting(con, tables, None if day is None else str(day)):
        yield


def replace_table(con: duckdb.DuckDBPyConnection, table: str, query: str, params: list | None = None) -> None:
    """Make ``table`` the result of ``query`` (an unpartitioned table: seeds, feedback)."""
    store.of(con).replace_table(con, table, query, params or [])


def read_frame(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pl.DataFrame:
    return pl.from_arrow(con.execute(sql, params or []).to_arrow_table())


def read_batches(
    con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, rows: int = 200_000
) -> Iterator[pl.DataFrame]:
    """The result of ``sql`` as frames of at most ``rows`` rows, streamed: one batch in memory at a time."""
    for batch in con.execute(sql, params or []).fetch_record_batch(rows):
        yield pl.from_arrow(batch)


def replace_partition(con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, day: str) -> int:
    """Make ``frame`` the ``partition_date = day`` rows of ``table`` in one transaction (creating the
    table from the frame's schema the first time). Re-running a day replaces it: idempotent."""
    con.register("_incoming", arrow_for_insert(frame.to_arrow()))
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM _incoming LIMIT 0")
        with rewriting(con, table, day=day):
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _incoming")
    finally:
        con.unregister("_incoming")
    return frame.height
