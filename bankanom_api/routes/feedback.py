"""Analyst feedback over the JSON API: give a label (as the person the key belongs to), read the audit
trail and its summary, and ask which items to label next. The console's form gives feedback through the
same validation and rules (``labelling``)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import polars as pl
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from bankanom_api.deps import API_KEY, Live, Settings, State, authenticated, loaded_snapshot
from bankanom_api.labelling import person, queue, submit
from bankanom_api.labelling import rows as feedback_rows
from bankanom_api.responses import AUTH, NOT_READY, Limit, Offset, json_response, problem
from bankanom_api.schemas import (
    FeedbackKind,
    FeedbackPage,
    FeedbackPosted,
    FeedbackQueue,
    FeedbackRequest,
    FeedbackSummary,
)
from bankanom_pipeline import feedback

router = APIRouter(tags=["feedback"], dependencies=[API_KEY], responses=AUTH)


async def _giving(request: Request) -> str:
    """The key id of a key mapped to a person (403 otherwise): checked before the body is validated,
    as the key itself is."""
    key_id = await authenticated(request)
    person(request.app.state.settings.analysts, key_id)
    return key_id


@router.post(
    "/feedback",
    status_code=status.HTTP_201_CREATED,
    response_model=FeedbackPosted,
    responses={
        **problem(403, "the key is not mapped to an analyst (BANKANOM_ANALYSTS), or may only ingest"),
        **problem(
            404, "no such incident (published or live; a merged one names its survivor) or transaction"
        ),
        **NOT_READY,
    },
    summary="Label an incident or a transaction, as the person the API key belongs to",
    description=(
        "Appends one row to the audit trail (rows are never updated). The label that counts per item is "
        "the latest across analysts. `changed`: this analyst had given the item a different label before; "
        "`disagreement`: the item's analysts' latest labels now differ. Pass the queue's `reason` as "
        "`selection` when labelling an item GET /feedback/queue asked about."
    ),
)
def post_feedback(
    body: FeedbackRequest,
    key_id: Annotated[str, Depends(_giving)],
    settings: Settings,
    state: State,
    live: Live,
) -> Response:
    response = json_response(submit(settings, state, live, key_id, body, "api"))
    response.status_code = status.HTTP_201_CREATED
    return response


@router.api_route(
    "/feedback", methods=["OPTIONS", "PUT", "PATCH", "DELETE", "TRACE"], include_in_schema=False
)
def feedback_methods() -> Response:
    """405 naming both methods: with a route per method, Starlette's 405 would name only the first's."""
    raise HTTPException(
        status.HTTP_405_METHOD_NOT_ALLOWED, "Method Not Allowed", headers={"Allow": "GET, POST"}
    )


@router.get(
    "/feedback",
    response_model=FeedbackPage,
    summary="The feedback rows (the audit trail), newest first",
)
def list_feedback(
    settings: Settings,
    kind: FeedbackKind | None = None,
    target_id: Annotated[str | None, Query(max_length=200)] = None,
    analyst: Annotated[str | None, Query(max_length=64, description="the person's name")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    rows = feedback_rows(settings)
    for column, value in (("kind", kind), ("target_id", target_id), ("analyst", analyst)):
        if value is not None:
            rows = rows.filter(pl.col(column) == value)
    newest = rows.sort("created_at", "feedback_id", descending=True)
    return json_response(
        {
            "total": newest.height,
            "limit": limit,
            "offset": offset,
            "items": newest.slice(offset, limit).to_dicts(),
        }
    )


@router.get(
    "/feedback/summary",
    response_model=FeedbackSummary,
    summary="Label counts, per-analyst counts, changes of mind and disagreements",
)
def feedback_summary(settings: Settings, kind: FeedbackKind | None = None) -> Response:
    rows = feedback_rows(settings)
    counted = feedback.latest(rows)
    labels = {
        k: {
            label: int(((counted["kind"] == k) & (counted["label"] == label)).sum())
            for label in feedback.LABELS
        }
        for k in ([kind] if kind else feedback.KINDS)
    }
    return json_response({"kind": kind, "labels": labels, **feedback.audit(rows, kind)})


@router.get(
    "/feedback/queue",
    response_model=FeedbackQueue,
    responses=NOT_READY,
    summary="The items to ask analysts about next, each with its reason",
    description=(
        "Chosen among the published snapshot's scored transactions or incidents (of `partition_date` when "
        "given) that have no label yet (unsure counts as labelled): the top-ranked, the ones nearest the "
        "decision boundary and a random share (transactions: drawn among those the re-ranker judges, ensemble "
        "score at least its floor). Reading it changes nothing: the same request "
        "answers the same items until feedback is given or a new snapshot is published."
    ),
)
def feedback_queue(
    state: State,
    settings: Settings,
    kind: FeedbackKind,
    n: Annotated[int, Query(ge=1, le=500, description="items to return")] = 20,
    partition_date: Annotated[dt.date | None, Query(description="only items of this day")] = None,
) -> Response:
    snap = loaded_snapshot(state)
    items = queue(snap, feedback.read(settings.feedback_db), kind, n, partition_date, settings.models_dir)
    return json_response({"items": items})
