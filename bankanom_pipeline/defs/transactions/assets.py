"""Dagster assets of bank transactions: raw_transactions, validated_transactions, transaction_labels,
scored_transactions and transaction_evaluation. The feature and incident tables are SQL models
(``dbt_like_sql/transactions/``); the models are trained and promoted by the shared detection assets."""

import base64
import datetime as dt

import dagster as dg
import numpy as np
import polars as pl

from bankanom_pipeline.defs.conditions import FOLLOW_UPSTREAM
from bankanom_pipeline.defs.detection.assets import (
    analyst_metadata,
    analyst_metrics,
    analyst_rows,
    first_finite,
    score_partition,
)
from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.defs.results import (
    ValidationConfig,
    rejected_metadata,
    validation_checks,
    validation_result,
)
from bankanom_pipeline.defs.validation.gx import GX
from bankanom_pipeline.detection.evaluation import markdown_table, metrics_wide, pr_curve_png, pr_curve_points
from bankanom_pipeline.detection.scoring import score_batches
from bankanom_pipeline.detection.sources import TRANSACTIONS
from bankanom_pipeline.transactions import evaluation as tx_evaluation
from bankanom_pipeline.transactions.raw import labels_files, load_partition
from bankanom_pipeline.transactions.scoring import top_features
from bankanom_pipeline.transactions.validation import load_labels, validate_partition
from bankanom_pipeline.warehouse.frames import read_frame, replace_partition

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
        check_results=[
            dg.AssetCheckResult(
                check_name="counts_reconcile",
                passed=counts.lines_read == counts.loaded + counts.rejected,
                metadata={
                    "lines_read": counts.lines_read,
                    "loaded": counts.loaded,
                    "rejected": counts.rejected,
                },
            )
        ],
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


SCORED_COLUMNS = [
    "partition_date",
    "transaction_id",
    "account_id",
    "ts",
    "amount",
    "transaction_type",
    "channel",
    "location",
    "device_id",
    "ip_address",
    "merchant_id",
]


SCORE_COLUMNS = ["if_score", "lof_score", "ensemble_score", "if_flag", "lof_flag", "is_anomaly"]


# the order scored_transactions is written in; (ts, transaction_id) is unique within a day
SCORED_ORDER = ["ts", "transaction_id"]


def score_transactions(frames, detectors, config) -> pl.DataFrame:
    """Scores from the shared scoring code and, for anomalous transactions, the features behind them,
    in ``SCORED_ORDER``. ``frames`` may come in any order: they are sorted here (a fifth of the CPU of
    DuckDB sorting the wide rows it reads) and scored in batches of ``chunk_rows`` of that order, the
    batches an ordered read gave (a LOF score's last bit depends on the row's place in its batch)."""
    ordered = pl.concat([f for f in frames if f.height]).sort(SCORED_ORDER)
    batches = ordered.iter_slices(config.scoring.chunk_rows)
    scored = score_batches(batches, detectors, config, SCORED_COLUMNS + config.feature_names)
    flagged = np.flatnonzero(scored["is_anomaly"].to_numpy())
    top = pl.DataFrame({"_row": pl.Series(flagged, dtype=pl.UInt32)}).with_columns(
        top_features(scored[flagged], detectors)
    )
    out = scored.select(*SCORED_COLUMNS, *SCORE_COLUMNS).with_row_index("_row")
    return out.join(top, on="_row", how="left", maintain_order="left").drop("_row")


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
        "anomalous transaction."
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
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    return score_partition(
        warehouse,
        TRANSACTIONS,
        context.partition_key,
        columns=SCORED_COLUMNS,
        scorer=score_transactions,
        table="scored_transactions",
        check_name="every_transaction_scored",
        flagged_key="anomalous_transactions",
    )


# the day's flagged transactions: what analysts mark in the console
_FLAGGED = "SELECT transaction_id FROM scored_transactions WHERE partition_date = ? AND is_anomaly"

# the predecessor's approach as a yardstick: a default Isolation Forest on the CSV's raw numbers
BASELINE_COLUMNS = ["amount", "duration_s", "login_attempts", "balance", "customer_age"]
BASELINE_THRESHOLD = 0.5  # the paper's (and sklearn's contamination="auto") cut on -score_samples


def _baseline_scores(con, day: str, ids: pl.Series) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    columns = ", ".join(BASELINE_COLUMNS)
    day_rows = read_frame(
        con, f"SELECT transaction_id, {columns} FROM validated_transactions WHERE partition_date = ?", [day]
    )
    sample = day_rows.sample(min(day_rows.height, 200_000), seed=7)
    model = IsolationForest(random_state=7, n_jobs=-1).fit(sample.drop("transaction_id").to_numpy())
    ordered = pl.DataFrame({"transaction_id": ids}).join(
        day_rows, on="transaction_id", how="left", maintain_order="left"
    )
    return -model.score_samples(ordered.drop("transaction_id").to_numpy())


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
    day = context.partition_key
    with warehouse.connection() as con:
        labels = read_frame(con, "SELECT * FROM transaction_labels WHERE partition_date = ?", [day])
        if labels.height == 0:
            context.log.warning(f"no ground truth for {day} in transaction_labels: nothing evaluated")
            analyst = analyst_metrics(con, day, "transaction", _FLAGGED)
            if analyst["analyst_labelled"]:
                replace_partition(
                    con, "transaction_evaluation_metrics", analyst_rows(analyst, "ensemble", day), day
                )
            return dg.MaterializeResult(
                metadata={"evaluated": False, "reason": "no transaction_labels", **analyst_metadata(analyst)}
            )
        scored = read_frame(
            con,
            "SELECT * EXCLUDE (top_features) FROM scored_transactions WHERE partition_date = ? "
            "ORDER BY transaction_id",
            [day],
        )
        incidents = read_frame(con, "SELECT * FROM transaction_incidents WHERE partition_date = ?", [day])
        baseline = _baseline_scores(con, day, scored["transaction_id"])
        scored = scored.with_columns(
            baseline_score=pl.Series(baseline), baseline_flag=pl.Series(baseline >= BASELINE_THRESHOLD)
        )
        models = {
            "isolation_forest": ("if_score", "if_flag"),
            "local_outlier_factor": ("lof_score", "lof_flag"),
            "ensemble": ("ensemble_score", "is_anomaly"),
            "baseline_isolation_forest": ("baseline_score", "baseline_flag"),
        }
        metrics, patterns = tx_evaluation.evaluate(scored, labels, incidents, models)
        analyst = analyst_metrics(con, day, "transaction", _FLAGGED)
        if analyst["analyst_labelled"]:
            metrics = pl.concat([metrics, analyst_rows(analyst, "ensemble", day).drop("partition_date")])
        date = pl.lit(day).str.to_date().alias("partition_date")
        replace_partition(con, "transaction_evaluation_metrics", metrics.select(date, pl.all()), day)
        replace_partition(con, "transaction_evaluation_patterns", patterns.select(date, pl.all()), day)
    truth = (
        scored.join(labels, on="transaction_id", how="left", maintain_order="left")["is_fraud"]
        .fill_null(False)
        .to_numpy()
    )
    curves = {name: scored[column].to_numpy() for name, (column, _) in models.items()}
    png = pr_curve_png(truth, curves)
    with warehouse.connection() as con:
        points = pr_curve_points(truth, curves, dt.date.fromisoformat(day))
        replace_partition(con, "transaction_evaluation_curves", points, day)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": metrics.height,
            "event_metrics": dg.MetadataValue.md(markdown_table(metrics_wide(metrics))),
            "patterns": dg.MetadataValue.md(markdown_table(patterns)),
            "precision_synthetic": first_finite(
                metrics.filter((pl.col("model") == "ensemble") & (pl.col("metric") == "precision"))["value"]
            ),
            **analyst_metadata(analyst),
            "pr_curve": dg.MetadataValue.md(
                f"![PR curves](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
        }
    )


transaction_assets = [
    raw_transactions,
    validated_transactions,
    transaction_labels,
    scored_transactions,
    transaction_evaluation,
]
