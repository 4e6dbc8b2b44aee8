"""A day of detection measured against ground truth and the analysts' labels, for logs and for
transactions: the bodies of the ``evaluation`` and ``transaction_evaluation`` assets. The only code that
reads labels. The metrics themselves are ``detection/evaluation.py``'s and ``transactions/evaluation.py``'s."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl

from bankanom_pipeline import feedback, settings
from bankanom_pipeline.detection.baseline import BASELINE_THRESHOLD, baseline_scores
from bankanom_pipeline.detection.evaluation import (
    DEFAULT_MODELS,
    after_cut,
    evaluate,
    incident_evaluation,
    join_labels,
    pr_curve_points,
)
from bankanom_pipeline.detection.registry import Registry
from bankanom_pipeline.detection.sources import LOGS, TRANSACTIONS
from bankanom_pipeline.transactions import evaluation as tx_evaluation
from bankanom_pipeline.warehouse.frames import read_frame, replace_partition, table_exists

# the day's flagged transactions: what analysts mark in the console
_FLAGGED_TRANSACTIONS = (
    "SELECT transaction_id FROM scored_transactions WHERE partition_date = ? AND is_anomaly"
)
_INCIDENTS = "SELECT incident_id FROM incidents WHERE partition_date = ?"

TRANSACTION_MODELS = {
    "isolation_forest": ("if_score", "if_flag"),
    "local_outlier_factor": ("lof_score", "lof_flag"),
    "ensemble": ("ensemble_score", "is_anomaly"),
    "baseline_isolation_forest": ("baseline_score", "baseline_flag"),
}


@dataclass
class DayEvaluation:
    analyst: dict[str, float]  # precision on the analysts' labels (``feedback.precision``)
    evaluated: bool = False  # False: no ground truth for the day, only the analysts' labels measured
    metrics: pl.DataFrame | None = None  # model, metric, value (evaluation_metrics' rows)
    breakdown: pl.DataFrame | None = None  # per scenario (logs) or per fraud pattern (transactions)
    truth: np.ndarray | None = None  # per scored item, for the PR curves
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # model -> score per scored item
    # logs, when an incident re-ranker is promoted: the per-scenario table after its cut
    breakdown_reranked: pl.DataFrame | None = None


def analyst_metrics(con: duckdb.DuckDBPyConnection, day: str, kind: str, ids_query: str) -> dict[str, float]:
    """Precision on the analysts' labels (the console's feedback) of the day's incidents or flagged
    transactions: copies the feedback file into the warehouse's ``feedback`` table first."""
    rows = feedback.copy_to_warehouse(con, settings.feedback_path())
    ids = [r[0] for r in con.execute(ids_query, [day]).fetchall()]
    return feedback.precision(rows, kind, ids)


def analyst_rows(analyst: dict[str, float], model: str, day: str) -> pl.DataFrame:
    """``analyst`` as evaluation-metrics rows (partition_date, model, metric, value)."""
    return pl.DataFrame(
        {
            "partition_date": [dt.date.fromisoformat(day)] * len(analyst),
            "model": [model] * len(analyst),
            "metric": list(analyst),
            "value": [float(v) for v in analyst.values()],
        }
    )


def evaluate_logs(
    con: duckdb.DuckDBPyConnection, day: str, registry: Registry, baseline: bool = True
) -> DayEvaluation:
    """Write the day's evaluation_metrics and evaluation_scenarios (event metrics per model and for the
    naive baseline, instance recall per scenario, incident precision, RCA accuracy; analyst precision)."""
    scored, labels = log_day(con, day)
    analyst = analyst_metrics(con, day, "incident", _INCIDENTS)
    if labels.height == 0:
        if analyst["analyst_labelled"]:
            replace_partition(con, "evaluation_metrics", analyst_rows(analyst, "incidents", day), day)
        return DayEvaluation(analyst)
    built = read_frame(con, "SELECT * FROM incidents WHERE partition_date = ?", [day])
    members = read_frame(con, "SELECT * FROM incident_events WHERE partition_date = ?", [day])
    models = dict(DEFAULT_MODELS)
    if baseline:
        window = registry.manifest(registry.current()["isolation_forest"])["training_window"]
        scores = baseline_scores(con, LOGS, day, scored["event_key"], window)
        scored = scored.with_columns(baseline_score=pl.Series(scores))
        models["baseline_isolation_forest"] = ("baseline_score", "baseline_score_flag")
        scored = scored.with_columns(baseline_score_flag=pl.col("baseline_score") >= BASELINE_THRESHOLD)
    joined = join_labels(scored, labels)
    date = dt.date.fromisoformat(day)
    metrics, scenarios = evaluate(joined, built, members, models, partition_date=date)
    reranks = incident_reranks(con, day)
    scenarios_reranked = None
    if reranks.height:
        after = after_cut(built, reranks)
        rows, scenarios_reranked = incident_evaluation(joined, after, members, date)
        suppressed = built.join(reranks.filter(pl.col("suppressed")), on="incident_id")
        rows += [("incidents_suppressed", float(suppressed["reported"].sum()))]
        metrics = pl.concat(
            [
                metrics,
                pl.DataFrame(
                    [(date, "incidents_reranked", m, float(v)) for m, v in rows],
                    schema=metrics.schema,
                    orient="row",
                ),
            ]
        )
        replace_partition(con, "evaluation_scenarios_reranked", scenarios_reranked, day)
    if analyst["analyst_labelled"]:
        metrics = pl.concat([metrics, analyst_rows(analyst, "incidents", day)], how="vertical_relaxed")
    replace_partition(con, "evaluation_metrics", metrics, day)
    replace_partition(con, "evaluation_scenarios", scenarios, day)
    truth = joined["label_is_anomaly"].to_numpy()
    curves = {name: joined[column].to_numpy() for name, (column, _) in models.items()}
    return DayEvaluation(analyst, True, metrics, scenarios, truth, curves, scenarios_reranked)


def log_day(con: duckdb.DuckDBPyConnection, day: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The log day's ``scored_events`` (by event_key) and its ground truth (``log_labels``, none for a
    day without it)."""
    scored = read_frame(con, "SELECT * FROM scored_events WHERE partition_date = ? ORDER BY event_key", [day])
    labels = read_frame(con, "SELECT * FROM log_labels WHERE partition_date = ?", [day])
    return scored, labels


def incident_reranks(con: duckdb.DuckDBPyConnection, day: str) -> pl.DataFrame:
    """The day's rows of ``incident_reranks``: incident_id, suppressed (none before a re-ranker is
    promoted)."""
    if not table_exists(con, "incident_reranks"):
        return pl.DataFrame(schema={"incident_id": pl.String, "suppressed": pl.Boolean})
    return read_frame(
        con, "SELECT incident_id, suppressed FROM incident_reranks WHERE partition_date = ?", [day]
    )


def evaluate_transactions(con: duckdb.DuckDBPyConnection, day: str) -> DayEvaluation:
    """Write the day's transaction_evaluation_metrics and transaction_evaluation_patterns (event metrics
    per model and for the predecessor-style baseline, recall and pattern accuracy per fraud pattern,
    incident precision; analyst precision)."""
    labels = read_frame(con, "SELECT * FROM transaction_labels WHERE partition_date = ?", [day])
    if labels.height == 0:
        analyst = analyst_metrics(con, day, "transaction", _FLAGGED_TRANSACTIONS)
        if analyst["analyst_labelled"]:
            rows = analyst_rows(analyst, "ensemble", day)
            replace_partition(con, "transaction_evaluation_metrics", rows, day)
        return DayEvaluation(analyst)
    scored = read_frame(
        con,
        "SELECT * EXCLUDE (top_features) FROM scored_transactions WHERE partition_date = ? "
        "ORDER BY transaction_id",
        [day],
    )
    incidents = read_frame(con, "SELECT * FROM transaction_incidents WHERE partition_date = ?", [day])
    baseline = baseline_scores(con, TRANSACTIONS, day, scored["transaction_id"])
    scored = scored.with_columns(
        baseline_score=pl.Series(baseline), baseline_flag=pl.Series(baseline >= BASELINE_THRESHOLD)
    )
    metrics, patterns = tx_evaluation.evaluate(scored, labels, incidents, TRANSACTION_MODELS)
    analyst = analyst_metrics(con, day, "transaction", _FLAGGED_TRANSACTIONS)
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
    curves = {name: scored[column].to_numpy() for name, (column, _) in TRANSACTION_MODELS.items()}
    return DayEvaluation(analyst, True, metrics, patterns, truth, curves)


def write_curves(con: duckdb.DuckDBPyConnection, table: str, evaluation: DayEvaluation, day: str) -> None:
    """The day's precision-recall curve points of every model into ``table``."""
    points = pr_curve_points(evaluation.truth, evaluation.curves, dt.date.fromisoformat(day))
    replace_partition(con, table, points, day)
