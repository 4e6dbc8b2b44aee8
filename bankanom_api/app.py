"""The bankanom prediction API (FastAPI). Start it with ``bankanom api``.

It never opens the live warehouse: scores, incidents and evaluation come from the published snapshot
(``data/snapshots``), merged with the live stream's results from its live store (``data/live``, read
only: ``live.py``), models from the registry's promoted versions (``data/models``); snapshots and models
are reloaded in the background when newer ones appear. The online state is the live stream's: ingest and
context lookups are forwarded to its service (``stream.py``). Route handlers (``routes/``) are plain
``def``: FastAPI runs them in its thread pool, so scoring and DuckDB reads never block the event loop;
those that call the stream are ``async`` and await it (``stream.py``, ``routes/predict.py``).
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from bankanom_api import errors
from bankanom_api.console import HERE, PREFIX, ConsoleError, Sessions, error_page, session_secret
from bankanom_api.live import LiveReader
from bankanom_api.metrics import ApiMetrics, MetricsMiddleware
from bankanom_api.middleware import HardenedFastAPI, KeyGate, docs_paths
from bankanom_api.predict import Predictor
from bankanom_api.routes import ROUTERS, document_batch_limit
from bankanom_api.security import KeyChecker, RateLimiter
from bankanom_api.settings import ApiSettings
from bankanom_api.state import Reloader, ServingState
from bankanom_api.stream import StreamClient
from bankanom_api.transactions import TransactionScorer
from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.sqlmodels.inmemory import FeatureBuilder

log = logging.getLogger("bankanom_api")


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Builds what the routes serve from (on ``app.state``, read by ``deps``) and the reloader."""
    settings: ApiSettings = app.state.settings
    state = ServingState(settings.models_dir, settings.snapshots_dir)
    app.state.serving = state
    app.state.predictor = Predictor(FeatureBuilder(), default_detection_config())
    # the online state is the stream's (bankanom stream): ingest and peeks are forwarded to its service,
    # so any number of API workers share one state; its results are read from the live store
    stream = StreamClient(settings.stream_url, settings.stream_key, settings.stream_timeout_s)
    app.state.stream = stream
    app.state.live = LiveReader(settings.live_dir)
    app.state.metrics.stream_status = app.state.live.status
    app.state.transaction_scorer = TransactionScorer()
    app.state.sessions = Sessions(session_secret(settings.console_secret, settings.api_keys))
    app.state.login_limiter = RateLimiter(settings.login_rate_limit)
    state.refresh()
    # what is loaded now (libraries, models) lives as long as the process: out of the collector's
    # sight, a full collection no longer walks it (those walks were the slowest requests' extra time)
    gc.collect()
    gc.freeze()
    reloader = Reloader(state, settings.reload_seconds)
    reloader.start()
    try:
        yield
    finally:
        reloader.stop()
        await stream.aclose()


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or ApiSettings.from_env()
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
        exception_handlers={**errors.HANDLERS, ConsoleError: error_page},
    )
    app.state.settings = settings
    app.state.keys = KeyChecker(settings.api_keys)  # refuses to build an app nobody could call
    unknown = sorted(set(settings.analysts) - app.state.keys.known_ids())
    if unknown:  # a rotated key's person: harmless, but their feedback now needs the new key's id
        log.warning("BANKANOM_ANALYSTS names key ids of no key in BANKANOM_API_KEYS: %s", ", ".join(unknown))
    app.state.limiter = RateLimiter(settings.rate_limit)  # per key: the JSON routes and the console
    app.state.metrics = ApiMetrics()
    app.add_middleware(  # the innermost: a refused key is still counted and gets the CORS headers
        KeyGate,
        keys=app.state.keys,
        ingest_keys=KeyChecker(settings.ingest_keys, "BANKANOM_INGEST_KEYS", required=False),
        per_key=app.state.limiter,
        failures=RateLimiter(settings.auth_failure_limit, "failed authentication limit"),
        public_paths=frozenset({"/health", app.openapi_url}) | docs_paths(app),
        public_prefix=PREFIX,  # the console signs in with its own session cookie
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    for router in ROUTERS:
        app.include_router(router)
    document_batch_limit(app, settings.max_batch)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "console_static"), name="console-static")
    return app
