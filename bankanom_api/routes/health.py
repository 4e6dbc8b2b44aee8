"""Liveness and readiness."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException, Response, status

from bankanom_api.deps import API_KEY, State, Stream
from bankanom_api.responses import AUTH
from bankanom_api.schemas import Health, Ready
from bankanom_api.state import Models, Snapshot
from bankanom_api.stream import StreamClient

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Ready,
    dependencies=[API_KEY],
    responses={**AUTH, 503: {"model": Ready, "description": "not ready (body says why)"}},
    summary="Readiness: promoted models and a snapshot are loaded, with their versions and ages; the live stream",
)
async def ready(response: Response, state: State, stream: Stream) -> Ready:
    models, snap = state.models, state.snapshot
    now = dt.datetime.now(dt.UTC)
    problems = [f"{kind}: {error}" for kind, error in state.errors.items()]
    if models is None:
        problems.append("no promoted models loaded")
    if snap is None:
        problems.append("no snapshot loaded")
    body = Ready(
        ready=models is not None and snap is not None,
        models=_model_ages(models, now),
        snapshot=None if snap is None else _snapshot_age(snap, now),
        stream=await _stream(stream),
        problems=problems,
    )
    if not body.ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return body


async def _stream(stream: StreamClient) -> dict:
    """The stream's /status, or why there is none. Not a readiness condition: the batch routes serve
    without it (POST /events and /predict with context answer 503 until it runs)."""
    try:
        return {"url": stream.url, "reachable": True, "status": await stream.status()}
    except HTTPException as error:
        return {"url": stream.url, "reachable": False, "error": error.detail}


def _age(now: dt.datetime, instant: str) -> float:
    return round((now - dt.datetime.fromisoformat(instant)).total_seconds(), 1)


def _model_ages(models: Models | None, now: dt.datetime) -> dict[str, dict]:
    if models is None:
        return {}
    return {
        name: {
            "version": d.version,
            "created_at": models.manifests[name]["created_at"],
            "age_seconds": _age(now, models.manifests[name]["created_at"]),
        }
        for name, d in models.detectors.items()
    }


def _snapshot_age(snap: Snapshot, now: dt.datetime) -> dict:
    return {**snap.pointer, "age_seconds": _age(now, snap.pointer["published_at"])}
