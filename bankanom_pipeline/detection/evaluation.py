"""Evaluation against the generator's ground truth: the only place labels are used.

Pure functions over numpy arrays and polars frames; the tidy tables ``evaluate`` returns are what the
evaluation asset writes to DuckDB (``evaluation_metrics``, ``evaluation_scenarios``) and shows as
metadata (``markdown_table``, ``pr_curve_png``).

Label columns are expected under a ``label_`` prefix (``join_labels`` does it), so they can never be
confused with the detector's own ``is_anomaly`` decision.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

import numpy as np
import polars as pl

# model name -> (score column, flag column or a threshold on the score)
DEFAULT_MODELS: dict[str, tuple[str, str | float]] = {
    "isolation_forest": ("if_score", "if_flag"),
    "local_outlier_factor": ("lof_score", "lof_flag"),
    "ensemble": ("ensemble_score", "is_anomaly"),
}
# the targets: (metric, model, comparison, bound)
TARGETS = [
    ("min_scenario_recall", "incidents", ">=", 0.95),
    ("incident_precision", "incidents", ">=", 0.90),
    ("fp_per_10k_normal", "ensemble", "<=", 50.0),
    ("rca_scenario_top1", "incidents", ">=", 0.90),
]


def join_labels(scored: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """``scored`` with ``log_labels`` columns joined by event_id as ``label_*`` (events without a label
    row count as normal)."""
    renamed = labels.select(
        "event_id",
        pl.col("is_anomaly").alias("label_is_anomaly"),
        pl.col("anomaly_id").alias("label_anomaly_id"),
        pl.col("instance_id").alias("label_instance_id"),
    )
    return scored.join(renamed, on="event_id", how="left").with_columns(
        pl.col("label_is_anomaly").fill_null(False)
    )


def event_metrics(labels: np.ndarray, scores: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    """Event-level metrics of one model. ``flags``: its decision; ``scores``: for the AUCs (nan when
    only one class is present)."""
    # scikit-learn where it is used: the code location imports this module and most processes loading
    # it never evaluate
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    flags = np.asarray(flags, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    tp = int((labels & flags).sum())
    fp = int((~labels & flags).sum())
    fn = int((labels & ~flags).sum())
    normal = int((~labels).sum())
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    both = 0 < labels.sum() < len(labels)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "pr_auc": float(average_precision_score(labels, scores)) if both else math.nan,
        "roc_auc": float(roc_auc_score(labels, scores)) if both else math.nan,
        "fp_per_10k_normal": fp / normal * 10_000 if normal else math.nan,
        "flagged": float(tp + fp),
        "true_positives": float(tp),
        "false_positives": float(fp),
    }


def instance_recall(
    events: pl.DataFrame, incident_events: pl.DataFrame, incidents: pl.DataFrame
) -> pl.DataFrame:
    """Per anomaly instance: detected when any of its events is in a *reported* incident.

    ``events``: event_id, label_is_anomaly, label_anomaly_id, label_instance_id. Returns one row per
    instance: label_instance_id, label_anomaly_id, events, detected."""
    reported = incident_events.join(
        incidents.filter(pl.col("reported")).select("incident_id"), on="incident_id"
    )
    in_reported = reported.select("event_id").unique().with_columns(pl.lit(True).alias("_in"))
    return (
        events.filter(pl.col("label_is_anomaly"))
        .join(in_reported, on="event_id", how="left")
        .group_by("label_instance_id")
        .agg(
            pl.col("label_anomaly_id").first(),
            pl.len().alias("events"),
            pl.col("_in").fill_null(False).any().alias("detected"),
        )
        .sort("label_instance_id")
    )


def true_incidents(incident_events: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """The incidents (one ``incident_id`` column) that hold an event of a real anomaly instance: what
    counts as a true incident, for incident precision and for the simulated analyst."""
    anomalous = events.filter(pl.col("label_is_anomaly")).select("event_id")
    return incident_events.join(anomalous, on="event_id").select("incident_id").unique()


def incident_precision(
    incidents: pl.DataFrame, incident_events: pl.DataFrame, events: pl.DataFrame
) -> tuple[float, int, int]:
    """(share of reported incidents that contain an event of a real anomaly instance, reported, true)."""
    hits = true_incidents(incident_events, events)
    reported = incidents.filter(pl.col("reported")).select("incident_id")
    n = len(reported)
    true = len(reported.join(hits, on="incident_id"))
    return (true / n if n else math.nan), n, true


def rca_accuracy(
    events: pl.DataFrame, incident_events: pl.DataFrame, incidents: pl.DataFrame
) -> pl.DataFrame:
    """Per detected instance: is the scenario / origin service of the reported incident holding most of
    its events (ties: the earliest incident id) right?

    Truth: the scenario is the label's anomaly_id; the origin service is the source_service of the
    instance's first event (by ts, then event_id), flagged or not. ``events`` needs ts and
    source_service too. Returns label_instance_id, label_anomaly_id, scenario_ok, origin_ok."""
    anomalous = events.filter(pl.col("label_is_anomaly"))
    truth = (
        anomalous.sort("ts", "event_id")
        .group_by("label_instance_id")
        .agg(pl.col("label_anomaly_id").first(), pl.col("source_service").first().alias("_origin"))
    )
    reported = incidents.filter(pl.col("reported")).select("incident_id", "scenario_id", "origin_service")
    owner = (
        anomalous.select("event_id", "label_instance_id")
        .join(incident_events.select("event_id", "incident_id"), on="event_id")
        .join(reported, on="incident_id")
        .group_by("label_instance_id", "incident_id", "scenario_id", "origin_service")
        .len()
        .sort(["label_instance_id", "len", "incident_id"], descending=[False, True, False])
        .group_by("label_instance_id", maintain_order=True)
        .first()
    )
    return (
        truth.join(owner, on="label_instance_id")
        .select(
            "label_instance_id",
            "label_anomaly_id",
            (pl.col("scenario_id") == pl.col("label_anomaly_id")).alias("scenario_ok"),
            (pl.col("origin_service") == pl.col("_origin")).alias("origin_ok"),
        )
        .sort("label_instance_id")
    )


def evaluate(
    scored: pl.DataFrame,
    incidents: pl.DataFrame,
    incident_events: pl.DataFrame,
    models: Mapping[str, tuple[str, str | float]] | None = None,
    partition_date=None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(evaluation_metrics, evaluation_scenarios)`` for one partition.

    ``scored``: every event of the partition (flagged or not) with event_id, ts, source_service, the
    models' score and flag columns, and the ``label_*`` columns (see ``join_labels``). ``models``: name ->
    (score column, flag column or threshold); default IF, LOF and the ensemble. Any extra score (a naive
    baseline) is evaluated the same way. Incident metrics are reported under model "incidents"."""
    models = dict(models or DEFAULT_MODELS)
    if partition_date is None:
        partition_date = scored["partition_date"][0] if "partition_date" in scored.columns else None
    labels = scored["label_is_anomaly"].to_numpy().astype(bool)
    rows: list[tuple[str, str, float]] = []
    for name, (score_col, flag) in models.items():
        scores = scored[score_col].to_numpy().astype(float)
        flags = scores >= flag if isinstance(flag, int | float) else scored[flag].to_numpy().astype(bool)
        rows += [(name, metric, value) for metric, value in event_metrics(labels, scores, flags).items()]

    incident_rows, per_scenario = incident_evaluation(scored, incidents, incident_events, partition_date)
    rows += [("incidents", metric, value) for metric, value in incident_rows]
    metrics = pl.DataFrame(
        {
            "partition_date": [partition_date] * len(rows),
            "model": [r[0] for r in rows],
            "metric": [r[1] for r in rows],
            "value": [float(r[2]) for r in rows],
        },
        schema_overrides={"value": pl.Float64},
    )
    return metrics, per_scenario


def incident_evaluation(
    scored: pl.DataFrame, incidents: pl.DataFrame, incident_events: pl.DataFrame, partition_date=None
) -> tuple[list[tuple[str, float]], pl.DataFrame]:
    """The incident-level figures of ``evaluate`` (metric, value) and its per-scenario table, for the
    incidents as given: the day's own, or the same with the re-ranker's suppressed ones no longer
    reported."""
    recall = instance_recall(scored, incident_events, incidents)
    precision, n_reported, n_true = incident_precision(incidents, incident_events, scored)
    rca = rca_accuracy(scored, incident_events, incidents)
    per_scenario = (
        recall.group_by("label_anomaly_id")
        .agg(pl.len().alias("instances"), pl.col("detected").sum().cast(pl.Int64).alias("detected"))
        .join(
            rca.group_by("label_anomaly_id").agg(
                pl.col("scenario_ok").mean().alias("rca_top1"),
                pl.col("origin_ok").mean().alias("origin_top1"),
            ),
            on="label_anomaly_id",
            how="left",
        )
        .select(
            pl.lit(partition_date).alias("partition_date"),
            pl.col("label_anomaly_id").alias("scenario_id"),
            pl.col("instances").cast(pl.Int64),
            "detected",
            (pl.col("detected") / pl.col("instances")).alias("recall"),
            pl.col("rca_top1").cast(pl.Float64),
            pl.col("origin_top1").cast(pl.Float64),
        )
        .sort("scenario_id")
    )
    instances = len(recall)
    rows = [
        ("incidents_total", float(len(incidents))),
        ("incidents_reported", float(n_reported)),
        ("incidents_true", float(n_true)),
        ("incident_precision", precision),
        ("instances", float(instances)),
        ("instances_detected", float(recall["detected"].sum()) if instances else 0.0),
        ("instance_recall", float(recall["detected"].mean()) if instances else math.nan),
        ("min_scenario_recall", float(per_scenario["recall"].min()) if instances else math.nan),
        ("rca_scenario_top1", float(rca["scenario_ok"].mean()) if len(rca) else math.nan),
        ("rca_origin_top1", float(rca["origin_ok"].mean()) if len(rca) else math.nan),
    ]
    return rows, per_scenario


def after_cut(incidents: pl.DataFrame, reranks: pl.DataFrame) -> pl.DataFrame:
    """``incidents`` as the incident re-ranker leaves them: the ones ``reranks`` marks suppressed are no
    longer reported (an incident the re-ranker did not score keeps its own decision)."""
    suppressed = reranks.filter(pl.col("suppressed")).select("incident_id", pl.lit(True).alias("_cut"))
    return (
        incidents.join(suppressed, on="incident_id", how="left")
        .with_columns(pl.col("reported") & pl.col("_cut").is_null())
        .drop("_cut")
    )


def check_targets(metrics: pl.DataFrame) -> pl.DataFrame:
    """The issue's targets against an ``evaluation_metrics`` table: target, bound, value, met."""
    out = []
    for metric, model, op, bound in TARGETS:
        found = metrics.filter((pl.col("metric") == metric) & (pl.col("model") == model))["value"]
        value = float(found[0]) if len(found) else math.nan
        met = (value >= bound if op == ">=" else value <= bound) if not math.isnan(value) else False
        out.append((f"{model} {metric}", f"{op} {bound:g}", value, met))
    return pl.DataFrame(out, schema=["target", "bound", "value", "met"], orient="row")


def markdown_table(frame: pl.DataFrame, digits: int = 4) -> str:
    """A small frame as a Markdown table (Dagster renders it in metadata)."""

    def cell(v) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)


def metrics_wide(metrics: pl.DataFrame) -> pl.DataFrame:
    """``evaluation_metrics`` with one row per model and one column per event metric, for display."""
    names = ["precision", "recall", "f1", "pr_auc", "roc_auc", "fp_per_10k_normal"]
    return (
        metrics.filter(pl.col("metric").is_in(names))
        .pivot(on="metric", index="model", values="value")
        .select("model", *[n for n in names if n in metrics["metric"].to_list()])
    )


def pr_curve_points(
    labels: np.ndarray, scores: Mapping[str, np.ndarray], day, max_points: int = 200
) -> pl.DataFrame:
    """The precision-recall curves of ``pr_curve_png`` as rows (partition_date, model, point, recall,
    precision), at most ``max_points`` per model: what the snapshot publishes for the console to draw."""
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels, dtype=bool)
    rows: list[tuple] = []
    if 0 < labels.sum() < len(labels):
        for name, s in scores.items():
            precision, recall, _ = precision_recall_curve(labels, np.asarray(s, dtype=float))
            step = max(1, len(recall) // max_points)
            keep = np.unique(np.r_[np.arange(0, len(recall), step), len(recall) - 1])
            rows += [
                (day, name, i, float(recall[j]), float(precision[j])) for i, j in enumerate(keep.tolist())
            ]
    return pl.DataFrame(
        rows,
        schema={
            "partition_date": pl.Date,
            "model": pl.String,
            "point": pl.Int64,
            "recall": pl.Float64,
            "precision": pl.Float64,
        },
        orient="row",
    )


def pr_curve_png(labels: np.ndarray, scores: Mapping[str, np.ndarray], max_points: int = 2000) -> bytes:
    """Precision-recall curves of several models on one plot, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    labels = np.asarray(labels, dtype=bool)
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    try:
        for name, s in scores.items():
            precision, recall, _ = precision_recall_curve(labels, np.asarray(s, dtype=float))
            # a curve has a point per distinct score; a few thousand draw the same picture
            step = max(1, len(recall) // max_points)
            ap = average_precision_score(labels, s) if 0 < labels.sum() < len(labels) else math.nan
            ax.plot(recall[::step], precision[::step], label=f"{name} (AP {ap:.3f})")
        base = labels.mean() if len(labels) else 0.0
        ax.axhline(base, color="grey", linestyle=":", label=f"anomaly share {base:.3f}")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall")
        ax.legend(loc="lower left", fontsize=8)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()
