"""The stream's internal service (loopback only): the API forwards ``POST /events`` to ``/ingest`` and
``POST /predict`` (with context) to ``/peek``, so the engine's state has one owner however many API
workers run (``/peek`` takes events the API validated from a caller holding the key and answers raw
feature rows to a caller that accepts them: ``live.feature_rows``);
``/status`` for operators and tests. With ``BANKANOM_STREAM_KEY`` set every call must carry it in
``X-Stream-Key``.

``serve`` runs the whole process: the consumer loop in a thread, uvicorn in the main thread (it handles
SIGINT/SIGTERM), a checkpoint at a clean stop.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from bankanom_pipeline.live import feature_rows
from bankanom_pipeline.live.runner import Runner
from bankanom_pipeline.live.scorer import LiveScorer, LiveStateError, PeekRefused
from bankanom_pipeline.online.engine import OnlineEngine

log = logging.getLogger("bankanom.stream")

MAX_EVENTS = 10_000  # per request: the API's own limit is lower
_EVENTS = feature_rows.EVENTS.encode()
# a peek of up to this many validated events runs on the event loop when the state's lock is free (under
# a millisecond): the hand-off to a thread and back costs about as much CPU as one event's peek (~50 us)
IN_PLACE_EVENTS = 8


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status, media_type="application/json"
    )


async def _events(request: Request) -> list[dict]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError as error:
        raise HTTPException(400, f"the body is not JSON: {error}") from None
    events = body.get("events") if isinstance(body, dict) else None
    if not isinstance(events, list) or not events or not all(isinstance(e, dict) for e in events):
        raise HTTPException(422, 'the body must be {"events": [<event object>, ...]} with at least one')
    if len(events) > MAX_EVENTS:
        raise HTTPException(413, f"{len(events)} events; at most {MAX_EVENTS} per request")
    return events


def _rows(values: np.ndarray, accept: str) -> Response:
    """``/peek``'s answer: raw feature rows to a caller that accepts them (the API), JSON otherwise."""
    if feature_rows.FEATURE_ROWS in accept:
        body, headers = feature_rows.encode(values, OnlineEngine.FEATURE_SET_VERSION, OnlineEngine.FEATURES)
        return Response(body, 200, headers=headers, media_type=feature_rows.FEATURE_ROWS)
    return _json(
        {
            "feature_set_version": OnlineEngine.FEATURE_SET_VERSION,
            "columns": list(OnlineEngine.FEATURES),
            # NaN (no value) is written as null
            "features": np.where(np.isnan(values), None, values).tolist(),
        }
    )


def create_app(
    scorer: LiveScorer, runner: Runner | None, key: str | None, on_shutdown: Callable[[], None] | None = None
) -> Callable:
    """The internal service over ``scorer`` (an ASGI app); ``on_shutdown`` runs when the server stops (a
    signal, or the loop's failure): uvicorn re-raises a caught signal once it has shut down, so code
    after ``Server.run`` would never run then."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if on_shutdown is not None:
            await _in_thread(on_shutdown)

    def key_ok(sent: bytes) -> bool:
        return key is None or secrets.compare_digest(sent, key.encode())

    # async: FastAPI runs a plain function dependency in its thread pool, a second thread hop per call
    async def check_key(request: Request) -> None:
        if not key_ok(request.headers.get("x-stream-key", "").encode("latin-1")):
            raise HTTPException(401, "missing or wrong X-Stream-Key")

    app = FastAPI(
        title="bankanom stream (internal)",
        dependencies=[Depends(check_key)],
        openapi_url=None,
        lifespan=lifespan,
    )

    @app.post("/ingest")
    async def ingest(request: Request) -> Response:
        events = await _events(request)
        try:
            body = await _in_thread(scorer.ingest_posted, events)
        except LiveStateError as error:
            raise HTTPException(503, str(error)) from None
        return _json(body)

    @app.post("/peek")
    async def peek(request: Request) -> Response:
        # the API's validated events never reach this route: ``fast_peek`` answers them
        events = await _events(request)
        try:
            values = await _in_thread(scorer.peek, events)
        except PeekRefused as error:
            return _json({"detail": [error.detail]}, error.status)
        return _rows(values, request.headers.get("accept", ""))

    @app.get("/status")
    async def status() -> Response:
        body = await _in_thread(scorer.status)
        body["runner"] = None if runner is None else runner.describe()
        return _json(body)

    async def fast_peek(scope, receive, send) -> None:
        """``POST /peek`` of the API's validated events (``feature_rows.EVENTS``), as plain ASGI: FastAPI's
        routing, dependency solving and request object cost ~0.1-0.15 ms of CPU per call, about as much
        as the rest of a one-event peek's service work; every other request goes to ``app``."""
        if not (
            scope["type"] == "http"
            and scope["path"] == "/peek"
            and scope["method"] == "POST"
            and (b"content-type", _EVENTS) in scope["headers"]
        ):
            await app(scope, receive, send)
            return
        try:
            body = await Request(scope, receive).body()
        except ClientDisconnect:  # the caller is gone: nobody to answer
            return
        response = await _peek_validated(dict(scope["headers"]), body)
        await response(scope, receive, send)

    async def _peek_validated(headers: dict[bytes, bytes], body: bytes) -> Response:
        if not key_ok(headers.get(b"x-stream-key", b"")):
            return _json({"detail": "missing or wrong X-Stream-Key"}, 401)
        # events the caller validated with the same rules (the API): taken only from a holder of the
        # key; a stream without a key validates whatever it is sent
        if key is None:
            detail = f"{feature_rows.EVENTS} is taken only with BANKANOM_STREAM_KEY set: send JSON events"
            return _json({"detail": detail}, 415)
        try:
            events = feature_rows.decode_events(body)
        except ValueError as error:
            return _json({"detail": f"the validated events: {error}"}, 422)
        if len(events) > MAX_EVENTS:
            return _json({"detail": f"{len(events)} events; at most {MAX_EVENTS} per request"}, 413)
        try:
            # a few on the event loop, unless a batch or a checkpoint holds the state: then in a thread
            values = scorer.peek_validated(events, wait=False) if len(events) <= IN_PLACE_EVENTS else None
            if values is None:
                values = await _in_thread(scorer.peek_validated, events)
        except PeekRefused as error:
            return _json({"detail": [error.detail]}, error.status)
        return _rows(values, headers.get(b"accept", b"").decode("latin-1"))

    return fast_peek


async def _in_thread(fn, *args):
    # the scorer's lock may be held for a batch or a checkpoint: never on the event loop
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def serve(scorer: LiveScorer, source, host: str, port: int, key: str | None, max_events: int = 1000) -> int:
    """Run the stream until SIGINT/SIGTERM (exit 0) or a failure of the consumer loop (exit 1)."""
    import uvicorn

    runner = None if source is None else Runner(scorer, source, max_events=max_events)
    stopped = threading.Event()

    def shut_down() -> None:
        if stopped.is_set():
            return
        stopped.set()
        if runner is not None:
            runner.stop()
            source.close()
        scorer.close()  # checkpoints, unless a failure left the engine ahead of the store
        failure = runner.failure if runner is not None else None
        log.info("stopped%s", f" after a failure: {failure}" if failure else "")

    app = create_app(scorer, runner, key, on_shutdown=shut_down)
    from bankanom_pipeline.http_protocol import CoalescingHttpToolsProtocol

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        http=CoalescingHttpToolsProtocol,  # a /peek answer's head and body in one write
    )
    server = uvicorn.Server(config)
    scorer.models.start()

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            if runner is not None:
                runner.start()
            log.info(
                "ready: serving http://%s:%d, source %s, restored from %s, %d events stored",
                host,
                port,
                "none (POST /ingest only)" if source is None else source.name,
                scorer.restored_from,
                scorer.seq,
            )

    if runner is not None:

        def stop_server() -> None:
            server.should_exit = True

        runner.on_failure = stop_server
    threading.Thread(target=announce, name="bankanom-stream-start", daemon=True).start()
    try:
        server.run()
    finally:
        shut_down()  # when the server never started (a port in use), the lifespan did not run
    failed = runner is not None and runner.failure is not None
    return 1 if failed or not server.started else 0
