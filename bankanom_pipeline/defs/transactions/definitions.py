import dagster as dg

from bankanom_pipeline.defs.detection.assets import promoted_transaction_models, transaction_model_assets
from bankanom_pipeline.defs.transactions.assets import transaction_assets
from bankanom_pipeline.defs.transactions.jobs import (
    transaction_features_job,
    transaction_reranker_job,
    transaction_train_job,
    transactions_job,
)

defs = dg.Definitions(
    assets=[*transaction_assets, *transaction_model_assets, promoted_transaction_models],
    jobs=[transaction_features_job, transactions_job, transaction_train_job, transaction_reranker_job],
)
