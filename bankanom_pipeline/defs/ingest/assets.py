"""The ``raw_logs`` asset: one daily partition of landing JSONL files, loaded into DuckDB."""

import dagster as dg

from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.defs.results import counts_reconciled, rejected_metadata
from bankanom_pipeline.ingest.raw_logs import load_partition

REJECTED_SHARE_LIMIT = 0.05


@dg.asset(
    partitions_def=daily_partitions,
    pool="duckdb",
    group_name="ingest",
    kinds={"duckdb"},
    description="Landing JSONL lines of one UTC day, as sent; unusable lines go to raw_logs_rejected.",
    check_specs=[
        dg.AssetCheckSpec(
            "counts_reconcile", asset="raw_logs", blocking=True, description="lines read = loaded + rejected"
        ),
        dg.AssetCheckSpec(
            "rejected_share",
            asset="raw_logs",
            description=f"at most {REJECTED_SHARE_LIMIT:.0%} of lines rejected",
        ),
    ],
)
def raw_logs(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    day = context.partition_key
    with warehouse.connection() as con:
        counts = load_partition(con, warehouse.landing_logs, day)
        rejected = rejected_metadata(con, "raw_logs_rejected", day, counts.rejected_by_reason)
    if counts.files == 0:
        context.log.warning(f"no landing files for {day} under {warehouse.landing_logs / day}")
    share = counts.rejected / counts.lines_read if counts.lines_read else 0.0
    return dg.MaterializeResult(
        metadata={
            "files": counts.files,
            "lines_read": counts.lines_read,
            "loaded": counts.loaded,
            "rejected": counts.rejected,
            "duplicate_event_ids": counts.duplicate_event_ids,
            "dagster/row_count": counts.loaded,
            # the files this load read, with their signatures: the landing sensor does not hand them to a
            # run again (a day loaded by bankanom demo or run is not reloaded by bankanom up)
            "landing_files": dg.MetadataValue.json(counts.landing_files),
            **rejected,
        },
        check_results=[
            counts_reconciled(counts),
            dg.AssetCheckResult(
                check_name="rejected_share",
                passed=share <= REJECTED_SHARE_LIMIT,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rejected_share": share},
            ),
        ],
    )
