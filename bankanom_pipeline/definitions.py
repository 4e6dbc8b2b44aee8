"""The one Definitions object of the code location (``workspace.yaml`` points here)."""

import dagster as dg

from bankanom_pipeline.automation.sensors import FOLLOW_UPSTREAM, schedules, sensors
from bankanom_pipeline.detection.assets import (
    evaluation,
    incidents,
    model_assets,
    promoted_models,
    promoted_transaction_models,
    scored_events,
    transaction_model_assets,
)
from bankanom_pipeline.distributed.celery import executor as celery_executor
from bankanom_pipeline.distributed.checks import check_executor
from bankanom_pipeline.ingest.assets import raw_logs
from bankanom_pipeline.jobs import (
    features_job,
    ingest_job,
    pipeline_job,
    train_job,
    transaction_features_job,
    transaction_train_job,
    transactions_job,
)
from bankanom_pipeline.serving.assets import api_snapshot, transaction_snapshot
from bankanom_pipeline.sqlmodels.assets import build_sql_assets
from bankanom_pipeline.transactions.assets import transaction_assets
from bankanom_pipeline.validation.assets import log_labels, validated_logs
from bankanom_pipeline.warehouse.resource import WarehouseResource


def _warehouse() -> WarehouseResource:
    warehouse = WarehouseResource()
    warehouse.check()  # a bad storage setting stops the code location from loading, naming the variable
    return warehouse


def _executor() -> dg.ExecutorDefinition:
    if check_executor() == "celery":
        return celery_executor()
    # Embedded: steps run in the run's own process. DuckDB writers are serialised by the "duckdb" pool
    # anyway, so the multiprocess executor bought no parallelism, only a Python start-up (~5-10 s of
    # imports: Dagster, GX, scikit-learn) per step.
    return dg.in_process_executor


# what follows its upstream partitions on its own (see automation/sensors.py). The lookback models and
# features_events are here because day D reads day D-1 (sqlmodels/assets.py): a late file for D-1
# rebuilds D-1's staging rows, and D's features and scores must follow.
FOLLOWERS = {
    "feat_user_activity",
    "feat_ip_activity",
    "features_events",
    "scored_events",
    "incidents",
    "evaluation",
    "api_snapshot",
    "scored_transactions",
    "transaction_incidents",
    "transaction_evaluation",
    "transaction_snapshot",
}


def _follow(spec: dg.AssetSpec) -> dg.AssetSpec:
    if spec.key.to_user_string() in FOLLOWERS:
        return spec.replace_attributes(automation_condition=FOLLOW_UPSTREAM)
    return spec


defs = dg.Definitions(
    assets=dg.map_asset_specs(
        _follow,
        [
            raw_logs,
            validated_logs,
            log_labels,
            *build_sql_assets(),
            *model_assets,
            promoted_models,
            scored_events,
            incidents,
            evaluation,
            api_snapshot,
            *transaction_assets,
            *transaction_model_assets,
            promoted_transaction_models,
            transaction_snapshot,
        ],
    ),
    jobs=[
        ingest_job,
        features_job,
        pipeline_job,
        train_job,
        transaction_features_job,
        transactions_job,
        transaction_train_job,
    ],
    schedules=schedules,
    sensors=sensors,
    resources={"warehouse": _warehouse()},
    executor=_executor(),
)
