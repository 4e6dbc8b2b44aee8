import dagster as dg

from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.detection.sources import LOGS, Source

_daily = (
    dg.AssetSelection.all()
    - dg.AssetSelection.groups(
        "seeds", "training", "transaction_training", "transactions", "feedback_learning"
    )
    - dg.AssetSelection.assets("transaction_snapshot")
)

# Everything daily: landing files -> features -> scored_events -> incidents -> evaluation, scored with the
# promoted models (train_job must have promoted a pair once).
pipeline_job = dg.define_asset_job(
    "pipeline_job",
    selection=_daily,
    partitions_def=daily_partitions,
    description="One day end to end with the promoted models, from landing files to incidents and evaluation.",
)
train_job = dg.define_asset_job(
    "train_job",
    selection=dg.AssetSelection.groups("training"),
    description=(
        "Train both detectors on detection.yaml's window (ending at the latest day of features_events by "
        "default), check them, and promote the pair when every blocking check passes."
    ),
)


def train_run_config(end_date: str, source: Source = LOGS) -> dict:
    """Run config of ``source``'s training job (``train_job`` for logs, ``transaction_train_job``) for a
    training window ending at ``end_date``."""
    return {
        "ops": {
            source.model_asset(name): {"config": {"end_date": end_date}} for name in source.config.model_names
        }
    }


incident_reranker_job = dg.define_asset_job(
    "incident_reranker_job",
    selection=dg.AssetSelection.assets("incident_reranker"),
    description=(
        "Learn an incident re-ranker from the analysts' labels so far, gate it on a held-out share of "
        "them and promote it on a pass; the next pipeline_job's incident_reranks uses it."
    ),
)
