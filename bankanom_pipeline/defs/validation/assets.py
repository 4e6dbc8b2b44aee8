"""Dagster assets: ``validated_logs`` (with quarantine and GX-backed checks) and ``log_labels``."""

import dagster as dg

from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.defs.results import ValidationConfig, validation_checks, validation_result
from bankanom_pipeline.generator.config import load_config
from bankanom_pipeline.settings import mock_config_path


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
    # validation (and pandas, which it runs on) is imported by the steps that validate, not by every
    # process loading the code location
    from bankanom_pipeline.defs.validation.gx import GX
    from bankanom_pipeline.validation.logs import validate_partition

    services = load_config(mock_config_path()).service_sources
    with warehouse.connection() as con:
        counts, outcomes = validate_partition(con, context.partition_key, services, GX)
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
    from bankanom_pipeline.validation.logs import write_labels

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
