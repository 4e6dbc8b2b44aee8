"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bankanom_api.deps import API_KEY, Metrics, State
from bankanom_api.responses import AUTH

router = APIRouter(tags=["service"], dependencies=[API_KEY], responses=AUTH)


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics: requests and latency per route, model versions, snapshot age",
)
def prometheus(metrics: Metrics, state: State) -> Response:
    metrics.refresh(state)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
