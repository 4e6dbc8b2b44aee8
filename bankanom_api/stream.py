"""The API's client of the stream scorer's internal service (``bankanom stream``): the one owner of the
online engine's state. ``POST /events`` is forwarded to its ``/ingest`` and ``POST /predict`` with
context to its ``/peek``, so every API worker reads and feeds the same state and none keeps a copy.

One pooled ``httpcore.ConnectionPool`` per app (keep-alive connections, shared by the thread pool's
requests): httpx's transport without its client layer (cookies, redirects, URL and header models),
which cost more CPU than the rest of a one-event /predict's call did. A short connect timeout: a stream
that is not running answers at once with a refused connection, one that hangs costs at most ``timeout``
seconds, and either way the route answers 503 naming the URL. ``/peek`` answers this client its
features as raw float64 rows (``live.feature_rows``), not JSON: no number is formatted or parsed. With
the stream's key this client sends ``/peek`` the events as validated here (the engine's fields), which
the stream does not validate again; without one, the events as JSON lines, which it validates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
from fastapi import HTTPException, status

from bankanom_api.posted import wire
from bankanom_api.schemas import LogEvent
from bankanom_pipeline.live import feature_rows
from bankanom_pipeline.live.lines import as_event

log = logging.getLogger("bankanom_api")

KEY_HEADER = "X-Stream-Key"
_JSON = b"application/json"


class StreamUnavailable(HTTPException):
    """503: the stream's service is not reachable, or answered something the API cannot pass on."""

    def __init__(self, detail: str):
        super().__init__(status.HTTP_503_SERVICE_UNAVAILABLE, detail)


class StreamClient:
    def __init__(self, url: str, key: str | None, timeout: float, connect_timeout: float = 1.0):
        import httpcore  # lazy: a heavy import the Dagster code location must not pay for

        self.url = url.rstrip("/")
        self._httpcore = httpcore
        self._pool = httpcore.ConnectionPool(max_connections=64, max_keepalive_connections=16)
        self._closed = False
        self._headers = [(KEY_HEADER.encode(), key.encode())] if key else []
        # the stream takes validated events only from a holder of its key: a stream started without
        # one answers 415, and this client then sends JSON events (which it validates)
        self._validated_events = key is not None
        self._timeout = {"connect": connect_timeout, "read": timeout, "write": timeout, "pool": timeout}
        # what a call fails with when the stream is not there or breaks the connection
        self._down_errors = (
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
            httpcore.ConnectionNotAvailable,
        )

    def close(self) -> None:
        self._closed = True
        self._pool.close()

    @property
    def down(self) -> str:
        return f"no live stream at {self.url}: start bankanom stream"

    @contextmanager
    def _opened(
        self,
        method: str,
        path: str,
        body: dict | bytes | None = None,
        accept: str | None = None,
        content_type: bytes = _JSON,
    ) -> Iterator[tuple[int, dict[str, str], Any]]:
        """``(status, headers, response)`` of a call whose body is read inside the block (httpcore's
        response: ``read()``, ``iter_stream()``); ``body``: a dict sent as JSON, or bytes of
        ``content_type``. A stream gone or timing out while the block reads is a 503 too."""
        if self._closed:  # a request still running as the app stops
            raise StreamUnavailable(
                f"this API process is stopping: the live stream at {self.url} is not asked"
            )
        headers = self._headers
        if body is not None:
            headers = [*headers, (b"content-type", content_type)]
            if isinstance(body, dict):
                body = orjson.dumps(body)
        if accept is not None:
            headers = [*headers, (b"accept", accept.encode())]
        try:
            with self._pool.stream(
                method,
                self.url + path,
                headers=headers,
                content=body,
                extensions={"timeout": self._timeout},
            ) as response:
                if response.status in (401, 403):
                    raise StreamUnavailable(
                        f"the live stream at {self.url} refused this API's key: BANKANOM_STREAM_KEY must "
                        "be the stream's"
                    )
                answer_headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers
                }
                yield response.status, answer_headers, response
        except self._httpcore.TimeoutException:
            raise StreamUnavailable(f"the live stream at {self.url} did not answer in time") from None
        except self._down_errors as error:
            log.warning("stream service %s unreachable: %r", self.url, error)
            raise StreamUnavailable(self.down) from None

    def _call(
        self,
        method: str,
        path: str,
        body: dict | bytes | None = None,
        accept: str | None = None,
        content_type: bytes = _JSON,
    ) -> tuple[int, dict[str, str], bytes]:
        with self._opened(method, path, body, accept, content_type) as (code, headers, response):
            return code, headers, response.read()

    @staticmethod
    def _json(content: bytes) -> Any:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            return content.decode("utf-8", "replace")

    def ingest(self, events: list[dict]) -> dict:
        """The stream's ``/ingest`` answer: committed to the live store before it returns."""
        code, _, content = self._call("POST", "/ingest", {"events": events})
        answer = self._json(content)
        if code != 200:
            raise self._unexpected("/ingest", code, answer)
        return answer

    def peek(self, events: list[LogEvent]) -> dict:
        """``{"feature_set_version", "columns", "features"}``, the features one float64 row per event (NaN:
        no value); as ``peeking``."""
        with self.peeking(events) as (version, columns, blocks):
            values = np.concatenate(list(blocks))
        return {"feature_set_version": version, "columns": columns, "features": values}

    @contextmanager
    def peeking(self, events: list[LogEvent]) -> Iterator[tuple[str, list[str], Iterator[np.ndarray]]]:
        """``(feature_set_version, columns, blocks)``: the events' features, one float64 row per event
        (NaN: no value), in blocks of rows in order, read inside the block as the stream computes them
        (a large peek comes in several: the caller scores one while the stream computes the next). The
        stream's 409 (too late) and 422 (an event it refuses) are passed on with their detail, from the
        iteration when the stream refused an event after its first blocks."""
        accept = f"{feature_rows.FEATURE_BLOCKS}, {feature_rows.FEATURE_ROWS}"
        with self._peek_call(events, accept) as (code, headers, response):
            kind = headers.get("content-type")
            if code == 200 and kind == feature_rows.FEATURE_BLOCKS:
                try:
                    version, columns = (
                        headers[feature_rows.VERSION_HEADER],
                        headers[feature_rows.COLUMNS_HEADER],
                    )
                except KeyError as error:
                    raise self._unexpected("/peek", code, f"feature blocks without {error}") from None
                columns = columns.split(",")
                yield version, columns, self._blocks(response, len(columns), len(events))
                return
            content = response.read()
            if code == 200 and kind == feature_rows.FEATURE_ROWS:
                try:
                    version, columns, values = feature_rows.decode(headers, content)
                except (KeyError, ValueError) as error:
                    raise self._unexpected("/peek", code, f"malformed feature rows: {error!r}") from None
                if len(values) != len(events):
                    raise self._unexpected(
                        "/peek", code, f"{len(values)} feature rows for {len(events)} events"
                    )
                yield version, columns, iter([values])
                return
            answer = self._json(content)
            if code in (409, 422) and isinstance(answer, dict) and "detail" in answer:
                raise HTTPException(code, answer["detail"])
            raise self._unexpected("/peek", code, answer)

    @contextmanager
    def _peek_call(self, events: list[LogEvent], accept: str) -> Iterator[tuple[int, dict[str, str], Any]]:
        if self._validated_events:
            body = feature_rows.encode_events([as_event(e) for e in events])
            with self._opened(
                "POST", "/peek", body, accept=accept, content_type=feature_rows.EVENTS.encode()
            ) as (code, headers, response):
                if code != 415:
                    yield code, headers, response
                    return
                response.read()
            log.warning(
                "the live stream at %s has no key and does not take validated events: sending JSON events, "
                "which it validates again",
                self.url,
            )
            self._validated_events = False
        with self._opened("POST", "/peek", {"events": [wire(e) for e in events]}, accept=accept) as called:
            yield called

    def _blocks(self, response, columns: int, expected: int) -> Iterator[np.ndarray]:
        reader, received = feature_rows.BlockReader(columns), 0
        try:
            for chunk in response.iter_stream():
                for block in reader.feed(chunk):
                    received += len(block)
                    yield block
        except feature_rows.Refusal as refused:
            if refused.status in (409, 422):
                raise HTTPException(refused.status, refused.detail) from None
            raise self._unexpected("/peek", refused.status, refused.detail) from None
        except ValueError as error:
            raise self._unexpected("/peek", 200, f"malformed feature blocks: {error!r}") from None
        if not reader.done or received != expected:
            raise self._unexpected("/peek", 200, f"{received} feature rows for {expected} events")

    def status(self) -> dict:
        code, _, content = self._call("GET", "/status")
        answer = self._json(content)
        if code != 200:
            raise self._unexpected("/status", code, answer)
        return answer

    def _unexpected(self, path: str, code: int, answer: Any) -> StreamUnavailable:
        log.error("stream service %s%s answered %d: %.500s", self.url, path, code, answer)
        detail = answer.get("detail") if isinstance(answer, dict) else answer
        return StreamUnavailable(f"the live stream at {self.url} answered {code} to {path}: {detail}")
