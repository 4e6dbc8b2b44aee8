"""The warehouse resource: every asset reaches DuckDB through it, so that storage can change in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from bankanom_pipeline import settings

SCHEMA_SQL = Path(__file__).with_name("schema.sql")


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (creating its folder and tables when writable)."""
    path = Path(path)
    if read_only:
        return duckdb.connect(str(path), read_only=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # DuckDB's default cap is 80% of RAM: a day's partition would then sit in memory whole and peak
    # memory would grow with the day's size; with a fixed cap the large operators spill instead.
    con = duckdb.connect(str(path), config={"memory_limit": settings.duckdb_memory_limit()})
    con.execute(SCHEMA_SQL.read_text())
    return con


class WarehouseResource(dg.ConfigurableResource):
    """The embedded DuckDB warehouse and the landing zone that feeds it."""

    database: str = Field(
        default_factory=lambda: str(settings.warehouse_path()),
        description="DuckDB file (env BANKANOM_WAREHOUSE; default data/warehouse.duckdb)",
    )
    landing_dir: str = Field(
        default_factory=lambda: str(settings.landing_dir()),
        description="Landing zone root (env BANKANOM_LANDING_DIR; default data/landing)",
    )

    @property
    def landing_logs(self) -> Path:
        return Path(self.landing_dir) / "logs"

    @property
    def landing_transactions(self) -> Path:
        return Path(self.landing_dir) / "transactions"

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = connect(self.database)
        try:
            yield con
        finally:
            con.close()
