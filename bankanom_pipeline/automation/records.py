"""The sensors' own DuckDB file (``data/alerts.duckdb``): ``pipeline_alerts`` and ``pipeline_runs``.

It is not the warehouse: the sensors run in the Dagster daemon, and the warehouse's single writer is
usually busy with a run exactly when a run starts or fails. Waiting for its lock would stall every sensor
in the daemon. Each write is published where the warehouse's readers read (``bankanom sql``, the
console): beside the embedded warehouse's published tables, or in a lake that is a folder as one more
table of the lake's layout (``<root>/<table>/data.parquet``). So they never hold this file open either.
An object-store lake (``s3://``) gets no copy: readers list the record's files on a local disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb

from bankanom_pipeline import settings
from bankanom_pipeline.warehouse import lake, published

log = logging.getLogger("bankanom.records")

ATTEMPTS = 10


def write(db: Path, table: str, ddl: str, statement: str, rows: Sequence[Sequence]) -> None:
    """Create ``table`` if missing, run ``statement`` once per row, then publish the table."""
    db.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(ATTEMPTS):  # an analyst or another writer may hold the file for a moment
        try:
            with duckdb.connect(str(db)) as con:
                con.execute(ddl)
                if rows:
                    con.executemany(statement, [list(row) for row in rows])
                _publish(con, table)
            return
        except duckdb.IOException:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def published_root() -> Path | None:
    """Where the records are published for readers: the root ``bankanom sql`` reads (the published
    copy, or the lake); None for an object-store lake."""
    root = published.default_root()
    return None if lake.is_url(root) else Path(root)


def _publish(con: duckdb.DuckDBPyConnection, table: str) -> None:
    root = published_root()
    if root is None:
        return
    try:
        if settings.storage_mode() == "lake":
            target = Path(lake.file_of(str(root), table, None))
            lake.replace_file(con, f'SELECT * FROM "{table}"', target)
        else:
            published.attach(con, root)
            published.publish(con, table, None)
    except (OSError, duckdb.Error) as failure:  # the record itself is written: that must not fail
        log.warning("%s not published for readers: %s", table, failure)
