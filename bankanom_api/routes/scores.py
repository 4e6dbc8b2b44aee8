"""The latest scored events: the published snapshot's, and the live stream's it does not hold."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from bankanom_api.deps import API_KEY, Live, State, served_snapshot
from bankanom_api.responses import AUTH, NOT_READY, Limit, Offset, json_response, time_filter
from bankanom_api.schemas import ScoresPage, utc_naive

router = APIRouter(tags=["scores"], dependencies=[API_KEY], responses=AUTH)


@router.get(
    "/scores/latest",
    response_model=ScoresPage,
    responses=NOT_READY,
    summary="The latest scored events, newest first, batch and live",
    description=(
        "The published snapshot's scored events and the live stream's (`live: true`) it does not hold: "
        "the batch run wins for every event it holds, live rows fill the days and events it does not "
        "cover. Filters, order and paging apply to the merged rows."
    ),
)
def latest_scores(
    state: State,
    live: Live,
    service: str | None = None,
    user: str | None = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="minimum ensemble score")] = None,
    anomalies_only: bool = False,
    since: time_filter("events at or after this instant") = None,
    until: time_filter("events before this instant") = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    snap = served_snapshot(state, live)
    total, items = live.scores(
        snap,
        [
            ("source_service = ?", service),
            ("user_id = ?", user),
            ("ensemble_score >= ?", min_score),
            ("is_anomaly", True if anomalies_only else None),
            ("ts >= ?", utc_naive(since)),
            ("ts < ?", utc_naive(until)),
        ],
        limit,
        offset,
    )
    return json_response({"total": total, "limit": limit, "offset": offset, "items": items})
