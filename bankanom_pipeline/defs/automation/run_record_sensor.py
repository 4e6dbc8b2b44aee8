"""The run-record sensor: keeps ``pipeline_runs`` (``automation/run_records.py``) in step with the
instance's runs, read through Dagster's public run API, so it works on any run storage (the embedded
SQLite default, Postgres).

One sensor over the instance's run records rather than a ``run_status_sensor`` per status: it sees every
status (QUEUED, CANCELING...), and its first tick records the runs from before it was turned on. A run's
``update_timestamp`` is the time of the event that changed it, which its worker may store a moment after a
later-stamped change of another run was read; so each tick re-reads ``OVERLAP`` before the newest change
it has seen and skips, through the cursor, what it has already recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import dagster as dg
import duckdb

from bankanom_pipeline import settings
from bankanom_pipeline.automation import run_records
from bankanom_pipeline.automation.config import default_automation_config

log = logging.getLogger("bankanom.run_records")

OVERLAP = dt.timedelta(minutes=1)
FIRST_TICK_RUNS = 100  # the history recorded when the sensor first runs


def as_recorded(instance: dg.DagsterInstance, record: dg.RunRecord) -> run_records.PipelineRun:
    run = record.dagster_run
    failed_steps = None
    if run.status == dg.DagsterRunStatus.FAILURE:
        events = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        failed_steps = ", ".join(dict.fromkeys(e.event_log_entry.step_key for e in events.records)) or None
    return run_records.PipelineRun(
        run_id=run.run_id,
        job_name=run.job_name,
        partition_key=run.tags.get("dagster/partition"),
        status=run.status.value,
        started_at=_utc(record.start_time),
        ended_at=_utc(record.end_time),
        failed_steps=failed_steps,
        updated_at=record.update_timestamp.astimezone(dt.UTC).replace(tzinfo=None),
    )


def changed_runs(instance: dg.DagsterInstance, cursor: str | None) -> tuple[list[dg.RunRecord], str | None]:
    """The run records changed since ``cursor`` (the newest ``FIRST_TICK_RUNS`` without one), and the
    cursor after them."""
    if cursor is None:
        found = instance.get_run_records(limit=FIRST_TICK_RUNS, order_by="update_timestamp")
        after, seen = None, {}
    else:
        state = json.loads(cursor)
        after, seen = dt.datetime.fromisoformat(state["after"]), state["seen"]
        found = instance.get_run_records(
            filters=dg.RunsFilter(updated_after=after - OVERLAP), order_by="update_timestamp"
        )
    changed = [r for r in found if seen.get(r.dagster_run.run_id) != r.update_timestamp.isoformat()]
    stamps = [r.update_timestamp for r in found] + ([after] if after else [])
    if not stamps:
        return [], None
    newest = max(stamps)
    seen = {**seen, **{r.dagster_run.run_id: r.update_timestamp.isoformat() for r in found}}
    recent = {run_id: at for run_id, at in seen.items() if dt.datetime.fromisoformat(at) > newest - OVERLAP}
    return changed, json.dumps({"after": newest.isoformat(), "seen": recent}, sort_keys=True)


@dg.sensor(
    # it only records: on by default, like the other sensors that react
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=default_automation_config().landing.interval_seconds,
    description="Records every run of the instance, its status, times and failed steps, in pipeline_runs "
    "(data/alerts.duckdb, published for readers): the console's list of the last pipeline runs.",
)
def run_record_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    changed, cursor = changed_runs(context.instance, context.cursor)
    if changed:
        run_records.upsert(settings.alerts_path(), [as_recorded(context.instance, r) for r in changed])
    return dg.SensorResult(skip_reason=f"{len(changed)} run(s) recorded", cursor=cursor)


def record_run(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record one run now: the CLI's own runs are listed without a daemon. A record that cannot be
    written is a warning, never the run's failure."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return
    try:
        run_records.upsert(settings.alerts_path(), [as_recorded(instance, record)])
    except (OSError, duckdb.Error) as failure:
        log.warning("run %s not recorded in pipeline_runs: %s", run_id, failure)


def _utc(timestamp: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).replace(tzinfo=None) if timestamp else None
