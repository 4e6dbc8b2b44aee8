"""Incidents and their root-cause sections: the published snapshot's, and the live stream's it does not
hold (``live.py`` has the rule)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from bankanom_api import incident_reranks
from bankanom_api.deps import API_KEY, Live, State, served_snapshot
from bankanom_api.responses import (
    AUTH,
    NOT_FOUND,
    NOT_READY,
    Limit,
    Offset,
    as_dicts,
    json_response,
    time_filter,
)
from bankanom_api.schemas import IncidentDetail, IncidentsPage, Moved, Severity, utc_naive

router = APIRouter(tags=["incidents"], dependencies=[API_KEY], responses=AUTH)

_SUMMARY = """incident_id, partition_date, start_ts, end_ts, event_count, severity, status,
    services, user_count, ip_count, max_score, mean_score, origin_service, origin_entity, scenario_id,
    scenario_name, scenario_confidence"""


@router.get(
    "/incidents",
    response_model=IncidentsPage,
    responses=NOT_READY,
    summary="Incidents, newest first, batch and live",
    description=(
        "The published snapshot's incidents and the live stream's open ones (`live: true`) whose first "
        "event the snapshot does not hold yet; incidents merged into another are not listed. Filters, "
        "order and paging apply to the merged rows. With a promoted incident re-ranker, each batch "
        "incident carries its `rerank_score` and `suppressed` (below the re-ranker's cut: kept and listed, "
        "not `reported`); live incidents are not re-ranked (`rerank_score` null)."
    ),
)
def list_incidents(
    state: State,
    live: Live,
    severity: Severity | None = None,
    incident_status: Annotated[str | None, Query(alias="status")] = None,
    since: time_filter("incidents still open at or after this instant") = None,
    until: time_filter("incidents that started before this instant") = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    snap = served_snapshot(state, live)
    total, items = live.incidents(
        snap,
        [
            ("severity = ?", severity),
            ("status = ?", incident_status),
            ("end_ts >= ?", utc_naive(since)),
            ("start_ts < ?", utc_naive(until)),
        ],
        f"{_SUMMARY}, {incident_reranks.columns(snap)}",
        limit,
        offset,
    )
    for item in items:  # live rows: never re-ranked
        item.setdefault("rerank_score", None)
        item.setdefault("suppressed", False)
    return json_response({"total": total, "limit": limit, "offset": offset, "items": items})


@router.get(
    "/incidents/{incident_id}",
    response_model=IncidentDetail,
    responses={
        **NOT_READY,
        **NOT_FOUND,
        301: {
            "model": Moved,
            "description": "a live incident merged into an older one: Location is the surviving "
            "incident, merged_into its id",
        },
    },
    summary="One incident with its root-cause section and events, batch or live",
)
def get_incident(incident_id: str, state: State, live: Live) -> Response:
    snap = served_snapshot(state, live)
    if snap is not None and snap.has("incidents"):
        columns, rows = snap.query("SELECT * FROM incidents WHERE incident_id = ?", [incident_id])
        if rows:
            row = as_dicts(columns, rows)[0]
            columns, events = snap.query(
                "SELECT event_id, ts, source_service, user_id, ip_address, ensemble_score FROM incident_events "
                "WHERE incident_id = ? ORDER BY ts LIMIT 100",
                [incident_id],
            )
            row = incident_reranks.served(row, incident_reranks.of(snap, incident_id))
            return _detail(row, as_dicts(columns, events), live=False)
    row = live.incident(incident_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown incident {incident_id!r}")
    if row.get("merged_into"):
        return _moved(incident_id, row["merged_into"])
    events = row.pop("events")
    return _detail(incident_reranks.served(row, None), events, live=True)


def _moved(incident_id: str, survivor: str) -> Response:
    response = json_response(
        {"detail": f"incident {incident_id} was merged into {survivor}", "merged_into": survivor}
    )
    response.status_code = status.HTTP_301_MOVED_PERMANENTLY
    response.headers["Location"] = f"/incidents/{survivor}"
    return response


def _detail(row: dict, events: list[dict], live: bool) -> Response:
    detail = IncidentDetail(**row, live=live, root_cause=_root_cause(row), events=events)
    return json_response(detail.model_dump())


def _root_cause(row: dict) -> dict:
    return {
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
