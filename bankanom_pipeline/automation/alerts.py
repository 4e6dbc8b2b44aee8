"""Recording pipeline failures: the ``pipeline_alerts`` table, a log line, and an optional webhook.

The table lives in the sensors' own DuckDB file (``data/alerts.duckdb``, see ``records``), not in the
warehouse, and is published for readers from there.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import httpx

from bankanom_pipeline.automation import records

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
    row = [alert["alerted_at"], run_id, job_name, partition_key, error, status]
    records.write(db, "pipeline_alerts", DDL, "INSERT INTO pipeline_alerts VALUES (?, ?, ?, ?, ?, ?)", [row])
    return {**alert, "webhook_status": status}
