"""Dagster assets of detection: the two models (with their promotion gate), the promotion itself,
scored_events, incidents and evaluation."""

import base64
import datetime as dt
from collections.abc import Callable, Iterable

import dagster as dg
import numpy as np
import polars as pl

from bankanom_pipeline import feedback, settings
from bankanom_pipeline.defs.conditions import FOLLOW_UPSTREAM
from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.detection import training
from bankanom_pipeline.detection.config import MODEL_NAMES, DetectionConfig
from bankanom_pipeline.detection.evaluation import (
    DEFAULT_MODELS,
    check_targets,
    evaluate,
    join_labels,
    markdown_table,
    metrics_wide,
    pr_curve_png,
    pr_curve_points,
)
from bankanom_pipeline.detection.explain import normal_values
from bankanom_pipeline.detection.incidents import build_incidents
from bankanom_pipeline.detection.registry import Registry, record, record_promotion, record_rejection
from bankanom_pipeline.detection.scoring import deviations, explain, score_batches
from bankanom_pipeline.detection.sources import LOGS, TRANSACTIONS, Source
from bankanom_pipeline.warehouse.frames import read_batches, read_frame, replace_partition


class TrainingConfig(dg.Config):
    end_date: str = ""  # last day of the training window (default: the latest day in features_events)
    models_dir: str = ""  # registry root (default: env BANKANOM_MODELS_DIR or data/models)


def registry_for(config: TrainingConfig | None = None, source: Source = LOGS) -> Registry:
    return source.registry(config.models_dir if config and config.models_dir else settings.models_dir())


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
    def _train(context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: WarehouseResource):
        detection = source.config
        registry = registry_for(config, source)
        with warehouse.connection() as con:
            end_day = config.end_date or training.latest_partition(con, source)
            trained = training.train(con, registry, name, detection, end_day, source)
            record(con, trained.version, source.name)
            problems = training.distribution_problems(
                trained.train_scores, getattr(detection.thresholds, name)
            )
            candidate_q = training.labelled_quality(con, trained.detector, end_day, source)
            current = registry.current().get(name)
            current_q = (
                training.labelled_quality(con, registry.load(current), end_day, source)
                if current and candidate_q
                else None
            )
            better = (
                candidate_q is None
                or current_q is None
                or candidate_q >= current_q - training.QUALITY_TOLERANCE
            )
            if problems or not better:
                record_rejection(con, trained.version.version)
        manifest = trained.version.manifest
        if candidate_q is None:
            quality_note = "no labelled day in the window: nothing to compare, passes"
        elif current_q is None:
            quality_note = "no promoted model yet: passes"
        else:
            quality_note = f"candidate PR-AUC {candidate_q:.4f} vs current {current_q:.4f}"
        context.log.info(f"trained {manifest['version']}: {quality_note}; problems: {problems or 'none'}")
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
                    passed=better,
                    metadata={
                        "candidate_pr_auc": candidate_q if candidate_q is not None else "n/a",
                        "current_pr_auc": current_q if current_q is not None else "n/a",
                        "current_version": current or "none",
                        "note": quality_note,
                    },
                ),
            ],
        )

    return _train


def _promotion_asset(source: Source, name: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        deps=[source.model_asset(model) for model in MODEL_NAMES],
        pool="duckdb",
        group_name=source.training_group,
        kinds={"duckdb"},
        description=(
            f"Flips the {source.name} registry's current pointer to the candidates this run trained, both "
            "at once. Runs only when every blocking check of both model assets passed."
        ),
    )
    def _promote(
        context: dg.AssetExecutionContext, config: TrainingConfig, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        registry = registry_for(config, source)
        versions = {}
        for model in MODEL_NAMES:
            key = dg.AssetKey(source.model_asset(model))
            event = context.instance.get_latest_materialization_event(key)
            if event is None or event.asset_materialization is None:
                raise dg.Failure(f"{key.to_user_string()} has never been materialized")
            versions[model] = str(event.asset_materialization.metadata["version"].value)
        current = registry.promote(versions)
        with warehouse.connection() as con:
            record_promotion(con, versions, source.name)
        return dg.MaterializeResult(metadata={"current": dg.MetadataValue.json(current)})

    return _promote


model_assets = [_model_asset(name, LOGS) for name in MODEL_NAMES]
promoted_models = _promotion_asset(LOGS, "promoted_models")
transaction_model_assets = [_model_asset(name, TRANSACTIONS) for name in MODEL_NAMES]
promoted_transaction_models = _promotion_asset(TRANSACTIONS, "promoted_transaction_models")


SCORED_ID_COLUMNS = [
    "partition_date",
    "event_id",
    "event_key",
    "ts",
    "source_service",
    "user_id",
    "ip_address",
    "correlation_id",
    "template",
]


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
def scored_events(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    return score_partition(
        warehouse,
        LOGS,
        context.partition_key,
        columns=SCORED_ID_COLUMNS,
        scorer=lambda batches, detectors, config: score_batches(
            batches, detectors, config, SCORED_ID_COLUMNS
        ),
        table="scored_events",
        check_name="every_event_scored",
        flagged_key="anomalous_events",
    )


def score_partition(
    warehouse: WarehouseResource,
    source: Source,
    day: str,
    *,
    columns: list[str],
    scorer: Callable[[Iterable[pl.DataFrame], dict, DetectionConfig], pl.DataFrame],
    table: str,
    check_name: str,
    flagged_key: str,
) -> dg.MaterializeResult:
    """Score a day of ``source``'s feature table with its promoted models into ``table`` (``scorer`` turns
    batches of ``columns`` plus the features into scored rows), and check one row per feature row."""
    config = source.config
    detectors = registry_for(source=source).load_current()
    selected = ", ".join(dict.fromkeys(columns + config.feature_names))
    with warehouse.connection() as con:
        features_rows = con.execute(
            f"SELECT count(*) FROM {source.features_table} WHERE partition_date = ?", [day]
        ).fetchone()[0]
        if features_rows == 0:
            raise dg.Failure(
                f"{source.features_table} has no rows for {day}: run the pipeline up to features first"
            )
        # in batches: the whole partition as one frame grew with the day (11.2 GiB at 4M events)
        batches = read_batches(
            con,
            f"SELECT {selected} FROM {source.features_table} WHERE partition_date = ?",
            [day],
            config.scoring.chunk_rows,
        )
        frame = scorer(batches, detectors, config).with_columns(
            if_version=pl.lit(detectors["isolation_forest"].version),
            lof_version=pl.lit(detectors["local_outlier_factor"].version),
        )
        rows = replace_partition(con, table, frame, day)
        stored = con.execute(f"SELECT count(*) FROM {table} WHERE partition_date = ?", [day]).fetchone()[0]
    flagged = int(frame["is_anomaly"].sum())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            flagged_key: flagged,
            "anomalous_share": flagged / rows,
            "if_flagged": int(frame["if_flag"].sum()),
            "lof_flagged": int(frame["lof_flag"].sum()),
            "if_version": detectors["isolation_forest"].version,
            "lof_version": detectors["local_outlier_factor"].version,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=check_name,
                passed=stored == features_rows,
                metadata={"features_rows": features_rows, "scored_rows": stored},
            )
        ],
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
def incidents(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    day = context.partition_key
    detectors = registry_for().load_current()
    with warehouse.connection() as con:
        flagged = read_frame(
            con,
            """SELECT s.if_score, s.lof_score, s.ensemble_score, f.*
               FROM scored_events s JOIN features_events f USING (partition_date, event_id)
               WHERE s.partition_date = ? AND s.is_anomaly ORDER BY s.ts, s.event_id""",
            [day],
        )
        space = detectors["isolation_forest"].space
        built, members = build_incidents(
            flagged,
            deviations(flagged, detectors),
            space.names,
            lambda rows: explain(flagged[rows], detectors),
            normals=normal_values(space),
        )
        built = built.with_columns(partition_date=pl.lit(day).str.to_date())
        members = members.with_columns(partition_date=pl.lit(day).str.to_date())
        rows = replace_partition(con, "incidents", built, day)
        replace_partition(con, "incident_events", members, day)
    by_severity = built.group_by("severity").len().sort("severity").rows() if rows else []
    reported = built.filter(pl.col("reported")) if rows else built
    top = reported.sort("max_score", descending=True).head(10)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "reported": reported.height,
            "flagged_events": flagged.height,
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


class EvaluationConfig(dg.Config):
    baseline: bool = True  # also score a naive baseline (default IF on the raw per-event metrics)


# the naive baseline's input: the per-event metrics as logged, no context windows, no scaling
BASELINE_FEATURES = [
    "level_num",
    "response_time_ms",
    "requests_per_second",
    "error_rate",
    "timeout_rate",
    "success_rate",
    "failed_attempts",
    "unique_ips",
    "unique_users",
    "attempts_per_minute",
    "amount",
    "risk_score",
    "query_time_ms",
    "connection_pool_use",
    "replication_lag_s",
    "cache_hit_rate",
    "cpu_percent",
    "records_accessed",
    "bytes_out",
    "concurrent_sessions",
    "vpn_connections",
    "files_modified",
    "consumer_lag",
]


@dg.asset(
    partitions_def=daily_partitions,
    deps=["scored_events", "incidents", "log_labels"],
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
    context: dg.AssetExecutionContext, config: EvaluationConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    day = context.partition_key
    with warehouse.connection() as con:
        scored = read_frame(
            con, "SELECT * FROM scored_events WHERE partition_date = ? ORDER BY event_key", [day]
        )
        labels = read_frame(con, "SELECT * FROM log_labels WHERE partition_date = ?", [day])
        analyst = analyst_metrics(
            con, day, "incident", "SELECT incident_id FROM incidents WHERE partition_date = ?"
        )
        if labels.height == 0:
            # real traffic has no ground truth: only the analysts' labels measure it
            context.log.warning(f"no ground truth for {day} in log_labels: only analyst feedback evaluated")
            if analyst["analyst_labelled"]:
                replace_partition(con, "evaluation_metrics", analyst_rows(analyst, "incidents", day), day)
            return dg.MaterializeResult(
                metadata={
                    "evaluated": False,
                    "reason": "no ground truth in log_labels",
                    **analyst_metadata(analyst),
                }
            )
        built = read_frame(con, "SELECT * FROM incidents WHERE partition_date = ?", [day])
        members = read_frame(con, "SELECT * FROM incident_events WHERE partition_date = ?", [day])
        models = dict(DEFAULT_MODELS)
        if config.baseline:
            scored = scored.with_columns(baseline_score=pl.Series(_baseline_scores(con, day, scored)))
            models["baseline_isolation_forest"] = ("baseline_score", "baseline_score_flag")
            scored = scored.with_columns(baseline_score_flag=pl.col("baseline_score") >= BASELINE_THRESHOLD)
        joined = join_labels(scored, labels)
        metrics, scenarios = evaluate(
            joined, built, members, models, partition_date=dt.date.fromisoformat(day)
        )
        if analyst["analyst_labelled"]:
            metrics = pl.concat([metrics, analyst_rows(analyst, "incidents", day)], how="vertical_relaxed")
        replace_partition(con, "evaluation_metrics", metrics, day)
        replace_partition(con, "evaluation_scenarios", scenarios, day)
    targets = check_targets(metrics)
    truth = joined["label_is_anomaly"].to_numpy()
    curves = {name: joined[column].to_numpy() for name, (column, _) in models.items()}
    png = pr_curve_png(truth, curves)
    with warehouse.connection() as con:
        points = pr_curve_points(truth, curves, dt.date.fromisoformat(day))
        replace_partition(con, "evaluation_curves", points, day)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": metrics.height,
            "event_metrics": dg.MetadataValue.md(markdown_table(metrics_wide(metrics))),
            "targets": dg.MetadataValue.md(markdown_table(targets)),
            "scenarios": dg.MetadataValue.md(markdown_table(scenarios)),
            "pr_curve": dg.MetadataValue.md(
                f"![PR curves](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
            "targets_met": int(targets["met"].sum()),
            "targets_total": targets.height,
            "incident_precision_synthetic": first_finite(
                metrics.filter((pl.col("model") == "incidents") & (pl.col("metric") == "incident_precision"))[
                    "value"
                ]
            ),
            **analyst_metadata(analyst),
        }
    )


def analyst_metrics(con, day: str, kind: str, ids_query: str) -> dict[str, float]:
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


def first_finite(values: pl.Series) -> float | None:
    value = float(values[0]) if len(values) else float("nan")
    return None if np.isnan(value) else value


def analyst_metadata(analyst: dict[str, float]) -> dict:
    precision = analyst["analyst_precision"]
    return {
        "analyst_precision": None if np.isnan(precision) else float(precision),
        **{k: int(v) for k, v in analyst.items() if k != "analyst_precision"},
    }


# IsolationForest.score_samples is -1 * the paper's score s(x); s(x) > 0.5 is the paper's (and sklearn's
# contamination="auto") cut between normal and anomalous
BASELINE_THRESHOLD = 0.5


def _baseline_scores(con, day: str, scored: pl.DataFrame) -> np.ndarray:
    """A default IsolationForest trained on the promoted models' training window, on raw per-event
    metrics only, scoring the day in ``scored``'s row order: the yardstick the real models must beat."""
    from sklearn.ensemble import IsolationForest

    manifest = registry_for().manifest(registry_for().current()["isolation_forest"])
    window = manifest["training_window"]
    columns = ", ".join(BASELINE_FEATURES)
    train = read_frame(
        con,
        # event_key is a hash: its 200k smallest are a fixed pseudo-random sample of the window, and in
        # key order the forest's subsamples depend on the rows only, not on the storage's scan order.
        # (A reservoir sample here drew from the whole table before the WHERE, in scan order.)
        f"SELECT {columns} FROM features_events WHERE partition_date BETWEEN ? AND ? "
        "ORDER BY event_key LIMIT 200000",
        [window["start"], window["end"]],
    )
    model = IsolationForest(random_state=7, n_jobs=-1).fit(train.to_numpy())
    day_rows = read_frame(
        con,
        f"SELECT event_key, {columns} FROM features_events WHERE partition_date = ? ORDER BY event_key",
        [day],
    )
    if day_rows.height != scored.height:
        raise dg.Failure("features_events and scored_events disagree on the day's rows: rerun scored_events")
    return -model.score_samples(day_rows.drop("event_key").to_numpy())
