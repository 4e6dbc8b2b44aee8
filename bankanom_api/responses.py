"""What the JSON routes share: rows to JSON without re-validation, filters bound as parameters, and the
rule that ids in one request are unique."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Annotated

import orjson
from fastapi import Query, Response

# paging of every list route
Limit = Annotated[int, Query(ge=1, le=1000, description="rows per page")]
Offset = Annotated[int, Query(ge=0)]


def json_response(body) -> Response:
    """Rows straight to JSON. The routes declare their response models for the OpenAPI document, and
    the snapshot's columns are exactly those models' fields (tests compare them); validating every row
    again on the way out cost more than the query."""
    return Response(orjson.dumps(body), media_type="application/json")


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
