"""The API's client of the stream scorer's internal service (``bankanom stream``): the one owner of the
online engine's state. ``POST /events`` is forwarded to its ``/ingest`` and ``POST /predict`` with
context to its ``/peek``, so every API worker reads and feeds the same state and none keeps a copy.

Awaited by the async routes that call the stream (``/predict``, ``/events``, ``/ready`` and the console's
event form): a request waiting for the stream holds no thread, so a queue of requests does not become
a queue of threads taking turns at the GIL. Keep-alive connections are httpcore's
``AsyncHTTPConnection`` (httpx's transport without its client layer: cookies, redirects, URL and header
models), kept in this client's own list of idle ones, not in httpcore's ``AsyncConnectionPool``: on one
event loop a request takes an idle connection or opens one, with no lock, whereas the pool matched
waiting requests to connections under anyio locks on every call (a micro-benchmark against a trivial
server, uvloop: 1.47 ms of client CPU per call at 16 in flight, 0.28 ms with the list; the thread-bound
sync pool 0.24 ms). The connections belong to the event loop that opened them (the app's). A short connect timeout: a stream
that is not running answers at once with a refused connection, one that hangs costs at most ``timeout``
seconds, and either way the route answers 503 naming the URL. ``/peek`` answers this client its
features as raw float64 rows (``live.feature_rows``), not JSON: no number is formatted or parsed. With
the stream's key this client sends ``/peek`` the events as validated here (the engine's fields), which
the stream does not validate again; without one, the events as JSON lines, which it validates.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

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


class _Loopback(asyncio.Protocol):
    """One TCP connection to the stream as httpcore's network stream, on the running event loop's own
    transport. httpcore writes a request's head, its body and the body's end as separate writes; this
    stream keeps them and sends them as one when the answer is first read. On a separate write each the
    stream's process is woken for the head alone and again for the body, and on a virtual machine's two
    cores each wake-up costs both processes CPU (the paced /predict's API CPU per request rose with
    them). It also awaits the loop's own futures under ``asyncio.timeout`` rather than anyio's cancel
    scopes (httpcore's default backend) on every read and write."""

    def __init__(self, loop: asyncio.AbstractEventLoop, httpcore):
        self._loop, self._httpcore = loop, httpcore
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []  # received, not yet read
        self._unsent: list[bytes] = []  # written, not yet sent
        self._eof = False
        self._lost: BaseException | None = None
        self._closed = False
        self._waiter: asyncio.Future | None = None  # a read waiting for data
        self._drained: asyncio.Future | None = None  # a send waiting for the transport to drain

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._wake()

    def eof_received(self) -> None:
        self._eof = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # httpcore.AsyncNetworkStream
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self._unsent:
            await self._send(timeout)
        if not self._chunks and not self._eof:
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                raise self._httpcore.ReadTimeout(f"no answer within {timeout} s") from None
            finally:
                self._waiter = None
        if self._chunks:
            data = self._chunks.pop(0)
            if len(data) > max_bytes:
                self._chunks.insert(0, data[max_bytes:])
                data = data[:max_bytes]
            return data
        if self._lost is not None:
            raise self._httpcore.ReadError(repr(self._lost))
        return b""  # the stream closed the connection

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._unsent.append(buffer)
            if sum(map(len, self._unsent)) > 65536:  # a large batch: under way while the rest is built
                await self._send(timeout)

    async def _send(self, timeout: float | None) -> None:
        data = b"".join(self._unsent)
        self._unsent.clear()
        if self._closed or self._transport is None or self._transport.is_closing():
            raise self._httpcore.WriteError("the connection to the stream is closed")
        self._transport.write(data)
        if self._drained is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._drained
            except TimeoutError:
                raise self._httpcore.WriteTimeout(f"not sent within {timeout} s") from None
        if self._lost is not None:
            raise self._httpcore.WriteError(repr(self._lost))

    async def aclose(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    async def start_tls(self, *args, **kwargs):
        raise NotImplementedError("the stream is called over plain HTTP on loopback")

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # httpcore's test of an idle connection: has the stream closed it?
            from httpcore._utils import is_socket_readable

            return self._eof or bool(self._chunks) or is_socket_readable(self._socket())
        if info == "socket":
            return self._socket()
        if info in ("client_addr", "server_addr"):
            sock = self._socket()
            if sock is None:
                return None
            return sock.getsockname() if info == "client_addr" else sock.getpeername()
        return None

    def _socket(self):
        return None if self._transport is None else self._transport.get_extra_info("socket")


class _LoopbackBackend:
    """httpcore's network backend (``AsyncHTTPConnection(network_backend=...)``) opening ``_Loopback``
    connections."""

    def __init__(self, httpcore):
        self._httpcore = httpcore

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        loop = asyncio.get_running_loop()
        stream = _Loopback(loop, self._httpcore)
        try:
            async with asyncio.timeout(timeout):
                transport, _ = await loop.create_connection(lambda: stream, host, port)
        except TimeoutError:
            raise self._httpcore.ConnectTimeout(f"{host}:{port} did not accept within {timeout} s") from None
        except OSError as error:
            raise self._httpcore.ConnectError(repr(error)) from None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return stream

    async def connect_unix_socket(self, *args, **kwargs):
        raise NotImplementedError("the stream is called over TCP")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class StreamClient:
    def __init__(
        self,
        url: str,
        key: str | None,
        timeout: float,
        connect_timeout: float = 1.0,
        max_connections: int = 64,
    ):
        import httpcore  # lazy: a heavy import the Dagster code location must not pay for

        self.url = url.rstrip("/")
        self._httpcore = httpcore
        self._origin = httpcore.URL(self.url).origin
        self._backend = _LoopbackBackend(httpcore)
        self._idle: list = []  # keep-alive connections, the most recently used last
        self._keep = 16  # at most this many idle ones are kept (the API's usual requests in flight)
        # at most this many calls at once (a flood of requests does not become a flood of connections to
        # the stream); a call waits at most ``timeout`` for its turn
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False
        self._headers = [(KEY_HEADER.encode(), key.encode())] if key else []
        # the stream takes validated events only from a holder of its key: a stream started without
        # one answers 415, and this client then sends JSON events (which it validates)
        self._validated_events = key is not None
        self._timeout = {"connect": connect_timeout, "read": timeout, "write": timeout}
        # what a call fails with when the stream is not there, and when it breaks the connection after
        # taking it (it stopped or crashed mid-request): both 503, each saying which
        self._down_errors = (
            httpcore.ConnectError,
            httpcore.UnsupportedProtocol,
            httpcore.ConnectionNotAvailable,
        )
        self._broken_errors = (httpcore.NetworkError, httpcore.ProtocolError)

    async def aclose(self) -> None:
        self._closed = True  # a connection still in use is closed when its request ends
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.aclose()

    async def _request(self, method: str, url: str, headers: list, content: bytes | None):
        """One exchange on an idle keep-alive connection, or a new one; the connection is kept for the
        next call when it can be reused. A connection the stream closed while it was idle is dropped
        before use (or, should it close in between, the call moves to a new connection once)."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._timeout["read"]):
                    await self._slots.acquire()
            except TimeoutError:
                raise self._httpcore.PoolTimeout("no free connection to the stream") from None
        else:
            await self._slots.acquire()  # free: returns at once
        try:
            return await self._exchange(method, url, headers, content)
        finally:
            self._slots.release()

    async def _exchange(self, method: str, url: str, headers: list, content: bytes | None):
        extensions = {"timeout": self._timeout}
        while True:
            connection = None
            while self._idle:
                connection = self._idle.pop()
                if not connection.has_expired():
                    break
                await connection.aclose()
                connection = None
            reused = connection is not None
            if connection is None:
                connection = self._httpcore.AsyncHTTPConnection(self._origin, network_backend=self._backend)
            done = False
            try:
                response = await connection.request(
                    method, url, headers=headers, content=content, extensions=extensions
                )
                done = True
            except self._httpcore.ConnectionNotAvailable:
                if reused:
                    continue
                raise
            finally:
                if done and not self._closed and connection.is_available() and len(self._idle) < self._keep:
                    self._idle.append(connection)
                else:
                    await connection.aclose()
            return response

    @property
    def down(self) -> str:
        return f"no live stream at {self.url}: start bankanom stream"

    async def _call(
        self,
        method: str,
        path: str,
        body: dict | bytes | None = None,
        accept: str | None = None,
        content_type: bytes = _JSON,
    ) -> tuple[int, dict[str, str], bytes]:
        """``body``: a dict sent as JSON, or bytes of ``content_type``."""
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
            response = await self._request(method, self.url + path, headers, body)
        except self._httpcore.TimeoutException:
            raise StreamUnavailable(f"the live stream at {self.url} did not answer in time") from None
        except self._down_errors as error:
            log.warning("stream service %s unreachable: %r", self.url, error)
            raise StreamUnavailable(self.down) from None
        except self._broken_errors as error:
            log.warning("stream service %s broke off %s %s: %r", self.url, method, path, error)
            raise StreamUnavailable(
                f"the live stream at {self.url} closed the connection without answering {path} "
                f"({type(error).__name__}): it stopped or restarted mid-request"
            ) from None
        if response.status in (401, 403):
            raise StreamUnavailable(
                f"the live stream at {self.url} refused this API's key: BANKANOM_STREAM_KEY must be the "
                "stream's"
            )
        answer_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
        return response.status, answer_headers, response.content

    @staticmethod
    def _json(content: bytes) -> Any:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            return content.decode("utf-8", "replace")

    async def ingest(self, events: list[dict]) -> dict:
        """The stream's ``/ingest`` answer: committed to the live store before it returns."""
        code, _, content = await self._call("POST", "/ingest", {"events": events})
        answer = self._json(content)
        if code != 200:
            raise self._unexpected("/ingest", code, answer)
        return answer

    async def peek(self, events: list[LogEvent]) -> dict:
        """``{"feature_set_version", "columns", "features"}``, the features one float64 row per event (NaN:
        no value); the stream's 409 (too late) and 422 (an event it refuses) are passed on with their
        detail."""
        accept = feature_rows.FEATURE_ROWS
        if self._validated_events:
            body = feature_rows.encode_events([as_event(e) for e in events])
            code, headers, content = await self._call(
                "POST", "/peek", body, accept=accept, content_type=feature_rows.EVENTS.encode()
            )
            if code == 415:
                log.warning(
                    "the live stream at %s has no key and does not take validated events: sending JSON "
                    "events, which it validates again",
                    self.url,
                )
                self._validated_events = False
        if not self._validated_events:
            body = {"events": [wire(e) for e in events]}
            code, headers, content = await self._call("POST", "/peek", body, accept=accept)
        if code == 200 and headers.get("content-type") == feature_rows.FEATURE_ROWS:
            try:
                version, columns, values = feature_rows.decode(headers, content)
            except (KeyError, ValueError) as error:
                raise self._unexpected("/peek", code, f"malformed feature rows: {error!r}") from None
            if len(values) != len(events):
                raise self._unexpected("/peek", code, f"{len(values)} feature rows for {len(events)} events")
            return {"feature_set_version": version, "columns": columns, "features": values}
        answer = self._json(content)
        if code in (409, 422) and isinstance(answer, dict) and "detail" in answer:
            raise HTTPException(code, answer["detail"])
        raise self._unexpected("/peek", code, answer)

    async def status(self) -> dict:
        code, _, content = await self._call("GET", "/status")
        answer = self._json(content)
        if code != 200:
            raise self._unexpected("/status", code, answer)
        return answer

    def _unexpected(self, path: str, code: int, answer: Any) -> StreamUnavailable:
        log.error("stream service %s%s answered %d: %.500s", self.url, path, code, answer)
        detail = answer.get("detail") if isinstance(answer, dict) else answer
        return StreamUnavailable(f"the live stream at {self.url} answered {code} to {path}: {detail}")
