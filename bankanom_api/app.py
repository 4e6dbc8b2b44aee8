"""The bankanom prediction API (FastAPI). Start it with ``bankanom api``.

It never opens the live warehouse: scores, incidents and evaluation come from the published snapshot
(``data/snapshots``), models from the registry's promoted versions (``data/models``); both are reloaded
in the background when newer ones appear. Route handlers are plain ``def``: FastAPI runs them in its
thread pool, so scoring and DuckDB reads never block the event loop.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import math
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from bankanom_api import console
from bankanom_api.metrics import ApiMetrics, MetricsMiddleware
from bankanom_api.middleware import HardenedFastAPI, KeyGate, docs_paths
from bankanom_api.predict import DuplicateEventIds, Predictor
from bankanom_api.responses import (
    AUTH,
    Limit,
    Offset,
    as_dicts,
    json_response,
    problem,
    time_filter,
    where_clause,
)
from bankanom_api.schemas import (
    Health,
    IncidentDetail,
    IncidentsPage,
    ModelInfo,
    ModelsList,
    PredictRequest,
    PredictResponse,
    Ready,
    ScoresPage,
    Severity,
    utc_naive,
)
from bankanom_api.security import KeyChecker, RateLimiter, authenticated
from bankanom_api.settings import ApiSettings
from bankanom_api.state import Models, Reloader, ServingState, Snapshot
from bankanom_api.transactions import DISPLAY_NAMES
from bankanom_api.transactions import router as transaction_routes
from bankanom_pipeline.detection.config import MODEL_NAMES, default_detection_config
from bankanom_pipeline.sqlmodels.inmemory import FeatureBuilder

log = logging.getLogger("bankanom_api")

_ERRORS = AUTH
_NOT_READY = problem(503, "nothing promoted or published yet")
_NOT_FOUND = problem(404, "unknown id or model")

_INCIDENT_SUMMARY = """incident_id, partition_date, start_ts, end_ts, event_count, severity, status, reported,
    services, user_count, ip_count, max_score, mean_score, origin_service, origin_entity, scenario_id,
    scenario_name, scenario_confidence"""


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
    keys = KeyChecker(settings.api_keys)  # refuses to build an app nobody could call
    state = ServingState(settings.models_dir, settings.snapshots_dir)
    config = default_detection_config()
    predictor = Predictor(FeatureBuilder(), config)
    metrics = ApiMetrics(state)
    reloader = Reloader(state, settings.reload_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state.refresh()
        # what is loaded now (libraries, models) lives as long as the process: out of the collector's
        # sight, a full collection no longer walks it (those walks were the slowest requests' extra time)
        gc.collect()
        gc.freeze()
        reloader.start()
        yield
        reloader.stop()

    app = HardenedFastAPI(
        title="bankanom API",
        version="1.0",
        summary="Anomaly scores, incidents and predictions for banking logs",
        description=(
            "Every route but /health needs the `X-API-Key` header. Scores, incidents and evaluation come from "
            "the latest published snapshot; models are the promoted versions. Both reload without a restart."
        ),
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,  # 413 beyond it, on every route
    )
    app.state.serving = state
    limiter = RateLimiter(settings.rate_limit)
    app.add_middleware(  # the innermost: a refused key is still counted and gets the CORS headers
        KeyGate,
        keys=keys,
        per_key=limiter,
        failures=RateLimiter(settings.auth_failure_limit, "failed authentication limit"),
        public_paths=frozenset({"/health", app.openapi_url}) | docs_paths(app),
        public_prefix=console.PREFIX,  # the console signs in with its own session cookie
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    protected = [Depends(authenticated)]

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        # field-level messages, without echoing the (possibly large) input back
        detail = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> Response:
        # FastAPI answers a JSON body that is not UTF-8 with an undocumented 400, and any other
        # undecodable JSON with a 422: one answer for both
        if isinstance(error.__cause__, UnicodeDecodeError):
            where = ["body", error.__cause__.start]
            detail = [{"loc": where, "msg": "JSON decode error: not UTF-8", "type": "json_invalid"}]
            return JSONResponse({"detail": detail}, status_code=422)
        return await http_exception_handler(request, error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    def current_models() -> Models:
        if state.models is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                state.unavailable("models", "no promoted models yet: run train_job"),
            )
        return state.models

    def current_snapshot() -> Snapshot:
        if state.snapshot is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                state.unavailable("snapshot", "no snapshot published yet: run pipeline_job"),
            )
        return state.snapshot

    def model_name(name: str) -> str:
        if name not in MODEL_NAMES:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"unknown model {name!r}; known: {list(MODEL_NAMES)}"
            )
        return name

    # -- liveness and readiness ---------------------------------------------------------------------

    @app.get("/health", response_model=Health, tags=["service"], summary="Liveness: the process answers")
    def health() -> Health:
        return Health(status="ok")

    @app.get(
        "/ready",
        response_model=Ready,
        tags=["service"],
        dependencies=protected,
        responses={**_ERRORS, 503: {"model": Ready, "description": "not ready (body says why)"}},
        summary="Readiness: promoted models and a snapshot are loaded, with their versions and ages",
    )
    def ready(response: Response) -> Ready:
        models, snap = state.models, state.snapshot
        now = dt.datetime.now(dt.UTC)
        problems = [f"{kind}: {error}" for kind, error in state.errors.items()]
        if models is None:
            problems.append("no promoted models loaded")
        if snap is None:
            problems.append("no snapshot loaded")
        body = Ready(
            ready=models is not None and snap is not None,
            models={
                name: {
                    "version": d.version,
                    "created_at": models.manifests[name]["created_at"],
                    "age_seconds": round(
                        (
                            now - dt.datetime.fromisoformat(models.manifests[name]["created_at"])
                        ).total_seconds(),
                        1,
                    ),
                }
                for name, d in (models.detectors.items() if models else [])
            },
            snapshot=None
            if snap is None
            else {
                **snap.pointer,
                "age_seconds": round(
                    (now - dt.datetime.fromisoformat(snap.pointer["published_at"])).total_seconds(), 1
                ),
            },
            problems=problems,
        )
        if not body.ready:
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return body

    # -- models -------------------------------------------------------------------------------------

    # Before /models/{name}: a path matching several routes gets its 405 (and Allow) from the first one,
    # so /models/{name} (GET) would otherwise answer for POST /models/predict's OPTIONS, PUT, ...
    app.include_router(transaction_routes(state, protected, settings.max_batch))

    def latest_evaluation() -> tuple[dt.date | None, dict[str, dict[str, float | None]]]:
        """The latest evaluated day in the snapshot and its metrics, by model (one query)."""
        snap = state.snapshot
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

    def model_info(name: str, models: Models, evaluated: tuple) -> ModelInfo:
        m = models.manifests[name]
        day, by_model = evaluated if evaluated else (None, {})
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

    @app.get(
        "/models",
        response_model=ModelsList,
        tags=["models"],
        dependencies=protected,
        responses={**_ERRORS, **_NOT_READY},
        summary="The promoted models: version, training window, parameters and evaluation metrics",
        description=(
            "Log-event models under `models`, bank-transaction models under `transaction_models`, and "
            "`available_models` with display names, as the predecessor's `GET /models/` returned."
        ),
    )
    @app.get("/models/", include_in_schema=False, dependencies=protected)
    def list_models() -> Response:
        models, tx = state.models, state.transaction_models
        if models is None and tx is None:
            current_models()  # 503: nothing promoted at all
        evaluated = latest_evaluation()
        listed = ModelsList(
            available_models=[DISPLAY_NAMES[name] for name in MODEL_NAMES],
            models=[model_info(name, models, evaluated) for name in MODEL_NAMES] if models else [],
            transaction_models=[model_info(name, tx, ()) for name in MODEL_NAMES] if tx else [],
        )
        return json_response(listed.model_dump())

    @app.get(
        "/models/{name}",
        response_model=ModelInfo,
        tags=["models"],
        dependencies=protected,
        responses={**_ERRORS, **_NOT_READY, **_NOT_FOUND},
        summary="One promoted model",
    )
    def get_model(name: str) -> Response:
        return json_response(model_info(model_name(name), current_models(), latest_evaluation()).model_dump())

    # -- prediction ---------------------------------------------------------------------------------

    @app.post(
        "/predict",
        response_model=PredictResponse,
        tags=["predict"],
        dependencies=protected,
        responses={
            **_ERRORS,
            **_NOT_READY,
            **_NOT_FOUND,
            **problem(413, f"more than {settings.max_batch} events, or a body over the size limit"),
            **problem(409, "an event_id repeated within the request"),
        },
        summary="Score log events with both models and the ensemble, or with one model",
        description=(
            f"Up to {settings.max_batch} events in the generator's JSON log format. Features are computed "
            "by the pipeline's own SQL models over the posted events as one batch: context features (a "
            "user's last hour, an IP's last ten minutes, template rarity) see only what you send."
        ),
    )
    def predict(
        body: PredictRequest,
        model: Annotated[
            str | None, Query(description="isolation_forest or local_outlier_factor; both when omitted")
        ] = None,
    ) -> Response:
        if model is not None:
            model_name(model)
        if len(body.events) > settings.max_batch:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{len(body.events)} events; at most {settings.max_batch} per request",
            )
        models = current_models()
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

    # -- scores and incidents -----------------------------------------------------------------------

    @app.get(
        "/scores/latest",
        response_model=ScoresPage,
        tags=["scores"],
        dependencies=protected,
        responses={**_ERRORS, **_NOT_READY},
        summary="The latest scored events, newest first",
    )
    def latest_scores(
        service: str | None = None,
        user: str | None = None,
        min_score: Annotated[float | None, Query(ge=0, le=1, description="minimum ensemble score")] = None,
        anomalies_only: bool = False,
        since: time_filter("events at or after this instant") = None,
        until: time_filter("events before this instant") = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response:
        snap = current_snapshot()
        where, params = where_clause(
            [
                ("source_service = ?", service),
                ("user_id = ?", user),
                ("ensemble_score >= ?", min_score),
                ("is_anomaly", True if anomalies_only else None),
                ("ts >= ?", utc_naive(since)),
                ("ts < ?", utc_naive(until)),
            ]
        )
        return _page(snap, "*", "scored_events", where, params, "ts DESC, event_id", limit, offset)

    @app.get(
        "/incidents",
        response_model=IncidentsPage,
        tags=["incidents"],
        dependencies=protected,
        responses={**_ERRORS, **_NOT_READY},
        summary="Incidents, newest first",
    )
    def list_incidents(
        severity: Severity | None = None,
        incident_status: Annotated[str | None, Query(alias="status")] = None,
        since: time_filter("incidents still open at or after this instant") = None,
        until: time_filter("incidents that started before this instant") = None,
        limit: Limit = 100,
        offset: Offset = 0,
    ) -> Response:
        snap = current_snapshot()
        where, params = where_clause(
            [
                ("severity = ?", severity),
                ("status = ?", incident_status),
                ("end_ts >= ?", utc_naive(since)),
                ("start_ts < ?", utc_naive(until)),
            ]
        )
        return _page(
            snap, _INCIDENT_SUMMARY, "incidents", where, params, "start_ts DESC, incident_id", limit, offset
        )

    @app.get(
        "/incidents/{incident_id}",
        response_model=IncidentDetail,
        tags=["incidents"],
        dependencies=protected,
        responses={**_ERRORS, **_NOT_READY, **_NOT_FOUND},
        summary="One incident with its root-cause section and events",
    )
    def get_incident(incident_id: str) -> Response:
        snap = current_snapshot()
        columns, rows = snap.query("SELECT * FROM incidents WHERE incident_id = ?", [incident_id])
        if not rows:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown incident {incident_id!r}")
        row = as_dicts(columns, rows)[0]
        columns, events = snap.query(
            "SELECT event_id, ts, source_service, user_id, ip_address, ensemble_score FROM incident_events "
            "WHERE incident_id = ? ORDER BY ts LIMIT 100",
            [incident_id],
        )
        root_cause = {
            "origin_service": row["origin_service"],
            "origin_entity": row["origin_entity"],
            "scenario": {
                "id": row["scenario_id"],
                "name": row["scenario_name"],
                "confidence": row["scenario_confidence"],
            },
            "alternatives": json.loads(row["scenario_alternatives"] or "[]"),
            "top_features": json.loads(row["top_features"] or "[]"),
        }
        detail = IncidentDetail(**row, root_cause=root_cause, events=as_dicts(columns, events))
        return json_response(detail.model_dump())

    console.install(
        app,
        state,
        keys,
        limiter,
        RateLimiter(settings.login_rate_limit),
        predictor,
        console.session_secret(settings.console_secret, settings.api_keys),
        settings.feedback_db,
        settings.alerts_db,
    )

    # -- metrics ------------------------------------------------------------------------------------

    @app.get(
        "/metrics",
        tags=["service"],
        dependencies=protected,
        responses=_ERRORS,
        response_class=Response,
        summary="Prometheus metrics: requests and latency per route, model versions, snapshot age",
    )
    def prometheus() -> Response:
        metrics.refresh()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _page(
    snap: Snapshot, columns: str, table: str, where: str, params: list, order: str, limit: int, offset: int
) -> Response:
    """One page of a snapshot table, with the total the filters match."""
    total = snap.query(f"SELECT count(*) FROM {table} {where}", params)[1][0][0]
    names, rows = snap.query(
        f"SELECT {columns} FROM {table} {where} ORDER BY {order} LIMIT ? OFFSET ?", [*params, limit, offset]
    )
    return json_response({"total": total, "limit": limit, "offset": offset, "items": as_dicts(names, rows)})
