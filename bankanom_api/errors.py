"""The JSON API's error answers: validation errors without the input echoed back, one answer for a body
that is not JSON, and a plain 500 for anything unexpected (logged with its traceback); and the reading
of a log event body as the pipeline reads a log line, so that what the pipeline reads and refuses is a
field-level 422 rather than a JSON decode error."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from bankanom_pipeline.validation import json_numbers

log = logging.getLogger("bankanom_api")


# the routes whose refused events /metrics counts (bankanom_api_refused_events_total)
COUNTED = frozenset({"/events", "/predict"})


async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    # field-level messages, without echoing the (possibly large) input back
    detail = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in error.errors()]
    if request.url.path in COUNTED:
        request.app.state.metrics.refuse(request.url.path, detail)
    return JSONResponse({"detail": detail}, status_code=422)


async def http_error(request: Request, error: StarletteHTTPException) -> Response:
    # FastAPI answers a JSON body that is not UTF-8 with an undocumented 400, and any other
    # undecodable JSON with a 422: one answer for both
    if isinstance(error.__cause__, UnicodeDecodeError):
        where = ["body", error.__cause__.start]
        detail = [{"loc": where, "msg": "JSON decode error: not UTF-8", "type": "json_invalid"}]
        return JSONResponse({"detail": detail}, status_code=422)
    return await http_exception_handler(request, error)


async def unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal error"}, status_code=500)


HANDLERS = {RequestValidationError: invalid, StarletteHTTPException: http_error, Exception: unexpected}


class _PipelineJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json_numbers.loads(await self.body())
        return self._json


class PipelineJSONRoute(APIRoute):
    """A route whose JSON body is read as the pipeline reads a log line (``json_numbers.loads``): a
    non-finite literal Python's JSON does not take (``-NaN``, ``nan``, ``inf``) or an integer beyond a
    double is read, and then refused by the rule it breaks, naming the field, instead of being a JSON
    decode error. A valid body is read by ``json.loads`` alone, as before."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def read_as_the_pipeline(request: Request) -> Response:
            return await handler(_PipelineJSONRequest(request.scope, request.receive))

        return read_as_the_pipeline
