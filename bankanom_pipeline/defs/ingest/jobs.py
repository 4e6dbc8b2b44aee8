import dagster as dg

from bankanom_pipeline.defs.ingest.records import recorded_files
from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import WarehouseResource

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_logs"),
    partitions_def=daily_partitions,
    description="Load one day of landing logs into raw_logs.",
)


class AppendConfig(dg.Config):
    day: str  # the landing folder (partition) the files are in
    files: list[str]  # relative to the landing logs root, in the order they are appended


@dg.op(pool="duckdb", description="Append each file's lines to its day of raw_logs, validated.")
def append_landing_files(
    context: dg.OpExecutionContext, config: AppendConfig, warehouse: WarehouseResource
) -> None:
    # pandas and the validation modules: imported by the step that validates, not by the code location
    from bankanom_pipeline.generator.config import load_config
    from bankanom_pipeline.ingest.append import append_file
    from bankanom_pipeline.settings import mock_config_path

    if not daily_partitions.has_partition_key(config.day):
        raise ValueError(f"{config.day} is not a daily partition")
    services = load_config(mock_config_path()).service_sources
    root = warehouse.landing_logs
    recorded = recorded_files(context.instance, config.day)
    for name in config.files:
        path = root / name
        if path.parent.name != config.day or not path.is_file():
            raise ValueError(f"{name}: not a landing file of {config.day} under {root}")
        with warehouse.connection() as con:
            counts = append_file(con, root, path, services)
        recorded[counts.file] = counts.signature
        context.log.info(f"appended {counts.as_dict()}")
        # raw_logs' day changed: recorded as its materialization, with every file the day holds, which is
        # what the landing sensor compares the zone against
        context.log_event(
            dg.AssetMaterialization(
                asset_key="raw_logs",
                partition=config.day,
                description=f"appended {counts.file}",
                metadata={
                    "mode": "append",
                    "file": counts.file,
                    "replaced": counts.replaced,
                    "lines_read": counts.lines_read,
                    "loaded": counts.loaded,
                    "rejected": counts.rejected,
                    "validated": counts.validated,
                    "quarantined": counts.quarantined,
                    "duplicate_event_ids": counts.duplicates,
                    "quarantined_by_rule": dg.MetadataValue.json(counts.quarantined_by_rule),
                    "landing_files": dg.MetadataValue.json(dict(sorted(recorded.items()))),
                },
            )
        )


@dg.job(
    description=(
        "The live day's path: append new landing files to their day of raw_logs, validated (each costs its "
        "own size). The whole day is re-read by pipeline_job when it closes (docs/automation.md)."
    )
)
def landing_append_job():
    append_landing_files()
