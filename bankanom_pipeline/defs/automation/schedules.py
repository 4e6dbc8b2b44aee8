"""Schedules: pipeline and retraining on the clock. STOPPED by default: they would start writing on the
clock in a fresh checkout."""

import datetime as dt

import dagster as dg

from bankanom_pipeline.automation.config import default_automation_config
from bankanom_pipeline.defs.detection.jobs import pipeline_job, train_job, train_run_config

CONFIG = default_automation_config()
STOPPED = dg.DefaultScheduleStatus.STOPPED


@dg.schedule(
    cron_schedule=CONFIG.schedules.scoring_catchup_cron,
    job=pipeline_job,
    default_status=STOPPED,
    execution_timezone="UTC",
    description="Hourly catch-up: today's partition end to end with what has landed so far.",
)
def scoring_catchup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = context.scheduled_execution_time.astimezone(dt.UTC).date().isoformat()
    return dg.RunRequest(partition_key=day)


@dg.schedule(
    cron_schedule=CONFIG.schedules.retrain_cron,
    job=train_job,
    default_status=STOPPED,
    execution_timezone="UTC",
    description="Daily retraining on the window ending yesterday; the promotion gate decides.",
)
def retrain_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    yesterday = (
        (context.scheduled_execution_time.astimezone(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    )
    return dg.RunRequest(run_config=train_run_config(yesterday))


daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    pipeline_job,
    hour_of_day=int(CONFIG.schedules.daily_pipeline_cron.split()[1]),
    minute_of_hour=int(CONFIG.schedules.daily_pipeline_cron.split()[0]),
    default_status=STOPPED,
)

schedules = [scoring_catchup_schedule, retrain_schedule, daily_pipeline_schedule]
