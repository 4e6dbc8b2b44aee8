"""Scoring posted log events with the promoted models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from bankanom_api.deps import API_KEY, LogPredictor, Metrics, Settings, State, known_model, loaded_models
from bankanom_api.predict import DuplicateEventIds
from bankanom_api.responses import AUTH, BATCH_LIMIT, NOT_FOUND, NOT_READY, json_response, problem
from bankanom_api.schemas import PredictRequest, PredictResponse
from bankanom_pipeline.detection.config import MODEL_NAMES

router = APIRouter(tags=["predict"], dependencies=[API_KEY], responses=AUTH)


@router.post(
    "/predict",
    response_model=PredictResponse,
    responses={
        **NOT_READY,
        **NOT_FOUND,
        **problem(413, f"more than {BATCH_LIMIT} events, or a body over the size limit"),
        **problem(409, "an event_id repeated within the request"),
    },
    summary="Score log events with both models and the ensemble, or with one model",
    description=(
        f"Up to {BATCH_LIMIT} events in the generator's JSON log format. Features are computed "
        "by the pipeline's own SQL models over the posted events as one batch: context features (a "
        "user's last hour, an IP's last ten minutes, template rarity) see only what you send."
    ),
)
def predict(
    body: PredictRequest,
    state: State,
    settings: Settings,
    predictor: LogPredictor,
    metrics: Metrics,
    model: Annotated[
        str | None, Query(description="isolation_forest or local_outlier_factor; both when omitted")
    ] = None,
) -> Response:
    if model is not None:
        known_model(model)
    if len(body.events) > settings.max_batch:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(body.events)} events; at most {settings.max_batch} per request",
        )
    models = loaded_models(state)
    try:
        predictions = predictor.predict(body.events, models, model)
    except DuplicateEventIds as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    metrics.predicted.labels(model or "ensemble").inc(len(predictions))
    used = [model] if model else list(MODEL_NAMES)
    return json_response(
        {
            "model": model or "ensemble",
            "versions": {n: models.versions[n] for n in used},
            "predictions": predictions,
        }
    )
