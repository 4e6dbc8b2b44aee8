"""The record of pipeline runs: ``pipeline_runs``, one row a run, in the sensors' file (``records``).

The run-record sensor writes it from the Dagster instance's public run API, and the CLI writes its own
runs the same way, so the console lists runs without reading Dagster's private tables and without
importing Dagster. A run's rows arrive in any order and more than once (QUEUED, STARTED, then SUCCESS,
FAILURE or CANCELED; the sensor re-reads a minute of history each time): each write replaces the run's
row only with news at least as recent as what it holds (``updated_at``, the instance's own time of the
run's last change), so the row always ends at the run's last known state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import astuple, dataclass
from pathlib import Path

import duckdb

from bankanom_pipeline.automation import records
from bankanom_pipeline.warehouse import published

TABLE = "pipeline_runs"

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    run_id          VARCHAR PRIMARY KEY,
    job_name        VARCHAR NOT NULL,
    partition_key   VARCHAR,
    status          VARCHAR NOT NULL,  -- Dagster's run status: QUEUED, STARTED, SUCCESS, FAILURE, CANCELED...
    started_at      TIMESTAMP,         -- UTC, as every time in this table
    ended_at        TIMESTAMP,
    failed_steps    VARCHAR,           -- the steps that failed, comma-separated; NULL unless some did
    updated_at      TIMESTAMP NOT NULL -- the instance's time of the run's last change: orders the writes
)
"""

_COLUMNS = "job_name, partition_key, status, started_at, ended_at, failed_steps, updated_at"
UPSERT = f"""
INSERT INTO {TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET ({_COLUMNS}) = ({", ".join(f"excluded.{c}" for c in _COLUMNS.split(", "))})
WHERE excluded.updated_at >= {TABLE}.updated_at
"""


@dataclass(frozen=True)
class PipelineRun:
    """One run as recorded; times are naive UTC."""

    run_id: str
    job_name: str
    partition_key: str | None
    status: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    failed_steps: str | None
    updated_at: dt.datetime


def upsert(db: Path, runs: Iterable[PipelineRun]) -> None:
    """Record ``runs`` in ``db`` (one row each, kept at its latest state) and publish the table."""
    records.write(db, TABLE, DDL, UPSERT, [astuple(run) for run in runs])


def latest(root: Path, limit: int = 20) -> list[dict] | None:
    """The newest runs of named jobs in the record published under ``root``, newest start first (runs
    not started yet last): run_id, job, partition, status, started, seconds. None: nothing published.

    Dagster's own asset jobs (``__ASSET_JOB``: runs the automation sensor launches) are left out."""
    files = published.current_files(root, TABLE)
    if not files:
        return None
    with duckdb.connect() as con:
        rows = con.execute(
            """SELECT run_id, job_name, partition_key, status, started_at,
                       round(epoch(ended_at) - epoch(started_at), 1)
                FROM read_parquet(?) WHERE NOT starts_with(job_name, '__')
                ORDER BY started_at DESC NULLS LAST, updated_at DESC LIMIT ?""",
            [files, limit],
        ).fetchall()
    keys = ("run_id", "job", "partition", "status", "started", "seconds")
    return [dict(zip(keys, row, strict=True)) for row in rows]
