"""The routes' dependencies: what the app built (``create_app`` and the lifespan put it on ``app.state``),
the API key, the console's session and posted form, and the 503s of what is not loaded yet.

Models and the snapshot are reached through ``State`` and the ``loaded_*`` functions, called in a route's
body, rather than through dependencies that answer 503 themselves: FastAPI runs dependencies before it
reports a request's validation errors, so such a dependency would answer 503 to a malformed request,
which must get its 422 (and an unknown model its 404) whatever is loaded.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, HTTPException, Request, status

from bankanom_api.console import PREFIX, Analyst, Sessions
from bankanom_api.live import LiveReader
from bankanom_api.metrics import ApiMetrics
from bankanom_api.predict import Predictor
from bankanom_api.security import INGEST, READ, KeyChecker, RateLimiter, forbidden, unauthorized
from bankanom_api.settings import ApiSettings
from bankanom_api.state import Models, ServingState, Snapshot
from bankanom_api.stream import StreamClient
from bankanom_api.transactions import TransactionScorer
from bankanom_pipeline.detection.config import MODEL_NAMES

# Async on purpose, all of them: they only read app.state, and a sync dependency costs a thread-pool round
# trip per request.


def _key_with(request: Request, scope: str, refusal: str) -> str:
    identity = getattr(request.state, "api_key_id", None)
    if identity is None:
        raise unauthorized()
    if scope not in request.state.api_key_scopes:
        raise forbidden(refusal)
    return identity


async def authenticated(request: Request) -> str:
    """The dependency every route but /health and /events carries: the key id ``middleware.KeyGate``
    established before the body was read (401 if it did not, so a route outside the gate fails closed),
    of a key of BANKANOM_API_KEYS (403 for an ingest-only key)."""
    return _key_with(request, READ, "this key may only ingest (POST /events); use a key of BANKANOM_API_KEYS")


async def ingesting(request: Request) -> str:
    """POST /events' dependency: a key of BANKANOM_INGEST_KEYS (403 for any other valid key)."""
    return _key_with(
        request, INGEST, "this key may not ingest: POST /events takes only the keys of BANKANOM_INGEST_KEYS"
    )


API_KEY = Depends(authenticated)
INGEST_KEY = Depends(ingesting)


async def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def _serving(request: Request) -> ServingState:
    return request.app.state.serving


async def _predictor(request: Request) -> Predictor:
    return request.app.state.predictor


async def _stream(request: Request) -> StreamClient:
    return request.app.state.stream


async def _live(request: Request) -> LiveReader:
    return request.app.state.live


async def _scorer(request: Request) -> TransactionScorer:
    return request.app.state.transaction_scorer


async def _metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


async def _keys(request: Request) -> KeyChecker:
    return request.app.state.keys


async def _key_limiter(request: Request) -> RateLimiter:
    return request.app.state.limiter


async def _login_limiter(request: Request) -> RateLimiter:
    return request.app.state.login_limiter


async def _sessions(request: Request) -> Sessions:
    return request.app.state.sessions


Settings = Annotated[ApiSettings, Depends(_settings)]
State = Annotated[ServingState, Depends(_serving)]
LogPredictor = Annotated[Predictor, Depends(_predictor)]
Stream = Annotated[StreamClient, Depends(_stream)]
Live = Annotated[LiveReader, Depends(_live)]
Scorer = Annotated[TransactionScorer, Depends(_scorer)]
Metrics = Annotated[ApiMetrics, Depends(_metrics)]
Keys = Annotated[KeyChecker, Depends(_keys)]
KeyLimiter = Annotated[RateLimiter, Depends(_key_limiter)]
LoginLimiter = Annotated[RateLimiter, Depends(_login_limiter)]
ConsoleSessions = Annotated[Sessions, Depends(_sessions)]


def _unavailable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail)


def loaded_models(state: ServingState) -> Models:
    if state.models is None:
        raise _unavailable(state.unavailable("models", "no promoted models yet: run train_job"))
    return state.models


def feature_set_mismatch(models: Models, version: str) -> str | None:
    """Why ``models`` cannot score features of feature set ``version`` (None when they can): a model
    scores only the features it was trained on."""
    for name, manifest in models.manifests.items():
        recorded = manifest.get("feature_set_version")
        if recorded != version:
            trained = (
                f"feature set {recorded}" if recorded else "a feature set from before versions were recorded"
            )
            return (
                f"the promoted {name} ({manifest.get('version', '?')}) was trained on {trained}; the API "
                f"computes feature set {version}: train and promote models on the current features"
            )
    return None


def compatible_models(state: ServingState, version: str) -> Models:
    models = loaded_models(state)
    mismatch = feature_set_mismatch(models, version)
    if mismatch:
        raise _unavailable(mismatch)
    return models


def loaded_snapshot(state: ServingState) -> Snapshot:
    if state.snapshot is None:
        raise _unavailable(state.unavailable("snapshot", "no snapshot published yet: run pipeline_job"))
    return state.snapshot


def served_snapshot(state: ServingState, live: LiveReader) -> Snapshot | None:
    """The snapshot to merge live results with; None when none is loaded but the live store exists (live
    results alone), 503 when there is neither."""
    if state.snapshot is None and not live.path.exists():
        loaded_snapshot(state)
    return state.snapshot


def loaded_transaction_models(state: ServingState) -> Models:
    if state.transaction_models is None:
        why = "no promoted transaction models yet: run transaction_train_job"
        raise _unavailable(state.unavailable("transaction_models", why))
    return state.transaction_models


def published_transactions(state: ServingState) -> Snapshot:
    snap = state.snapshot
    if snap is None or not snap.has("transactions"):
        raise _unavailable("no transactions published yet: run transactions_job")
    return snap


def known_model(name: str) -> str:
    if name not in MODEL_NAMES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown model {name!r}; known: {list(MODEL_NAMES)}")
    return name


async def _analyst(request: Request, sessions: ConsoleSessions, keys: Keys, limiter: KeyLimiter) -> Analyst:
    """The logged-in analyst; otherwise a redirect to the login form."""
    data = sessions.read(request)
    key_id, csrf = data.get("k"), data.get("c")
    if not key_id or not csrf or key_id not in keys.known_ids():
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(
            303, "log in first", headers={"Location": f"{PREFIX}/login?{urlencode({'next': target})}"}
        )
    limiter.check(key_id)  # the JSON API's limit of the key
    who = Analyst(key_id, csrf, request.app.state.settings.analysts.get(key_id))
    request.state.analyst = who
    return who


async def _form_fields(request: Request) -> dict[str, str]:
    """The posted form's text fields (reading the body is the only async step of a console POST)."""
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


ConsoleSession = Annotated[Analyst, Depends(_analyst)]
Form = Annotated[dict[str, str], Depends(_form_fields)]
