"""The ``raw_logs`` asset: one daily partition of landing JSONL files, loaded into DuckDB."""

import dagster as dg

from bankanom_pipeline.ingest.raw_logs import load_partition
from bankanom_pipeline.partitions import daily_partitions
from bankanom_pipeline.warehouse.resource import WarehouseResource

REJECTED_SHARE_LIMIT = 0.05


def rejected_metadata(con, table: str, day: str, by_reason: dict[str, int]) -> dict:
    """Why lines of a day were rejected, and the first few of them, as Markdown tables (``table``: a
    rejects table with source_file, line_no, raw_text, reason)."""
    examples = con.execute(
        f"SELECT source_file, line_no, reason, left(raw_text, 120) FROM {table} "
        "WHERE partition_date = ? ORDER BY source_file, line_no LIMIT 5",
        [day],
    ).fetchall()
    reasons_md = "\n".join(f"| {r} | {n} |" for r, n in by_reason.items()) or "| - | 0 |"
    examples_md = "\n".join(f"| {f} | {n} | {r} | `{t}` |" for f, n, r, t in examples) or "| - | - | - | - |"
    return {
        "rejected_by_reason": dg.MetadataValue.md(f"| reason | lines |\n|---|---|\n{reasons_md}"),
        "rejected_examples": dg.MetadataValue.md(
            f"| file | line | reason | text |\n|---|---|---|---|\n{examples_md}"
        ),
    }


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
            **rejected,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="counts_reconcile",
                passed=counts.lines_read == counts.loaded + counts.rejected,
                metadata={
                    "lines_read": counts.lines_read,
                    "loaded": counts.loaded,
                    "rejected": counts.rejected,
                },
            ),
            dg.AssetCheckResult(
                check_name="rejected_share",
                passed=share <= REJECTED_SHARE_LIMIT,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"rejected_share": share},
            ),
        ],
    )
