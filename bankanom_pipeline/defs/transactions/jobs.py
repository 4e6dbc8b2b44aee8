import dagster as dg

from bankanom_pipeline.defs.partitions import daily_partitions

transaction_features_job = dg.define_asset_job(
    "transaction_features_job",
    selection=dg.AssetSelection.assets("features_transactions", "transaction_labels").upstream()
    - dg.AssetSelection.groups("seeds"),
    partitions_def=daily_partitions,
    description="One delivery day of transaction CSVs to features: raw -> validated (+ quarantine) -> features.",
)
transactions_job = dg.define_asset_job(
    "transactions_job",
    selection=dg.AssetSelection.groups("transactions") | dg.AssetSelection.assets("transaction_snapshot"),
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
transaction_reranker_job = dg.define_asset_job(
    "transaction_reranker_job",
    selection=dg.AssetSelection.assets("transaction_reranker"),
    description=(
        "Train a transaction re-ranker on analysts' labels (the feedback store), gate it on a held-out share "
        "of them, and promote it when it beats the unsupervised order; then re-run transactions_job for a "
        "day to re-rank it."
    ),
)
