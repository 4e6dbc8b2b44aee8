import dagster as dg

from bankanom_pipeline.partitions import daily_partitions

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_logs"),
    partitions_def=daily_partitions,
    description="Load one day of landing logs into raw_logs.",
)
# Everything daily, from landing files to the feature tables (seeds are built when missing).
pipeline_job = dg.define_asset_job(
    "pipeline_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("seeds"),
    partitions_def=daily_partitions,
    description="One day end to end: raw_logs -> validated_logs (+ quarantine, labels) -> SQL feature models.",
)
# Stopped by default: a fresh checkout should not start writing on its own; turn it on in the UI.
pipeline_schedule = dg.build_schedule_from_partitioned_job(
    pipeline_job, hour_of_day=0, minute_of_hour=30, default_status=dg.DefaultScheduleStatus.STOPPED
)
