"""Scoring posted log events with the promoted models: ``POST /predict`` (with context it reads the
online state, never changes it) and ``POST /events`` (feeds it). The state is the stream scorer's
(``bankanom stream``): both routes forward to its internal service (``stream.StreamClient``) and answer
503 naming its URL when it does not answer.

Both are ``async``: a request awaits the stream without holding a thread, and the rest of a small
request's work (scoring a few feature rows, the JSON answer) runs on the event loop, in arrival order,
without a hand-off to a thread and back. What takes longer runs in the thread pool so as not to hold
up the requests behind it: the feature SQL (``context=false``, DuckDB, which releases the GIL) and
the scoring of more than ``INLINE_EVENTS`` events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from bankanom_api.deps import API_KEY, INGEST_KEY, compatible_models, known_model
from bankanom_api.errors import PipelineJSONRoute
from bankanom_api.posted import wire
from bankanom_api.predict import DuplicateEventIds, unique_ids
from bankanom_api.responses import AUTH, BATCH_LIMIT, NOT_FOUND, json_response, problem
from bankanom_api.schemas import IngestRequest, IngestResponse, LogEvent, PredictRequest, PredictResponse
from bankanom_pipeline.detection.config import MODEL_NAMES
from bankanom_pipeline.online.engine import OnlineEngine

# bodies read as the pipeline reads a log line: a -NaN in metrics is refused by metrics_finite, naming it
router = APIRouter(tags=["predict"], responses=AUTH, route_class=PipelineJSONRoute)

# scoring up to this many events' feature rows runs on the event loop (one event: ~0.3 ms of numpy; the
# thread hand-off costs about as much, and under load the GIL hand-offs between threads cost more); a
# larger batch (1,000 events: tens of ms) runs in the thread pool, so small requests are not held behind it
INLINE_EVENTS = 16

FORBIDDEN = problem(403, "a valid key without this route's scope")
TOO_LARGE = problem(413, f"more than {BATCH_LIMIT} events, or a body over the size limit")


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
        **problem(
            503,
            "nothing promoted yet, promoted models of another feature set, or (with context) no live "
            "stream answering at BANKANOM_STREAM_URL",
        ),
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
        "network, session and service as the live stream (`bankanom stream`) ingested them, from its "
        "sources and POST /events (the state is read, never changed: predicting an event does not "
        "ingest it; 503 when the stream does not answer). With `context=false` the posted events are "
        "one batch run through the pipeline's feature SQL, and context features see only what you send "
        "(what-if questions). `top_features` is listed for anomalous events, or for every event with "
        "`explain=true`; otherwise it is empty."
    ),
)
async def predict(
    body: PredictRequest,
    request: Request,
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
    # what the app built, read from app.state directly rather than through deps' accessors: each
    # dependency FastAPI solves costs CPU on every request, and this is the API's hottest route
    served = request.app.state
    if model is not None:
        known_model(model)
    _within_batch(body.events, served.settings.max_batch)
    version = OnlineEngine.FEATURE_SET_VERSION
    models = compatible_models(served.serving, version)
    try:
        unique_ids(body.events)
    except DuplicateEventIds as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from None
    if context:
        # the stream answers 409 (too_late: a valid event the state can no longer place) or 422 as the
        # route documents them; they are passed on
        peeked = await served.stream.peek(body.events)
        if peeked["feature_set_version"] != version:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"the live stream computes feature set {peeked['feature_set_version']}, this API {version}: "
                "run the same bankanom version in both",
            )
        values, columns = peeked["features"], peeked["columns"]
    else:
        values, columns = await run_in_threadpool(served.predictor.batch_features, body.events)
    ids = [e.event_id for e in body.events]
    scoring = (ids, values, columns, models, model, explain)
    if len(ids) <= INLINE_EVENTS:
        predictions = served.predictor.predict(*scoring)
    else:
        predictions = await run_in_threadpool(served.predictor.predict, *scoring)
    served.metrics.predicted.labels(model or "ensemble").inc(len(predictions))
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
    responses={
        **FORBIDDEN,
        **TOO_LARGE,
        **problem(503, "no live stream answering at BANKANOM_STREAM_URL (start bankanom stream)"),
    },
    summary="Ingest log events into the live stream's online state, and score them",
    description=(
        f"Up to {BATCH_LIMIT} events in the generator's JSON log format, forwarded to the live stream "
        "(`bankanom stream`), which folds them in the posted order into the online state POST /predict "
        "reads (each user's, address's, network's, session's and service's recent events), scores them "
        "and commits them to the live store before the answer, so an answered event survives a restart "
        "and shows in /scores/latest (`live: true`). Only the keys of BANKANOM_INGEST_KEYS may call it "
        "(403 for any other key). Each event's outcome says whether it was ingested; an ingested or late "
        "event is scored with the promoted models from its point-in-time features, the scores the "
        "pipeline stores for it. Without promoted models of the engine's feature set the events are "
        "still ingested, unscored (`unscored` says why). 503 when the stream does not answer."
    ),
)
async def ingest(body: IngestRequest, request: Request) -> Response:
    served = request.app.state  # as in predict
    _within_batch(body.events, served.settings.max_batch)
    return json_response(await served.stream.ingest([wire(e) for e in body.events]))
