"""Dagster assets of bank transactions: raw_transactions, validated_transactions, transaction_labels,
scored_transactions, transaction_evaluation and the transaction_reranker. The feature and incident
tables are SQL models (``dbt_like_sql/transactions/``); the detectors are trained and promoted by the
shared detection assets, the re-ranker from analysts' labels (``transactions/reranking.py``)."""

import dagster as dg
import polars as pl

from bankanom_pipeline import feedback, settings
from bankanom_pipeline.defs.conditions import FOLLOW_UPSTREAM
from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import RegistryResource, WarehouseResource
from bankanom_pipeline.defs.results import (
    ValidationConfig,
    counts_reconciled,
    evaluation_result,
    first_finite,
    rejected_metadata,
    reranker_result,
    scored_result,
    validation_checks,
    validation_result,
)
from bankanom_pipeline.detection.day_evaluation import evaluate_transactions
from bankanom_pipeline.detection.sources import TRANSACTIONS
from bankanom_pipeline.transactions import reranking
from bankanom_pipeline.transactions.raw import labels_files, load_partition

GROUP = "transactions"


@dg.asset(
    partitions_def=daily_partitions,
    pool="duckdb",
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "Transaction CSV lines delivered on one UTC day (landing/transactions/<day>/*.csv), every field as "
        "sent; lines that cannot be read as a record go to raw_transactions_rejected with the reason."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            "counts_reconcile",
            asset="raw_transactions",
            blocking=True,
            description="data lines read = loaded + rejected",
        )
    ],
)
def raw_transactions(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    day = context.partition_key
    with warehouse.connection() as con:
        counts = load_partition(con, warehouse.landing_transactions, day)
        rejected = rejected_metadata(con, "raw_transactions_rejected", day, counts.rejected_by_reason)
    if counts.files == 0:
        context.log.warning(f"no transaction files for {day} under {warehouse.landing_transactions / day}")
    return dg.MaterializeResult(
        metadata={
            **{k: v for k, v in counts.as_dict().items() if k != "rejected_by_reason"},
            "dagster/row_count": counts.loaded,
            **rejected,
        },
        check_results=[counts_reconciled(counts)],
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=["raw_transactions"],
    pool="duckdb",
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "raw_transactions typed and checked against transaction_rules.yaml (Great Expectations); failing "
        "rows and duplicate TransactionIDs go to quarantine_transactions with the rules they broke."
    ),
    check_specs=validation_checks("validated_transactions", "transaction_rules"),
)
def validated_transactions(
    context: dg.AssetExecutionContext, config: ValidationConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    # validation (and pandas, which it runs on) is imported by the steps that validate, not by every
    # process loading the code location
    from bankanom_pipeline.defs.validation.gx import GX
    from bankanom_pipeline.transactions.validation import validate_partition

    with warehouse.connection() as con:
        counts, outcomes = validate_partition(con, context.partition_key, GX)
    return validation_result(counts, outcomes, config.max_quarantine_share, "transaction_rules")


@dg.asset(
    partitions_def=daily_partitions,
    pool="duckdb",
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "Ground truth of synthetic deliveries (the *.labels.csv beside a generated CSV): evaluation only, "
        "never a feature. Empty for real files, which carry no label."
    ),
)
def transaction_labels(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from bankanom_pipeline.transactions.validation import load_labels

    day = context.partition_key
    files = labels_files(warehouse.landing_transactions / day)
    with warehouse.connection() as con:
        rows, repeated = load_labels(con, files, day)
        fraud = con.execute(
            "SELECT count(*) FILTER (WHERE is_fraud), count(DISTINCT instance_id) FROM transaction_labels "
            "WHERE partition_date = ?",
            [day],
        ).fetchone()
    if repeated:
        context.log.warning(f"{repeated} label rows repeat a TransactionID already labelled; first kept")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "repeated_label_rows": repeated,
            "files": len(files),
            "fraud": fraud[0],
            "fraud_instances": fraud[1],
        }
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=["features_transactions", "promoted_transaction_models"],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb",
    group_name=GROUP,
    kinds={"duckdb", "scikitlearn"},
    description=(
        "Every transaction of the day scored by the promoted transaction models (the logs' scoring code): "
        "0..1 scores, per-model flags, the ensemble decision, and the top deviating features of each "
        "anomalous transaction. With a promoted transaction re-ranker, its rerank_score and decision "
        "(is_anomaly; the unsupervised one in ensemble_flag); rerank_score null without one."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            "every_transaction_scored",
            asset="scored_transactions",
            blocking=True,
            description="one scored row per features_transactions row",
        )
    ],
)
def scored_transactions(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, registry: RegistryResource
) -> dg.MaterializeResult:
    day = context.partition_key
    result = scored_result(
        warehouse, registry, TRANSACTIONS, day, "every_transaction_scored", "anomalous_transactions"
    )
    source_registry = registry.registry(TRANSACTIONS)
    with warehouse.connection() as con:
        reranked = reranking.rerank_day(con, day, source_registry, source_registry.load_current())
    if reranked["newly_flagged"] or reranked["reranked_flagged"] != reranked["unsupervised_flagged"]:
        context.log.info(f"re-ranked by {reranked['reranker']}: {reranked}")
    metadata = {**result.metadata, **reranked, "anomalous_transactions": reranked["reranked_flagged"]}
    return dg.MaterializeResult(metadata=metadata, check_results=result.check_results)


@dg.asset(
    deps=["scored_transactions"],
    pool="duckdb",
    group_name="feedback_learning",
    kinds={"scikitlearn"},
    description=(
        "A new transaction re-ranker version learnt from analysts' labels on transactions (the feedback "
        "API's label that counts per transaction) over the stored features and the ensemble score; "
        "gated on a hashed held-out share of the labels and promoted when it beats the unsupervised order "
        "there. With too few labels it records how many it has and needs, and nothing changes."
    ),
)
def transaction_reranker(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, registry: RegistryResource
) -> dg.MaterializeResult:
    labels = feedback.labels(feedback.read(settings.feedback_path()), "transaction")
    with warehouse.connection() as con:
        outcome = reranking.train(con, registry.registry(TRANSACTIONS), labels)
    return reranker_result(context, outcome, labels_by_selection=dg.MetadataValue.json(outcome.by_selection))


@dg.asset(
    partitions_def=daily_partitions,
    deps=["scored_transactions", "transaction_incidents", "transaction_labels"],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb",
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "The day's transaction detection against the synthetic labels (the only asset that reads "
        "transaction_labels): event metrics per model and for the predecessor-style baseline, recall and "
        "pattern accuracy per fraud pattern, incident precision. Written to "
        "transaction_evaluation_metrics and transaction_evaluation_patterns."
    ),
)
def transaction_evaluation(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    from bankanom_pipeline.transactions.evaluation import add_unsupervised_incident_metrics

    day = context.partition_key
    with warehouse.connection() as con:
        result = evaluate_transactions(con, day)
        before = add_unsupervised_incident_metrics(con, day)
    if before is not None:
        figures = dict(zip(before["metric"], before["value"], strict=True))
        context.log.info(f"without the re-ranker: {figures}")
    ensemble = (pl.col("model") == "ensemble") & (pl.col("metric") == "precision")
    return evaluation_result(
        context,
        warehouse,
        result,
        labels="transaction_labels",
        curves_table="transaction_evaluation_curves",
        breakdown="patterns",
        extra=lambda metrics: {
            "precision_synthetic": first_finite(metrics.filter(ensemble)["value"]),
            **({} if before is None else {"incidents_without_reranker": dg.MetadataValue.json(figures)}),
        },
    )


transaction_assets = [
    raw_transactions,
    validated_transactions,
    transaction_labels,
    scored_transactions,
    transaction_evaluation,
    transaction_reranker,
]
