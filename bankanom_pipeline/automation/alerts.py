"""Recording pipeline failures: the ``pipeline_alerts`` table, a log line, and an optional webhook.

The table lives in its own DuckDB file (``data/alerts.duckdb``), not in the warehouse: the failure
sensor runs in the Dagster daemon, and the warehouse's single writer is usually busy with another run
exactly when something is failing. Waiting for its lock would stall every sensor in the daemon.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from pathlib import Path

import duckdb
import httpx

from bankanom_pipeline import settings
from bankanom_pipeline.warehouse import published

log = logging.getLogger("bankanom.alerts")

DDL = """
CREATE TABLE IF NOT EXISTS pipeline_alerts (
    alerted_at      TIMESTAMPTZ NOT NULL,
    run_id          VARCHAR NOT NULL,
    job_name        VARCHAR NOT NULL,
    partition_key   VARCHAR,
    error           VARCHAR NOT NULL,
    webhook_status  VARCHAR            -- HTTP status or error of the webhook call; NULL: none configured
)
"""


def notify(url: str, alert: dict) -> str:
    """POST the alert as JSON; returns the status or the error (never raises: alerting must not fail)."""
    try:
        # transport retries cover connection failures (the usual transient case for a webhook)
        with httpx.Client(transport=httpx.HTTPTransport(retries=2), timeout=5) as client:
            return str(client.post(url, json=alert).status_code)
    except httpx.HTTPError as error:
        return f"error: {error}"


def record(
    db: Path, run_id: str, job_name: str, partition_key: str | None, error: str, webhook: str | None
) -> dict:
    alert = {
        "alerted_at": dt.datetime.now(dt.UTC).isoformat(),
        "run_id": run_id,
        "job_name": job_name,
        "partition_key": partition_key,
        "error": error,
    }
    log.error("pipeline run failed: %s", json.dumps(alert))
    status = notify(webhook, alert) if webhook else None
    db.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(10):  # an analyst may hold the file open for a moment
        try:
            with duckdb.connect(str(db)) as con:
                con.execute(DDL)
                con.execute(
                    "INSERT INTO pipeline_alerts VALUES (?, ?, ?, ?, ?, ?)",
                    [alert["alerted_at"], run_id, job_name, partition_key, error, status],
                )
                _publish(con)
            break
        except duckdb.IOException:
            if attempt == 9:
                raise
            time.sleep(0.5 * (attempt + 1))
    return {**alert, "webhook_status": status}


def _publish(con: duckdb.DuckDBPyConnection) -> None:
    """Publish the table for analysts (``bankanom sql``), who must not hold this file open either."""
    if settings.storage_mode() != "embedded":
        return  # the lake's readers are not shown alerts (docs/querying.md)
    try:
        published.attach(con, settings.published_dir())
        published.publish(con, "pipeline_alerts", None)
    except (OSError, duckdb.Error) as failure:  # the alert itself is recorded: that must not fail
        log.warning("pipeline_alerts not published for readers: %s", failure)
