import dagster as dg

from bankanom_pipeline.defs.detection.assets import (
    evaluation,
    incident_reranker,
    incident_reranks,
    incidents,
    model_assets,
    promoted_models,
    scored_events,
)
from bankanom_pipeline.defs.detection.jobs import incident_reranker_job, pipeline_job, train_job

defs = dg.Definitions(
    assets=[
        *model_assets,
        promoted_models,
        scored_events,
        incidents,
        incident_reranks,
        incident_reranker,
        evaluation,
    ],
    jobs=[pipeline_job, train_job, incident_reranker_job],
)
