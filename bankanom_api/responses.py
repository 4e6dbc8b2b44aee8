"""What the JSON routes share: paging and time parameters with documented bounds, rows to JSON without
re-validation (times as RFC 3339 in UTC), filters bound as parameters, and the rule that ids in one
request are unique."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable
from typing import Annotated

import orjson
from fastapi import Query, Response
from pydantic import BeforeValidator

from bankanom_api.schemas import Problem
from bankanom_api.state import Snapshot

# The error answers the routes document, all with a Problem body. A 422 (FastAPI documents it wherever a
# route takes parameters or a body) is always {"detail": [{"loc", "msg", "type"}, ...]}.
AUTH = {
    401: {"model": Problem, "description": "missing or invalid API key"},
    429: {
        "model": Problem,
        "description": "rate limit exceeded, per key or for failed keys (see Retry-After)",
    },
}


def problem(status: int, description: str) -> dict:
    return {status: {"model": Problem, "description": description}}


NOT_READY = problem(503, "nothing promoted or published yet")
NOT_FOUND = problem(404, "unknown id or model")
# Written in a route's description and response texts where the configured batch limit belongs: the
# routers are module-level, the limit is the app's (``routes.document_batch_limit`` fills it in).
BATCH_LIMIT = "{max_batch}"


# paging of every list route; bounded so that any value the schema allows is one DuckDB can bind
MAX_LIMIT, MAX_OFFSET = 1000, 1_000_000_000
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows skipped before the page")]

# RFC 3339's date-time: a date, a time and an offset (Z or ±hh:mm), nothing else
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


def _rfc3339_only(value: object) -> object:
    # pydantic alone would also read numbers ("0.0") as epoch seconds and a bare date as midnight
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("not an RFC 3339 date-time (e.g. 2026-01-06T10:00:00Z)")
    return value


def time_filter(description: str):
    """A query parameter holding one instant: an RFC 3339 date-time with its offset, nothing else."""
    return Annotated[
        dt.datetime | None, BeforeValidator(_rfc3339_only), Query(description=f"{description} (RFC 3339)")
    ]


def rfc3339(value: dt.datetime) -> str:
    """An instant as RFC 3339 in UTC with ``Z``, to the second (the console's display; JSON answers
    keep the fraction); a naive value is UTC already (the warehouse's time)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


def json_response(body) -> Response:
    """Rows straight to JSON. The routes declare their response models for the OpenAPI document, and
    the snapshot's columns are exactly those models' fields (tests compare them); validating every row
    again on the way out cost more than the query. Times come out as RFC 3339 with ``Z`` (the
    warehouse's naive times are UTC); NaN and infinities as null."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z), media_type="application/json"
    )


def as_dicts(columns: list[str], rows: list[tuple]) -> list[dict]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def where_clause(conditions: list[tuple[str, object]]) -> tuple[str, list]:
    """A WHERE clause of the conditions whose value is given; values are bound as parameters."""
    used = [(sql, value) for sql, value in conditions if value is not None]
    if not used:
        return "", []
    clause = "WHERE " + " AND ".join(sql for sql, _ in used)
    return clause, [value for sql, value in used if "?" in sql]


def repeated(ids: Iterable[str]) -> list[str]:
    """Ids given more than once, sorted (a request's ids must be unique)."""
    return sorted(i for i, n in Counter(ids).items() if n > 1)


def page(
    snap: Snapshot, columns: str, table: str, where: str, params: list, order: str, limit: int, offset: int
) -> Response:
    """One page of a snapshot table, with the total the filters match."""
    total = snap.query(f"SELECT count(*) FROM {table} {where}", params)[1][0][0]
    names, rows = snap.query(
        f"SELECT {columns} FROM {table} {where} ORDER BY {order} LIMIT ? OFFSET ?", [*params, limit, offset]
    )
    return json_response({"total": total, "limit": limit, "offset": offset, "items": as_dicts(names, rows)})
