"""Sensors: what makes bankanom react on its own (see docs/automation.md)."""

from __future__ import annotations

import json
import os

import dagster as dg
import duckdb

from bankanom_pipeline import settings
from bankanom_pipeline.automation import landing
from bankanom_pipeline.automation.config import default_automation_config
from bankanom_pipeline.automation.drift import judge
from bankanom_pipeline.defs.automation import recovery
from bankanom_pipeline.defs.detection.jobs import pipeline_job, train_job
from bankanom_pipeline.defs.features.jobs import features_job
from bankanom_pipeline.defs.ingest.jobs import landing_append_job
from bankanom_pipeline.defs.ingest.records import appended_last, recorded_files
from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import SnapshotPublisherResource, WarehouseResource
from bankanom_pipeline.defs.transactions.jobs import transaction_features_job

CONFIG = default_automation_config()
# Sensors are RUNNING by default: they only react (to new files, drift, failures).
RUNNING = dg.DefaultSensorStatus.RUNNING
TRANSACTIONS_PREFIX = "transactions/"  # cursor keys of the transaction landing zone


@dg.sensor(
    jobs=[features_job, transaction_features_job, landing_append_job, pipeline_job],
    minimum_interval_seconds=CONFIG.landing.interval_seconds,
    default_status=RUNNING,
    description=(
        "New log files of an open day (until midnight + live_day_close_seconds) are appended to it by "
        "landing_append_job; the day is re-run whole by pipeline_job once it closes. New or changed files "
        "of a closed day request features_job for it, and new CSVs under landing/transactions "
        "transaction_features_job; scores, incidents and snapshots follow through automation conditions. "
        "Files a run already loaded (bankanom demo, run) are not loaded again."
    ),
)
def landing_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    cursor = landing.Cursor.parse(context.cursor)
    now = landing.now()
    close_after = CONFIG.landing.live_day_close_seconds
    # appends write the embedded file in place; the lake holds one Parquet file per partition
    appending = warehouse.storage == "embedded"
    zones = [
        (features_job, warehouse.landing_logs, landing.landing_files, ""),
        (
            transaction_features_job,
            warehouse.landing_transactions,
            landing.transaction_files,
            TRANSACTIONS_PREFIX,
        ),
    ]
    landed_everywhere, requests = [], []
    for job, root, files, prefix in zones:
        landed = landing.scan(root, files, prefix)
        landed_everywhere += landed
        ignored = landing.unreadable(root, files)
        if ignored:  # never silently: the assets will not read these
            context.log.warning(f"{root}: entries that will never be loaded ({len(ignored)}): {ignored[:10]}")
        for day, fresh in sorted(cursor.fresh(landed).items()):
            if not daily_partitions.has_partition_key(day):
                context.log.warning(
                    f"landing folder {root / day} is outside the partitions; its files are ignored"
                )
                cursor.mark(fresh)
                continue
            if job is features_job:
                unknown = cursor.known(fresh, recorded_files(context.instance, day))
                if len(unknown) < len(fresh) and appended_last(context.instance, day):
                    cursor.open_days.add(day)  # appended by runs a lost cursor no longer remembers
                fresh = unknown
                if not fresh:
                    continue
            if job is features_job and appending and now < landing.closes_at(day, close_after):
                names = sorted(f.path for f in fresh)
                requests.append(
                    dg.RunRequest(
                        run_key=landing.run_key(day, fresh, "append"),
                        job_name=landing_append_job.name,
                        run_config={
                            "ops": {"append_landing_files": {"config": {"day": day, "files": names}}}
                        },
                        tags={"bankanom/new_files": str(len(fresh)), "bankanom/day": day},
                    )
                )
                cursor.open_days.add(day)
            else:
                requests.append(
                    dg.RunRequest(
                        run_key=landing.run_key(day, fresh),
                        job_name=job.name,
                        partition_key=day,
                        tags={"bankanom/new_files": str(len(fresh))},
                    )
                )
                cursor.open_days.discard(day)  # re-run whole: nothing left to close
            cursor.mark(fresh)
    for day in sorted(d for d in cursor.open_days if now >= landing.closes_at(d, close_after)):
        files = [f for f in landed_everywhere if f.day == day and not f.path.startswith(TRANSACTIONS_PREFIX)]
        requests.append(
            dg.RunRequest(
                run_key=landing.run_key(day, files, "close"),
                job_name=pipeline_job.name,
                partition_key=day,
                tags={"bankanom/closed_day": day},
            )
        )
        cursor.open_days.discard(day)
    cursor.forget_missing(landed_everywhere)
    if not requests:
        return dg.SensorResult(skip_reason="no new landing files", cursor=cursor.dump())
    return dg.SensorResult(run_requests=requests, cursor=cursor.dump())


@dg.sensor(
    job=train_job,
    minimum_interval_seconds=CONFIG.drift.interval_seconds,
    default_status=RUNNING,
    description=(
        "Compares the latest published day's normalised scores with the training window (PSI against the "
        "uniform distribution they follow there) and requests train_job when either model drifts."
    ),
)
def drift_sensor(
    context: dg.SensorEvaluationContext, snapshots: SnapshotPublisherResource
) -> dg.SensorResult | dg.SkipReason:
    publisher = snapshots.publisher()
    pointer = publisher.current()
    if pointer is None:
        return dg.SkipReason("no snapshot published yet")
    if context.cursor == pointer["file"]:
        return dg.SkipReason(f"{pointer['file']} already judged")
    # the published snapshot, never the live warehouse: a sensor must not wait on a run's lock
    with duckdb.connect(str(publisher.root / pointer["file"]), read_only=True) as con:
        rows = con.execute(
            """SELECT if_score, lof_score FROM scored_events
               WHERE partition_date = (SELECT max(partition_date) FROM scored_events)"""
        ).fetchnumpy()
    d = CONFIG.drift
    verdict = judge(
        {"isolation_forest": rows["if_score"], "local_outlier_factor": rows["lof_score"]},
        d.psi_threshold,
        d.bins,
        d.min_events,
    )
    context.log.info(f"drift on {pointer['file']}: {verdict.reason} {verdict.psi}")
    if not verdict.drifted:
        return dg.SensorResult(skip_reason=verdict.reason, cursor=pointer["file"])
    request = dg.RunRequest(
        run_key=f"drift:{pointer['file']}",
        tags={
            "bankanom/drift": verdict.reason,
            **{f"bankanom/psi_{k}": str(v) for k, v in verdict.psi.items()},
        },
    )
    return dg.SensorResult(run_requests=[request], cursor=pointer["file"])


@dg.run_failure_sensor(
    default_status=RUNNING,
    # every run of the instance: runs started from the CLI (bankanom run / train / backfill) execute in
    # process and carry no code-location origin, so a location-scoped sensor would never see them
    monitor_all_code_locations=True,
    minimum_interval_seconds=CONFIG.landing.interval_seconds,
    description="Records every failed run in pipeline_alerts (data/alerts.duckdb), logs it, and POSTs it to "
    "the webhook in BANKANOM_ALERT_WEBHOOK when set.",
)
def failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
    # here, not at the top: alerts imports an HTTP client that only a failed run needs, and every process
    # loading the code location would otherwise import it
    from bankanom_pipeline.automation import alerts

    run = context.dagster_run
    alerts.record(
        settings.alerts_path(),
        run_id=run.run_id,
        job_name=run.job_name,
        partition_key=run.tags.get("dagster/partition"),
        error=context.failure_event.message or "run failed",
        webhook=os.environ.get(CONFIG.alerts.webhook_env) or None,
    )


@dg.sensor(
    # a dead run blocks every writer of the duckdb pool until cleaned: look often (the check reads the
    # instance's unfinished runs and the pool tables, a few milliseconds)
    minimum_interval_seconds=30,
    default_status=RUNNING,
    description="Marks failed every unfinished run whose process died (the default run launcher has no "
    "worker health check, so run monitoring cannot) and frees its concurrency-pool slots; writes in a "
    "waiting run's event log which run holds the pool it waits for.",
)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    instance = context.instance
    # sensors run in the code server, beside the run workers the default run launcher starts
    cleaned = recovery.clean_dead_runs(instance, by="dead_run_sensor", beside_run_workers=True)
    for cleanup in cleaned:
        context.log.warning(str(cleanup))
    said = set(json.loads(context.cursor)) if context.cursor else set()
    waiting = set()
    for wait in recovery.waits(instance):
        run = instance.get_run_by_id(wait.run_id)
        if run is None or not wait.holders or recovery.PID_TAG in run.tags:
            continue  # a CLI run's own guard says it on its console and in its event log
        key = f"{wait.run_id} {wait.step} {' '.join(wait.holders)}"
        waiting.add(key)
        if key not in said:
            instance.report_engine_event(recovery.say_wait(instance, wait), run, step_key=wait.step)
    skip = "; ".join(map(str, cleaned)) or "no run whose process died"
    return dg.SensorResult(skip_reason=skip, cursor=json.dumps(sorted(waiting)))


automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=RUNNING,
    minimum_interval_seconds=CONFIG.automation.interval_seconds,
    description="Evaluates the assets' automation conditions (scores and incidents follow features).",
)


sensors = [landing_sensor, drift_sensor, failure_alert_sensor, dead_run_sensor, automation_sensor]
