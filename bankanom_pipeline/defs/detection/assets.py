"""Dagster assets of detection: the two models (with their promotion gate), the promotion itself,
scored_events, incidents, the incident re-ranker learnt from analysts' labels and its incident_reranks,
and evaluation."""

import math
import sqlite3

import dagster as dg
import polars as pl

from bankanom_pipeline import feedback, settings
from bankanom_pipeline.defs.conditions import FOLLOW_UPSTREAM
from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import RegistryResource, WarehouseResource
from bankanom_pipeline.defs.results import evaluation_result, first_finite, reranker_result, scored_result
from bankanom_pipeline.detection import training
from bankanom_pipeline.detection.baseline import BaselineMismatch
from bankanom_pipeline.detection.day_evaluation import evaluate_logs
from bankanom_pipeline.detection.day_incidents import build_day
from bankanom_pipeline.detection.evaluation import (
    check_targets,
    markdown_table,
)
from bankanom_pipeline.detection.registry import record, record_promotion, record_rejection
from bankanom_pipeline.detection.sources import LOGS, TRANSACTIONS, Source
from bankanom_pipeline.live.reconcile import live_store_path, reconcile_day
from bankanom_pipeline.reranking import incident_reranker as reranking
from bankanom_pipeline.warehouse.frames import replace_partition


class TrainingConfig(dg.Config):
    end_date: str = ""  # last day of the training window (default: the latest day in features_events)


def _model_asset(name: str, source: Source) -> dg.AssetsDefinition:
    asset_name = source.model_asset(name)

    @dg.asset(
        name=asset_name,
        deps=[source.features_table],
        pool="duckdb",
        group_name=source.training_group,
        kinds={"scikitlearn", "duckdb"},
        description=(
            f"A new {name.replace('_', ' ')} version for {source.name} trained (unsupervised) on "
            f"{source.features_table} over {source.config_path.name}'s training window; written to the "
            "registry as a candidate."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "score_distribution_sane",
                asset=asset_name,
                blocking=True,
                description="finite, spread-out scores flagging a plausible share of the training window",
            ),
            dg.AssetCheckSpec(
                "not_worse_than_current",
                asset=asset_name,
                blocking=True,
                description=(
                    f"PR-AUC on the window's last labelled day at most {training.QUALITY_TOLERANCE} below "
                    "the promoted model's"
                ),
            ),
        ],
    )
    def _train(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        warehouse: WarehouseResource,
        registry: RegistryResource,
    ):
        detection = source.config
        models = registry.registry(source)
        with warehouse.connection() as con:
            end_day = config.end_date or training.latest_partition(con, source)
            trained = training.train(con, models, name, detection, end_day, source)
            record(con, trained.version, source.name)
            verdict = training.gate(con, models, name, trained, detection, end_day, source)
            if not verdict.passed:
                record_rejection(con, trained.version.version)
        manifest = trained.version.manifest
        problems = verdict.problems
        context.log.info(f"trained {manifest['version']}: {verdict.note}; problems: {problems or 'none'}")
        return dg.MaterializeResult(
            metadata={
                "version": manifest["version"],
                "training_window": f"{manifest['training_window']['start']}..{manifest['training_window']['end']}",
                "training_rows": manifest["training_rows"],
                "params": dg.MetadataValue.json(manifest["params"]),
                "features": len(manifest["features"]),
                "sha256": manifest["sha256"],
                "metrics": dg.MetadataValue.json(manifest["metrics"]),
                "path": dg.MetadataValue.path(str(trained.version.path)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="score_distribution_sane",
                    passed=not problems,
                    metadata={
                        "problems": "; ".join(problems) or "none",
                        "train_flagged_share": manifest["metrics"]["train_flagged_share"],
                    },
                ),
                dg.AssetCheckResult(
                    check_name="not_worse_than_current",
                    passed=verdict.not_worse,
                    metadata={
                        "candidate_pr_auc": _or_na(verdict.candidate_quality),
                        "current_pr_auc": _or_na(verdict.current_quality),
                        "current_version": verdict.current_version or "none",
                        "note": verdict.note,
                    },
                ),
            ],
        )

    return _train


def _or_na(value: float | None) -> float | str:
    return value if value is not None else "n/a"


def _promotion_asset(source: Source, name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        deps=[source.model_asset(model) for model in source.config.model_names],
        pool="duckdb",
        group_name=source.training_group,
        kinds={"duckdb"},
        description=(
            f"Flips the {source.name} registry's current pointer to the candidates this run trained, both "
            "at once. Runs only when every blocking check of both model assets passed."
        ),
    )
    def _promote(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, registry: RegistryResource
    ) -> dg.MaterializeResult:
        versions = {}
        for model in source.config.model_names:
            key = dg.AssetKey(source.model_asset(model))
            event = context.instance.get_latest_materialization_event(key)
            if event is None or event.asset_materialization is None:
                raise dg.Failure(f"{key.to_user_string()} has never been materialized")
            versions[model] = str(event.asset_materialization.metadata["version"].value)
        current = registry.registry(source).promote(versions)
        with warehouse.connection() as con:
            record_promotion(con, versions, source.name)
        return dg.MaterializeResult(metadata={"current": dg.MetadataValue.json(current)})

    return _promote


model_assets = [_model_asset(name, LOGS) for name in LOGS.config.model_names]
promoted_models = _promotion_asset(LOGS, "promoted_models")
transaction_model_assets = [_model_asset(name, TRANSACTIONS) for name in TRANSACTIONS.config.model_names]
promoted_transaction_models = _promotion_asset(TRANSACTIONS, "promoted_transaction_models")


@dg.asset(
    partitions_def=daily_partitions,
    deps=["features_events", "promoted_models"],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb",
    group_name="detection",
    kinds={"duckdb", "scikitlearn"},
    description=(
        "Every event of the day scored by both promoted models: normalised 0..1 scores, per-model flags "
        "and the ensemble decision (IF, whose cutoff LOF may lower within a band; see detection.yaml), with "
        "model versions."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            "every_event_scored",
            asset="scored_events",
            blocking=True,
            description="one scored row per features_events row",
        )
    ],
)
def scored_events(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, registry: RegistryResource
) -> dg.MaterializeResult:
    return scored_result(
        warehouse, registry, LOGS, context.partition_key, "every_event_scored", "anomalous_events"
    )


@dg.asset(
    partitions_def=daily_partitions,
    deps=["scored_events"],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb",
    group_name="detection",
    kinds={"duckdb"},
    description=(
        "The day's anomalous events grouped into incidents (shared user / IP / network / correlation id / "
        "service within time gaps, see incidents.yaml), each with severity, origin, top contributing "
        "features and the best-matching scenario signature. Members in incident_events."
    ),
)
def incidents(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, registry: RegistryResource
) -> dg.MaterializeResult:
    detectors = registry.registry(LOGS).load_current()
    with warehouse.connection() as con:
        result = build_day(con, context.partition_key, detectors)
    built, rows = result.incidents, result.rows
    by_severity = built.group_by("severity").len().sort("severity").rows() if rows else []
    reported = built.filter(pl.col("reported")) if rows else built
    top = reported.sort("max_score", descending=True).head(10)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "reported": reported.height,
            "flagged_events": result.flagged_events,
            "by_severity": dg.MetadataValue.json(dict(by_severity)),
            "top_incidents": dg.MetadataValue.md(
                markdown_table(
                    top.select(
                        "incident_id",
                        "severity",
                        "event_count",
                        "scenario_id",
                        "scenario_confidence",
                        "origin_service",
                    )
                )
                if top.height
                else "no reported incidents"
            ),
        }
    )


@dg.asset(
    name="incident_reranker",
    deps=["incidents"],
    pool="duckdb",
    group_name="feedback_learning",
    kinds={"scikitlearn"},
    description=(
        "A new incident re-ranker version learnt from analysts' labels on incidents (the feedback API's, "
        "the label that counts per incident) over incident-level features and max_score; gated on a "
        "hashed held-out share of the labels, promoted when it beats the unsupervised order there. With "
        "too few labels it records how many it has and needs, and nothing changes."
    ),
)
def incident_reranker(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, registry: RegistryResource
) -> dg.MaterializeResult:
    rows = feedback.read(settings.feedback_path())
    with warehouse.connection() as con:
        outcome = reranking.train(con, registry.registry(LOGS), rows)
    return reranker_result(context, outcome, cut=outcome.cut)


@dg.asset(
    partitions_def=daily_partitions,
    deps=["incidents"],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb",
    group_name="detection",
    kinds={"duckdb", "scikitlearn"},
    description=(
        "The day's incidents re-ranked by the promoted incident re-ranker: rerank_score (probability an "
        "analyst confirms it), suppressed (below the cut chosen on held-out labels: kept, no longer "
        "reported) and the re-ranker's version. No rows while none is promoted."
    ),
)
def incident_reranks(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, registry: RegistryResource
) -> dg.MaterializeResult:
    day = context.partition_key
    with warehouse.connection() as con:
        reranked = reranking.score_day(con, registry.registry(LOGS), day)
        replace_partition(con, "incident_reranks", reranked, day)
    if reranked.height == 0:
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "reranker": "none promoted"})
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": reranked.height,
            "reranker": reranked["reranker_version"][0],
            "suppressed": int(reranked["suppressed"].sum()),
        }
    )


class EvaluationConfig(dg.Config):
    baseline: bool = True  # also score a naive baseline (default IF on the raw per-event metrics)


@dg.asset(
    partitions_def=daily_partitions,
    deps=["scored_events", "incidents", "incident_reranks", "log_labels"],
    automation_condition=FOLLOW_UPSTREAM,
    pool="duckdb",
    group_name="evaluation",
    kinds={"duckdb"},
    description=(
        "The day's detection measured against the generator's ground truth (log_labels; the only asset that "
        "reads labels): event metrics per model and for a naive baseline, instance recall per scenario, "
        "incident precision, false positives per 10,000 normal events, RCA accuracy. Written to "
        "evaluation_metrics and evaluation_scenarios."
    ),
)
def evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    warehouse: WarehouseResource,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    day = context.partition_key
    with warehouse.connection() as con:
        try:
            result = evaluate_logs(con, day, registry.registry(LOGS), baseline=config.baseline)
        except BaselineMismatch as error:
            raise dg.Failure(str(error)) from None
        live = _live_metadata(context, con, day)
    materialized = evaluation_result(
        context,
        warehouse,
        result,
        labels="log_labels",
        curves_table="evaluation_curves",
        breakdown="scenarios",
        extra=_targets_metadata,
    )
    reranked = {}
    if result.breakdown_reranked is not None:
        # per scenario before and after the incident re-ranker's cut, side by side
        both = result.breakdown.select("scenario_id", "instances", "recall").join(
            result.breakdown_reranked.select("scenario_id", pl.col("recall").alias("recall_reranked")),
            on="scenario_id",
            how="left",
        )
        reranked = {"scenarios_reranked": dg.MetadataValue.md(markdown_table(both))}
    return materialized._replace(metadata={**materialized.metadata, **live, **reranked})


def _live_metadata(context: dg.AssetExecutionContext, con, day: str) -> dict:
    """How far the live stream's results of the day agree with this run, the system of record, when a
    live store holds the day (figures: docs/live-incidents.md, "Reconciliation"). A store that cannot be
    read is reported, never a reason to fail the evaluation."""
    path = live_store_path()
    try:
        report = reconcile_day(path, con, day)
    except sqlite3.Error as error:
        context.log.warning(f"live store {path} unreadable for reconciliation: {error}")
        return {"live_reconciliation_error": f"{path}: {error}"}
    if report is None:
        return {}
    figures = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in report.as_dict().items()
    }
    context.log.info(
        f"live vs batch {day}: {report.both} events in both, {report.scores_equal} of {report.compared} "
        f"scores equal; incidents {report.matched_same_id} same id, {report.matched_overlap} by events, "
        f"{report.missed} missed, {report.extra} extra; {report.late} late events"
    )
    return {
        "live_reconciliation": dg.MetadataValue.json(figures),
        "live_events_both": report.both,
        "live_scores_equal": report.scores_equal,
        "live_scores_compared": report.compared,
        "live_incidents_matched": report.matched_same_id + report.matched_overlap,
        "live_incidents_missed": report.missed,
        "live_incidents_extra": report.extra,
        "live_late_events": report.late,
        "live_largest_incident_events": report.largest_live_events,
        "live_largest_incident_batch_incidents": report.largest_live_batch_incidents,
    }


def _targets_metadata(metrics: pl.DataFrame) -> dict:
    """The evaluation's targets (met or not) and the synthetic incident precision, as metadata."""
    targets = check_targets(metrics)
    incident_precision = metrics.filter(
        (pl.col("model") == "incidents") & (pl.col("metric") == "incident_precision")
    )["value"]
    figures = {
        "targets": dg.MetadataValue.md(markdown_table(targets)),
        "targets_met": int(targets["met"].sum()),
        "targets_total": targets.height,
        "incident_precision_synthetic": first_finite(incident_precision),
    }
    reranked = metrics.filter(pl.col("model") == "incidents_reranked")
    if reranked.height:
        # the same figures after the promoted incident re-ranker's cut (its suppressed incidents not reported)
        value = dict(reranked.select("metric", "value").iter_rows())
        figures |= {
            "incident_precision_reranked": first_finite(pl.Series([value["incident_precision"]])),
            "min_scenario_recall_reranked": first_finite(pl.Series([value["min_scenario_recall"]])),
            "incidents_suppressed": int(value["incidents_suppressed"]),
        }
    return figures
