"""Scoring log events with the promoted models.

With context (the default) an event's features are the online engine's point-in-time features: its
user's, address's, network's, session's and service's state as ingested through ``POST /events``
(the stream scorer's ``/peek``, read-only), scored from the feature vector straight into numpy
(``scoring.score_values``). Without context (``context=false``) the posted events are one batch run
through the pipeline's own feature SQL (``FeatureBuilder``): what-if questions about a batch alone.
"""

from __future__ import annotations

import numpy as np
import orjson
import polars as pl

from bankanom_api.responses import repeated
from bankanom_api.schemas import LogEvent
from bankanom_api.state import Models
from bankanom_pipeline.detection.config import DetectionConfig
from bankanom_pipeline.detection.explain import furthest_from_normal_of
from bankanom_pipeline.detection.scoring import IF, LOF, score_values
from bankanom_pipeline.live.lines import known_metrics
from bankanom_pipeline.sqlmodels.inmemory import FeatureBuilder

TOP_FEATURES = 5


class DuplicateEventIds(ValueError):
    pass


def events_frame(events: list[LogEvent]) -> pl.DataFrame:
    """The posted events as validated_logs rows (what the feature SQL reads)."""
    return pl.DataFrame(
        {
            "event_id": [e.event_id for e in events],
            "ts": [e.utc_timestamp() for e in events],
            "source_service": [e.source_service for e in events],
            "log_level": [e.log_level for e in events],
            "message": [e.message for e in events],
            "correlation_id": [e.correlation_id for e in events],
            "user_id": [e.user_id for e in events],
            "ip_address": [e.ip_address for e in events],
            "geo_location": [e.geo_location for e in events],
            "metrics": [orjson.dumps(known_metrics(e.metrics) or {}).decode() for e in events],
        },
        schema_overrides={"ts": pl.Datetime("us")},
    )


def unique_ids(events: list[LogEvent]) -> None:
    dupes = repeated(e.event_id for e in events)
    if dupes:
        raise DuplicateEventIds(f"event_id must be unique within a request; repeated: {dupes[:5]}")


class Predictor:
    def __init__(self, builder: FeatureBuilder, config: DetectionConfig):
        self.builder, self.config = builder, config

    def batch_features(self, events: list[LogEvent]) -> tuple[np.ndarray, list[str]]:
        """The events' features computed by the feature SQL over the posted batch alone, one row per
        event in the posted order, with their column names."""
        features = self.builder.features(events_frame(events))
        at = {event_id: i for i, event_id in enumerate(features["event_id"].to_list())}
        columns = self.config.feature_names
        values = features.select(columns).cast(pl.Float64).to_numpy()
        return values[[at[e.event_id] for e in events]], columns

    def predict(
        self,
        event_ids: list[str],
        values: np.ndarray,
        columns: list[str],
        models: Models,
        model: str | None,
        explain: bool,
    ) -> list[dict]:
        """Per-event scores and flags (both models and the ensemble, or ``model`` alone) of the feature
        rows ``values`` (one per event id, columns named by ``columns``), in that order; the features
        furthest from normal for flagged events, or for all with ``explain``: plain dicts shaped like
        ``schemas.EventPrediction`` (the route serialises them directly)."""
        names = [model] if model else [IF, LOF]
        combined = None
        if model:  # one model: its score and flag, nothing else computed
            detector = models.detectors[model]
            scores = {model: detector.array_scores(values, columns)}
            flags = {model: scores[model] >= getattr(self.config.thresholds, model)}
            decision = flags[model]
        else:  # both: exactly the pipeline's scoring, ensemble rule included
            result = score_values(values, columns, models.detectors, self.config)
            scores = {IF: result.isolation_forest, LOF: result.local_outlier_factor}
            flags = {IF: result.if_flag, LOF: result.lof_flag}
            combined, decision = result.ensemble, result.is_anomaly
        explained = np.arange(len(event_ids)) if explain else np.flatnonzero(decision)
        top: list[list[dict]] = [[] for _ in event_ids]
        if len(explained):
            ranked = furthest_from_normal_of(
                values[explained], columns, models.detectors, names, TOP_FEATURES
            )
            for i, features in zip(explained.tolist(), ranked.records(), strict=True):
                top[i] = features
        columns_out = {
            "isolation_forest": scores.get(IF),
            "local_outlier_factor": scores.get(LOF),
            "ensemble": combined,
            "if_flag": flags.get(IF),
            "lof_flag": flags.get(LOF),
        }
        n = len(event_ids)
        # column by column, then zipped into rows (a third cheaper than a dict of columns indexed per event)
        listed = [v.tolist() if v is not None else [None] * n for v in columns_out.values()]
        fields = ["event_id", *columns_out, "is_anomaly", "top_features"]
        predictions = [
            dict(zip(fields, row, strict=True))
            for row in zip(event_ids, *listed, decision.tolist(), top, strict=True)
        ]
        if explain:  # NaN (no value) is written as null
            for prediction, row in zip(predictions, values.tolist(), strict=True):
                prediction["features"] = dict(zip(columns, row, strict=True))
        return predictions
