import dagster as dg

from bankanom_pipeline.defs.partitions import daily_partitions

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_logs"),
    partitions_def=daily_partitions,
    description="Load one day of landing logs into raw_logs.",
)
