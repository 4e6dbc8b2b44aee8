"""Scoring posted log events with the promoted models: ``POST /predict`` (reads the online state, never
changes it) and ``POST /events`` (the online state's one writer)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response, status

from bankanom_api.deps import (
    API_KEY,
    INGEST_KEY,
    LogPredictor,
    Metrics,
    Online,
    Settings,
    State,
    compatible_models,
    feature_set_mismatch,
    known_model,
)
from bankanom_api.online import OutOfContext, as_event
from bankanom_api.predict import DuplicateEventIds, unique_ids
from bankanom_api.responses import AUTH, BATCH_LIMIT, NOT_FOUND, json_response, problem
from bankanom_api.schemas import IngestRequest, IngestResponse, LogEvent, PredictRequest, PredictResponse
from bankanom_pipeline.detection.config import MODEL_NAMES
from bankanom_pipeline.detection.scoring import score_values

router = APIRouter(tags=["predict"], responses=AUTH)

FORBIDDEN = problem(403, "a valid key without this route's scope")
TOO_LARGE = problem(413, f"more than {BATCH_LIMIT} events, or a body over the size limit")


SCORES = ("isolation_forest", "local_outlier_factor", "ensemble", "if_flag", "lof_flag", "is_anomaly")
UNSCORED = dict.fromkeys(SCORES)


def _within_batch(events: list[LogEvent], max_batch: int) -> None:
    if len(events) > max_batch:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"{len(events)} events; at most {max_batch} per request"
        )


@router.post(
    "/predict",
    dependencies=[API_KEY],
    response_model=PredictResponse,
    responses={
        **problem(503, "nothing promoted yet, or promoted models of another feature set"),
        **NOT_FOUND,
        **TOO_LARGE,
        **problem(
            409,
            "an event_id repeated within the request, or (with context) an event older than the online "
            "state keeps: its context is gone, ask with context=false",
        ),
    },
    summary="Score log events with both models and the ensemble, or with one model",
    description=(
        f"Up to {BATCH_LIMIT} events in the generator's JSON log format. By default each event is scored "
        "in its context: its features are computed point in time against the state of its user, address, "
        "network, session and service as ingested through POST /events (the state is read, never "
        "changed: predicting an event does not ingest it). With `context=false` the posted events are "
        "one batch run through the pipeline's feature SQL, and context features see only what you send "
        "(what-if questions). `top_features` is listed for anomalous events, or for every event with "
        "`explain=true`; otherwise it is empty."
    ),
)
def predict(
    body: PredictRequest,
    state: State,
    settings: Settings,
    predictor: LogPredictor,
    online: Online,
    metrics: Metrics,
    model: Annotated[
        str | None, Query(description="isolation_forest or local_outlier_factor; both when omitted")
    ] = None,
    context: Annotated[
        bool, Query(description="score against the ingested state (true) or the posted batch alone (false)")
    ] = True,
    explain: Annotated[
        bool,
        Query(
            description="list top_features for every event, not only anomalous ones, and every feature's value"
        ),
    ] = False,
) -> Response:
    if model is not None:
        known_model(model)
    _within_batch(body.events, settings.max_batch)
    version = online.engine.FEATURE_SET_VERSION
    models = compatible_models(state, version)
    try:
        unique_ids(body.events)
    except DuplicateEventIds as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    if context:
        try:
            values = online.peek([as_event(e) for e in body.events])
        except OutOfContext as error:
            # 409: a valid event the state can no longer place (older than it keeps), not a bad request
            raise HTTPException(409 if error.detail["type"] == "too_late" else 422, [error.detail]) from None
        columns = list(online.engine.FEATURES)
    else:
        values, columns = predictor.batch_features(body.events)
    ids = [e.event_id for e in body.events]
    predictions = predictor.predict(ids, values, columns, models, model, explain)
    metrics.predicted.labels(model or "ensemble").inc(len(predictions))
    used = [model] if model else list(MODEL_NAMES)
    return json_response(
        {
            "model": model or "ensemble",
            "versions": {n: models.versions[n] for n in used},
            "context": context,
            "feature_set_version": version,
            "predictions": predictions,
        }
    )


@router.post(
    "/events",
    dependencies=[INGEST_KEY],
    response_model=IngestResponse,
    responses={**FORBIDDEN, **TOO_LARGE},
    summary="Ingest log events into the online state, and score them",
    description=(
        f"Up to {BATCH_LIMIT} events in the generator's JSON log format, folded in the posted order into the "
        "online state that POST /predict reads (each user's, address's, network's, session's and "
        "service's recent events). Only the keys of BANKANOM_INGEST_KEYS may call it (403 for any other "
        "key). The events are journaled and synced to disk before the answer, so an answered event "
        "survives a restart. Each event's outcome says whether it was ingested; an ingested or late "
        "event is scored with the promoted models from its point-in-time features, the scores the "
        "pipeline stores for it. Without promoted models of the engine's feature set the events are "
        "still ingested, unscored (`unscored` says why)."
    ),
)
def ingest(
    body: IngestRequest,
    state: State,
    settings: Settings,
    predictor: LogPredictor,
    online: Online,
) -> Response:
    _within_batch(body.events, settings.max_batch)
    events = [as_event(e) for e in body.events]
    outcomes = online.ingest(events)
    version = online.engine.FEATURE_SET_VERSION
    models = state.models
    unscored = (
        state.unavailable("models", "no promoted models yet: run train_job")
        if models is None
        else feature_set_mismatch(models, version)
    )
    results = [
        {"event_id": e.event_id, "outcome": o.status, "reason": o.reason, **UNSCORED}
        for e, o in zip(events, outcomes, strict=True)
    ]
    scored = [i for i, o in enumerate(outcomes) if o.features is not None]
    if unscored is None and scored:
        values = np.asarray([outcomes[i].features for i in scored], dtype=np.float64)
        result = score_values(values, list(online.engine.FEATURES), models.detectors, predictor.config)
        listed = {
            "isolation_forest": result.isolation_forest.tolist(),
            "local_outlier_factor": result.local_outlier_factor.tolist(),
            "ensemble": result.ensemble.tolist(),
            "if_flag": result.if_flag.tolist(),
            "lof_flag": result.lof_flag.tolist(),
            "is_anomaly": result.is_anomaly.tolist(),
        }
        for k, i in enumerate(scored):
            results[i].update({name: values_[k] for name, values_ in listed.items()})
    return json_response(
        {
            "versions": None if unscored else models.versions,
            "unscored": unscored,
            "feature_set_version": version,
            "results": results,
        }
    )
