"""The latest scored events, from the published snapshot."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from bankanom_api.deps import API_KEY, State, loaded_snapshot
from bankanom_api.responses import AUTH, NOT_READY, Limit, Offset, page, time_filter, where_clause
from bankanom_api.schemas import ScoresPage, utc_naive

router = APIRouter(tags=["scores"], dependencies=[API_KEY], responses=AUTH)


@router.get(
    "/scores/latest",
    response_model=ScoresPage,
    responses=NOT_READY,
    summary="The latest scored events, newest first",
)
def latest_scores(
    state: State,
    service: str | None = None,
    user: str | None = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="minimum ensemble score")] = None,
    anomalies_only: bool = False,
    since: time_filter("events at or after this instant") = None,
    until: time_filter("events before this instant") = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    snap = loaded_snapshot(state)
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
    return page(snap, "*", "scored_events", where, params, "ts DESC, event_id", limit, offset)
