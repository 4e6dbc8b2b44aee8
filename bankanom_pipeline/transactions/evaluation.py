"""Transaction detection measured against the synthetic labels (``transaction_labels``): the only
place transaction labels are read. Event metrics come from the logs' evaluation, so both sources are
measured the same way."""

from __future__ import annotations

import math

import duckdb
import polars as pl

from bankanom_pipeline.detection.evaluation import event_metrics
from bankanom_pipeline.warehouse.frames import read_frame, replace_partition


def evaluate(
    scored: pl.DataFrame, labels: pl.DataFrame, incidents: pl.DataFrame, models: dict[str, tuple[str, str]]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(metrics, patterns)`` of one partition.

    ``scored``: every transaction with its score and flag columns (``models``: name -> (score, flag)).
    ``labels``: transaction_id, is_fraud, pattern, instance_id (transactions without a row are normal).
    ``incidents``: transaction_incidents rows (transaction_ids, likely_pattern).
    ``patterns``: per fraud pattern, its instances, how many have a transaction in an incident (recall)
    and how many of those the incident names the right pattern (pattern_top1)."""
    joined = scored.join(
        labels.select("transaction_id", "is_fraud", "pattern", "instance_id"), "transaction_id", "left"
    )
    joined = joined.with_columns(pl.col("is_fraud").fill_null(False))
    truth = joined["is_fraud"].to_numpy()
    if "ecod_score" in scored.columns and "ecod" not in models:
        models = {**models, "ecod": ("ecod_score", "ecod_flag")}
    if reranked(scored):
        # the decision is the re-ranker's: the unsupervised ensemble is measured on its own flag
        models = {
            **models,
            "ensemble": ("ensemble_score", "ensemble_flag"),
            "reranked": ("rerank_score", "is_anomaly"),
        }
    rows = []
    for name, (score, flag) in models.items():
        values = event_metrics(truth, joined[score].to_numpy(), joined[flag].to_numpy())
        rows += [(name, metric, value) for metric, value in values.items()]

    members = incidents.select(
        "incident_id", "likely_pattern", pl.col("transaction_ids").alias("transaction_id")
    ).explode("transaction_id")
    fraud = joined.filter(pl.col("is_fraud")).join(
        members, on="transaction_id", how="left", maintain_order="left"
    )
    per_instance = fraud.group_by("instance_id").agg(
        pl.col("pattern").first(),
        pl.col("incident_id").is_not_null().any().alias("detected"),
        # the pattern named by the incident holding most of the instance's transactions
        pl.col("likely_pattern").drop_nulls().mode().first().alias("named"),
    )
    patterns = (
        per_instance.group_by("pattern")
        .agg(
            pl.len().alias("instances"),
            pl.col("detected").sum().cast(pl.Int64).alias("detected"),
            (pl.col("named") == pl.col("pattern")).filter(pl.col("detected")).mean().alias("pattern_top1"),
        )
        .with_columns(recall=pl.col("detected") / pl.col("instances"))
        .select("pattern", pl.col("instances").cast(pl.Int64), "detected", "recall", "pattern_top1")
        .sort("pattern")
    )
    fraudulent = set(fraud.filter(pl.col("incident_id").is_not_null())["incident_id"].to_list())
    n_incidents = incidents.height
    detected = per_instance.filter(pl.col("detected"))
    rows += [
        ("incidents", "incidents_total", float(n_incidents)),
        ("incidents", "incident_precision", len(fraudulent) / n_incidents if n_incidents else math.nan),
        ("incidents", "instances", float(per_instance.height)),
        (
            "incidents",
            "instance_recall",
            float(per_instance["detected"].mean()) if per_instance.height else math.nan,
        ),
        (
            "incidents",
            "pattern_top1",
            float((detected["named"] == detected["pattern"]).mean()) if detected.height else math.nan,
        ),
    ]
    metrics = pl.DataFrame(
        {"model": [r[0] for r in rows], "metric": [r[1] for r in rows], "value": [float(r[2]) for r in rows]},
        schema_overrides={"value": pl.Float64},
    )
    return metrics, patterns


def scored_day(con: duckdb.DuckDBPyConnection, day: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A delivery's ``scored_transactions`` (without top_features) and its ground truth
    (``transaction_labels``, none for a delivery without it): what ``evaluate`` measures."""
    scored = read_frame(
        con, "SELECT * EXCLUDE (top_features) FROM scored_transactions WHERE partition_date = ?", [day]
    )
    labels = read_frame(con, "SELECT * FROM transaction_labels WHERE partition_date = ?", [day])
    return scored, labels


def reranked(scored: pl.DataFrame) -> bool:
    """Whether a promoted re-ranker scored these transactions (``transactions/reranking.py``)."""
    return "rerank_score" in scored.columns and scored["rerank_score"].null_count() < scored.height


# the incidents a day would have without its re-ranker: the incidents model itself, over the unsupervised
# decision (ensemble_flag) in place of the re-ranked one, and without a re-ranked score (which decides
# whether a lone flagged transaction makes an incident)
_SCORED = "FROM scored_transactions"
_UNSUPERVISED = (
    "FROM (SELECT * REPLACE (ensemble_flag AS is_anomaly, NULL::DOUBLE AS rerank_score) "
    "FROM scored_transactions) AS scored_transactions"
)


def unsupervised_incidents(con: duckdb.DuckDBPyConnection, day: str) -> pl.DataFrame:
    """``transaction_incidents`` of ``day`` as the unsupervised decision alone would group them."""
    from bankanom_pipeline.sqlmodels.runner import Project

    sql = Project().render("transaction_incidents", day)
    if sql.count(_SCORED) != 1:
        raise ValueError(f"transaction_incidents.sql no longer reads {_SCORED!r} once: update {__name__}")
    return read_frame(con, sql.replace(_SCORED, _UNSUPERVISED))


def add_unsupervised_incident_metrics(con: duckdb.DuckDBPyConnection, day: str) -> pl.DataFrame | None:
    """With a re-ranked day, the incident metrics without the re-ranker (model ``incidents_unsupervised``)
    added to ``transaction_evaluation_metrics`` beside the re-ranked ones (model ``incidents``); returns
    them, or None for a day without a re-ranker or without ground truth."""
    scored, labels = scored_day(con, day)
    if not reranked(scored) or labels.height == 0:
        return None
    metrics, _ = evaluate(scored, labels, unsupervised_incidents(con, day), {})
    before = metrics.filter(pl.col("model") == "incidents").with_columns(
        model=pl.lit("incidents_unsupervised")
    )
    stored = read_frame(
        con,
        "SELECT * FROM transaction_evaluation_metrics WHERE partition_date = ? AND model <> 'incidents_unsupervised'",
        [day],
    )
    date = pl.lit(day).str.to_date().alias("partition_date")
    rows = pl.concat([stored, before.select(date, pl.all())], how="diagonal_relaxed")
    replace_partition(con, "transaction_evaluation_metrics", rows.select(stored.columns), day)
    return before
