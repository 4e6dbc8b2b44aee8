"""The one Definitions object of the code location (``workspace.yaml`` points here)."""

import dagster as dg

from bankanom_pipeline.detection.assets import (
    evaluation,
    incidents,
    model_assets,
    promoted_models,
    scored_events,
)
from bankanom_pipeline.ingest.assets import raw_logs
from bankanom_pipeline.jobs import features_job, ingest_job, pipeline_job, pipeline_schedule, train_job
from bankanom_pipeline.serving.assets import api_snapshot
from bankanom_pipeline.sqlmodels.assets import build_sql_assets
from bankanom_pipeline.validation.assets import log_labels, validated_logs
from bankanom_pipeline.warehouse.resource import WarehouseResource

defs = dg.Definitions(
    assets=[
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
    ],
    jobs=[ingest_job, features_job, pipeline_job, train_job],
    schedules=[pipeline_schedule],
    resources={"warehouse": WarehouseResource()},
)
