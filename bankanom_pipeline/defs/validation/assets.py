"""Dagster assets: ``validated_logs`` (with quarantine and GX-backed checks) and ``log_labels``."""

import dagster as dg

from bankanom_pipeline.generator.config import load_config
from bankanom_pipeline.partitions import daily_partitions
from bankanom_pipeline.settings import mock_config_path
from bankanom_pipeline.validation.logs import validate_partition, write_labels
from bankanom_pipeline.validation.quarantine import ValidationCounts
from bankanom_pipeline.validation.rules import Outcome
from bankanom_pipeline.warehouse.resource import WarehouseResource


class ValidationConfig(dg.Config):
    max_quarantine_share: float = 0.05  # above this, downstream work stops: the input is suspect


def validation_checks(asset: str, rules_check: str) -> list[dg.AssetCheckSpec]:
    """The checks every validated table carries (logs and transactions alike)."""
    return [
        dg.AssetCheckSpec(
            "counts_reconcile",
            asset=asset,
            blocking=True,
            description="raw = validated + quarantined + duplicates",
        ),
        dg.AssetCheckSpec(
            "not_empty", asset=asset, blocking=True, description="the partition has validated rows"
        ),
        dg.AssetCheckSpec(
            "quarantine_share",
            asset=asset,
            blocking=True,
            description="quarantined share of raw rows at most max_quarantine_share",
        ),
        dg.AssetCheckSpec(
            rules_check,
            asset=asset,
            description="Great Expectations results per rule (warns on any failing row)",
        ),
    ]


def validation_result(
    counts: ValidationCounts, outcomes: list[Outcome], max_quarantine_share: float, rules_check: str
) -> dg.MaterializeResult:
    """Metadata (reconciled counts, GX results per rule) and the results of ``validation_checks``."""
    share = counts.quarantined / counts.raw if counts.raw else 0.0
    rows = "\n".join(
        f"| {o.check.label} | `{o.check.expectation}` | {o.unexpected_count} | {o.unexpected_percent:.3f} "
        f"| {', '.join(map(str, o.examples))[:120]} |"
        for o in outcomes
    )
    gx_table = dg.MetadataValue.md(
        f"| rule | expectation | unexpected | % | examples |\n|---|---|---|---|---|\n{rows}"
    )
    reconcile = {
        "raw": counts.raw,
        "validated": counts.validated,
        "quarantined": counts.quarantined,
        "duplicates": counts.duplicates,
    }
    return dg.MaterializeResult(
        metadata={
            **reconcile,
            "dagster/row_count": counts.validated,
            "quarantine_share": share,
            "quarantined_by_rule": dg.MetadataValue.json(counts.quarantined_by_rule),
            rules_check: gx_table,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="counts_reconcile",
                passed=counts.raw == counts.validated + counts.quarantined + counts.duplicates,
                metadata=reconcile,
            ),
            dg.AssetCheckResult(
                check_name="not_empty", passed=counts.validated > 0, metadata={"validated": counts.validated}
            ),
            dg.AssetCheckResult(
                check_name="quarantine_share",
                passed=share <= max_quarantine_share,
                metadata={"quarantine_share": share, "max_quarantine_share": max_quarantine_share},
            ),
            dg.AssetCheckResult(
                check_name=rules_check,
                passed=all(o.unexpected_count == 0 for o in outcomes),
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "results": gx_table,
                    "failing_rules": sum(o.unexpected_count > 0 for o in outcomes),
                },
            ),
        ],
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=["raw_logs"],
    pool="duckdb",
    group_name="validation",
    kinds={"duckdb"},
    description=(
        "raw_logs typed and checked against log_rules.yaml (Great Expectations); failing rows and "
        "duplicate event_ids go to quarantine_logs with the rules they broke. validated_logs is a view: "
        "the day's raw rows less the quarantined ones, once validation has checked that raw load."
    ),
    check_specs=validation_checks("validated_logs", "log_rules"),
)
def validated_logs(
    context: dg.AssetExecutionContext, config: ValidationConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    services = load_config(mock_config_path()).service_sources
    with warehouse.connection() as con:
        counts, outcomes = validate_partition(con, context.partition_key, services)
    return validation_result(counts, outcomes, config.max_quarantine_share, "log_rules")


@dg.asset(
    partitions_def=daily_partitions,
    deps=["raw_logs"],
    pool="duckdb",
    group_name="evaluation",
    kinds={"duckdb"},
    description="Ground truth of mock traffic per event (anomaly_details). Evaluation only, never a feature.",
)
def log_labels(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    with warehouse.connection() as con:
        rows = write_labels(con, context.partition_key)
        anomalous = con.execute(
            "SELECT count(*) FILTER (WHERE is_anomaly), count(DISTINCT instance_id) FROM log_labels "
            "WHERE partition_date = ?",
            [context.partition_key],
        ).fetchone()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "anomalous_events": anomalous[0],
            "anomaly_instances": anomalous[1],
        }
    )
