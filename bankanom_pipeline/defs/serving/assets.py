"""The Dagster asset that publishes what the API serves."""

import datetime as dt

import dagster as dg
from pydantic import Field

from bankanom_pipeline.defs.conditions import FOLLOW_UPSTREAM
from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import SnapshotPublisherResource, WarehouseResource
from bankanom_pipeline.serving import online_checkpoint, snapshot


class SnapshotConfig(dg.Config):
    days: int = Field(default=2, ge=1, le=31, description="partitions of scores and incidents served")
    online_checkpoint: bool = Field(
        default=True,
        description="publish the online engine's state at the end of the served day beside the snapshot "
        "(the served day's validated events through the engine: tens of seconds for a default day)",
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=["scored_events", "incidents", "evaluation"],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb",
    group_name="serving",
    kinds={"duckdb"},
    description=(
        "A read-only DuckDB snapshot for the API: the scored events, incidents and incident members of the "
        "last `days` partitions up to this one, the model registry and evaluation metrics; published as a "
        "new file and made current with an atomic rename of data/snapshots/current.json. Beside it, the "
        "online engine's state at the end of the served day (its validated events fed in order), which "
        "the API restores when it starts."
    ),
)
def api_snapshot(
    context: dg.AssetExecutionContext,
    config: SnapshotConfig,
    warehouse: WarehouseResource,
    snapshots: SnapshotPublisherResource,
) -> dg.MaterializeResult:
    day = dt.date.fromisoformat(context.partition_key)
    with warehouse.connection() as con:
        # the API serves the latest days: a backfill of an older day republishes the latest window
        through = max(day, snapshot.latest_scored_day(con) or day)
        build = (
            (lambda path: online_checkpoint.build(con, through, path)) if config.online_checkpoint else None
        )
        pointer = snapshots.publisher().publish(con, through, config.days, checkpoint=build)
    if "superseded" in pointer:
        context.log.info(f"a newer snapshot (through {pointer['through']}) is current: this one was dropped")
    return dg.MaterializeResult(
        metadata={
            "file": pointer["file"],
            "through": pointer["through"],
            "published_at": pointer["published_at"],
            **{f"rows/{table}": n for table, n in pointer["rows"].items()},
            **{
                f"checkpoint/{k}": pointer["checkpoint"][k]
                for k in ("file", "events", "seconds")
                if "checkpoint" in pointer
            },
        }
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=["scored_transactions", "transaction_incidents", "transaction_evaluation"],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb",
    group_name="serving",
    kinds={"duckdb"},
    description=(
        "Publishes the same API snapshot as api_snapshot when a day of transactions is scored: every "
        "transaction with its scores (the history the API computes features from), transaction incidents "
        "and metrics, with the logs' tables of the latest scored day."
    ),
)
def transaction_snapshot(
    context: dg.AssetExecutionContext,
    config: SnapshotConfig,
    warehouse: WarehouseResource,
    snapshots: SnapshotPublisherResource,
) -> dg.MaterializeResult:
    with warehouse.connection() as con:
        through = snapshot.latest_scored_day(con) or dt.date.fromisoformat(context.partition_key)
        pointer = snapshots.publisher().publish(con, through, config.days)
    return dg.MaterializeResult(
        metadata={
            "file": pointer["file"],
            "published_at": pointer["published_at"],
            **{f"rows/{table}": n for table, n in pointer["rows"].items()},
        }
    )
