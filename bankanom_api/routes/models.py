"""The promoted models: versions, training windows, parameters and the latest evaluation."""

from __future__ import annotations

import datetime as dt
import math

from fastapi import APIRouter, Response

from bankanom_api.deps import API_KEY, State, known_model, loaded_models
from bankanom_api.responses import AUTH, NOT_FOUND, NOT_READY, json_response
from bankanom_api.schemas import ModelInfo, ModelsList
from bankanom_api.state import Models, Snapshot
from bankanom_api.transactions import DISPLAY_NAMES
from bankanom_pipeline.detection.config import MODEL_NAMES, OPTIONAL_MODELS

router = APIRouter(tags=["models"], dependencies=[API_KEY], responses=AUTH)

Evaluation = tuple[dt.date | None, dict[str, dict[str, float | None]]]


@router.get(
    "/models",
    response_model=ModelsList,
    responses=NOT_READY,
    summary="The promoted models: version, training window, parameters and evaluation metrics",
    description=(
        "Log-event models under `models`, bank-transaction models under `transaction_models`, and "
        "`available_models` with display names, as the predecessor's `GET /models/` returned."
    ),
)
@router.get("/models/", include_in_schema=False)
def list_models(state: State) -> Response:
    models, tx = state.models, state.transaction_models
    if models is None and tx is None:
        loaded_models(state)  # 503: nothing promoted at all
    evaluated = latest_evaluation(state.snapshot)
    listed = ModelsList(
        available_models=[DISPLAY_NAMES[name] for name in MODEL_NAMES],
        models=[model_info(name, models, evaluated) for name in MODEL_NAMES] if models else [],
        # every promoted transaction detector, ECOD included when it was promoted with the pair
        transaction_models=[
            model_info(name, tx, (None, {}))
            for name in (*MODEL_NAMES, *OPTIONAL_MODELS)
            if name in tx.manifests
        ]
        if tx
        else [],
    )
    return json_response(listed.model_dump())


@router.get(
    "/models/{name}",
    response_model=ModelInfo,
    responses={**NOT_READY, **NOT_FOUND},
    summary="One promoted model",
)
def get_model(name: str, state: State) -> Response:
    info = model_info(known_model(name), loaded_models(state), latest_evaluation(state.snapshot))
    return json_response(info.model_dump())


def latest_evaluation(snap: Snapshot | None) -> Evaluation:
    """The latest evaluated day in the snapshot and its metrics, by model (one query)."""
    if snap is None or not snap.has("evaluation_metrics"):
        return None, {}
    _, rows = snap.query(
        """SELECT partition_date, model, metric, value FROM evaluation_metrics
           WHERE partition_date = (SELECT max(partition_date) FROM evaluation_metrics)"""
    )
    by_model: dict[str, dict[str, float | None]] = {}
    for _, model, metric, value in rows:
        # NaN: a figure the day's labels cannot give (none were positive, say)
        by_model.setdefault(model, {})[metric] = None if value is None or math.isnan(value) else value
    return (rows[0][0] if rows else None), by_model


def model_info(name: str, models: Models, evaluated: Evaluation) -> ModelInfo:
    m = models.manifests[name]
    day, by_model = evaluated
    return ModelInfo(
        name=name,
        version=m["version"],
        created_at=dt.datetime.fromisoformat(m["created_at"]),
        training_window=m["training_window"],
        training_rows=m["training_rows"],
        params=m["params"],
        features=m["features"],
        training_metrics=m["metrics"],
        evaluation=by_model.get(name, {}),
        evaluation_date=day if name in by_model else None,
    )
