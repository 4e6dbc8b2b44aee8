import dagster as dg

from bankanom_pipeline.defs.detection.assets import (
    evaluation,
    incidents,
    model_assets,
    promoted_models,
    scored_events,
)
from bankanom_pipeline.defs.detection.jobs import pipeline_job, train_job

defs = dg.Definitions(
    assets=[*model_assets, promoted_models, scored_events, incidents, evaluation],
    jobs=[pipeline_job, train_job],
)
