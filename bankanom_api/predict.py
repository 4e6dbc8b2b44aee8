"""Scoring posted log events with the promoted models: the pipeline's own feature SQL and scoring code."""

from __future__ import annotations

import orjson
import polars as pl

from bankanom_api.responses import repeated
from bankanom_api.schemas import LogEvent
from bankanom_api.state import Models
from bankanom_pipeline.detection.config import DetectionConfig
from bankanom_pipeline.detection.explain import furthest_from_normal
from bankanom_pipeline.detection.scoring import IF, LOF, score
from bankanom_pipeline.sqlmodels.inmemory import FeatureBuilder

TOP_FEATURES = 5


class DuplicateEventIds(ValueError):
    pass


def events_frame(events: list[LogEvent]) -> pl.DataFrame:
    """The posted events as validated_logs rows (what the feature SQL reads)."""
    ids = [e.event_id for e in events]
    dupes = repeated(ids)
    if dupes:
        raise DuplicateEventIds(f"event_id must be unique within a request; repeated: {dupes[:5]}")
    return pl.DataFrame(
        {
            "event_id": ids,
            "ts": [e.utc_timestamp() for e in events],
            "source_service": [e.source_service for e in events],
            "log_level": [e.log_level for e in events],
            "message": [e.message for e in events],
            "correlation_id": [e.correlation_id for e in events],
            "user_id": [e.user_id for e in events],
            "ip_address": [e.ip_address for e in events],
            "geo_location": [e.geo_location for e in events],
            "metrics": [orjson.dumps(e.metrics).decode() for e in events],
        },
        schema_overrides={"ts": pl.Datetime("us")},
    )


class Predictor:
    def __init__(self, builder: FeatureBuilder, config: DetectionConfig):
        self.builder, self.config = builder, config

    def predict(self, events: list[LogEvent], models: Models, model: str | None) -> list[dict]:
        """Per-event scores and flags (both models and the ensemble, or ``model`` alone), in the order
        the events were posted, with the features furthest from normal: plain dicts shaped like
        ``schemas.EventPrediction`` (the route serialises them directly; building thousands of pydantic
        objects per batch cost more than scoring it)."""
        frame = events_frame(events)
        features = self.builder.features(frame)
        order = features["event_id"].to_list()
        names = [model] if model else [IF, LOF]
        combined = None
        if model:  # one model: its score and flag, nothing else computed
            detector = models.detectors[model]
            scores = {model: detector.scores(detector.space.matrix(features))}
            flags = {model: scores[model] >= getattr(self.config.thresholds, model)}
            decision = flags[model]
        else:  # both: exactly the pipeline's scoring, ensemble rule included
            result = score(features, models.detectors, self.config)
            scores = {IF: result.isolation_forest, LOF: result.local_outlier_factor}
            flags = {IF: result.if_flag, LOF: result.lof_flag}
            combined, decision = result.ensemble, result.is_anomaly
        top = furthest_from_normal(features, models.detectors, names, TOP_FEATURES, values=True).records()
        columns = {
            "isolation_forest": scores.get(IF),
            "local_outlier_factor": scores.get(LOF),
            "ensemble": combined,
            "if_flag": flags.get(IF),
            "lof_flag": flags.get(LOF),
        }
        listed = {k: (v.tolist() if v is not None else None) for k, v in columns.items()}
        anomalous = decision.tolist()
        by_id = {
            event_id: {
                "event_id": event_id,
                **{k: (v[i] if v is not None else None) for k, v in listed.items()},
                "is_anomaly": anomalous[i],
                "top_features": top[i],
            }
            for i, event_id in enumerate(order)
        }
        return [by_id[e.event_id] for e in events]
