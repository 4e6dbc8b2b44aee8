"""Incidents and their root-cause sections, from the published snapshot."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from bankanom_api.deps import API_KEY, State, loaded_snapshot
from bankanom_api.responses import (
    AUTH,
    NOT_FOUND,
    NOT_READY,
    Limit,
    Offset,
    as_dicts,
    json_response,
    page,
    time_filter,
    where_clause,
)
from bankanom_api.schemas import IncidentDetail, IncidentsPage, Severity, utc_naive

router = APIRouter(tags=["incidents"], dependencies=[API_KEY], responses=AUTH)

_SUMMARY = """incident_id, partition_date, start_ts, end_ts, event_count, severity, status, reported,
    services, user_count, ip_count, max_score, mean_score, origin_service, origin_entity, scenario_id,
    scenario_name, scenario_confidence"""


@router.get(
    "/incidents", response_model=IncidentsPage, responses=NOT_READY, summary="Incidents, newest first"
)
def list_incidents(
    state: State,
    severity: Severity | None = None,
    incident_status: Annotated[str | None, Query(alias="status")] = None,
    since: time_filter("incidents still open at or after this instant") = None,
    until: time_filter("incidents that started before this instant") = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    snap = loaded_snapshot(state)
    where, params = where_clause(
        [
            ("severity = ?", severity),
            ("status = ?", incident_status),
            ("end_ts >= ?", utc_naive(since)),
            ("start_ts < ?", utc_naive(until)),
        ]
    )
    return page(snap, _SUMMARY, "incidents", where, params, "start_ts DESC, incident_id", limit, offset)


@router.get(
    "/incidents/{incident_id}",
    response_model=IncidentDetail,
    responses={**NOT_READY, **NOT_FOUND},
    summary="One incident with its root-cause section and events",
)
def get_incident(incident_id: str, state: State) -> Response:
    snap = loaded_snapshot(state)
    columns, rows = snap.query("SELECT * FROM incidents WHERE incident_id = ?", [incident_id])
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown incident {incident_id!r}")
    row = as_dicts(columns, rows)[0]
    columns, events = snap.query(
        "SELECT event_id, ts, source_service, user_id, ip_address, ensemble_score FROM incident_events "
        "WHERE incident_id = ? ORDER BY ts LIMIT 100",
        [incident_id],
    )
    detail = IncidentDetail(**row, root_cause=_root_cause(row), events=as_dicts(columns, events))
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
