"""The JSON API's error answers: validation errors without the input echoed back, one answer for a body
that is not JSON, and a plain 500 for anything unexpected (logged with its traceback)."""

from __future__ import annotations

import logging

from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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
