import dagster as dg

from bankanom_pipeline.detection.config import MODEL_NAMES
from bankanom_pipeline.detection.sources import LOGS, Source
from bankanom_pipeline.partitions import daily_partitions

_transactions = dg.AssetSelection.groups("transactions")
_daily = (
    dg.AssetSelection.all()
    - dg.AssetSelection.groups("seeds", "training", "transaction_training", "transactions")
    - dg.AssetSelection.assets("transaction_snapshot")
)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_logs"),
    partitions_def=daily_partitions,
    description="Load one day of landing logs into raw_logs.",
)
features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets("features_events", "log_labels").upstream()
    - dg.AssetSelection.groups("seeds"),
    partitions_def=daily_partitions,
    description="One day from landing files to the feature tables: raw_logs -> validated_logs -> SQL models.",
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
    return {"ops": {source.model_asset(name): {"config": {"end_date": end_date}} for name in MODEL_NAMES}}


transaction_features_job = dg.define_asset_job(
    "transaction_features_job",
    selection=dg.AssetSelection.assets("features_transactions", "transaction_labels").upstream()
    - dg.AssetSelection.groups("seeds"),
    partitions_def=daily_partitions,
    description="One delivery day of transaction CSVs to features: raw -> validated (+ quarantine) -> features.",
)
transactions_job = dg.define_asset_job(
    "transactions_job",
    selection=_transactions | dg.AssetSelection.assets("transaction_snapshot"),
    partitions_def=daily_partitions,
    description=(
        "One delivery day of transaction CSVs end to end with the promoted transaction models: raw -> "
        "validated -> features -> scored_transactions -> transaction_incidents -> evaluation -> snapshot."
    ),
)
transaction_train_job = dg.define_asset_job(
    "transaction_train_job",
    selection=dg.AssetSelection.groups("transaction_training"),
    description=(
        "Train both transaction detectors on transactions/detection.yaml's window (ending at the latest "
        "day of features_transactions by default), check them, and promote the pair."
    ),
)
