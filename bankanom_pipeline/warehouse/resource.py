"""Opening the warehouse's DuckDB file (``connect``); the Dagster resource every asset reaches it through is
``bankanom_pipeline.defs.resources.WarehouseResource``."""

from __future__ import annotations

from pathlib import Path

import duckdb

from bankanom_pipeline import settings
from bankanom_pipeline.warehouse import lake

SCHEMA_SQL = Path(__file__).with_name("schema.sql")


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (creating its folder and tables when writable)."""
    path = Path(path)
    if read_only:
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # DuckDB's default cap is 80% of RAM: a day's partition would then sit in memory whole and peak
    # memory would grow with the day's size; with a fixed cap the large operators spill instead.
    limit = settings.duckdb_memory_limit()
    # The buffer pool's blocks come from memory DuckDB keeps for reuse (up to the cap, freed on close),
    # not fresh pages from the kernel each time: a million events take a quarter fewer page faults and
    # ~1 s less system time.
    con = duckdb.connect(str(path), config={"memory_limit": limit, "block_allocator_memory": limit})
    con.execute("BEGIN TRANSACTION")
    legacy = lake.kind(con, "validated_logs") == "BASE TABLE"
    if legacy:
        con.execute("ALTER TABLE validated_logs RENAME TO validated_logs_copy")
    con.execute(SCHEMA_SQL.read_text())
    if legacy:
        # validated_logs used to be a copy of the checked raw rows; the days it held were validated
        # against the raw rows still stored, so the view shows the same rows once they are marked
        con.execute(
            "INSERT INTO validated_partitions SELECT partition_date, max(ingested_at), now() FROM raw_logs "
            "WHERE partition_date IN (SELECT partition_date FROM validated_logs_copy) GROUP BY ALL"
        )
        con.execute("DROP TABLE validated_logs_copy")
    con.execute("COMMIT")
    return con
