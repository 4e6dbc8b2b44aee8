import dagster as dg

from bankanom_pipeline.defs.partitions import daily_partitions

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets("features_events", "log_labels").upstream()
    - dg.AssetSelection.groups("seeds"),
    partitions_def=daily_partitions,
    description="One day from landing files to the feature tables: raw_logs -> validated_logs -> SQL models.",
)
