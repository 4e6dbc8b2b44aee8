"""Writes per HTTP exchange on the /predict path (issue 24's paced p99): the API's call to the stream
reaches the socket in one write (``bankanom_api/stream.py``), and a server's answer's head leaves with
its body (``bankanom_pipeline/http_protocol.py``, the API's and the stream's uvicorn protocol).
Each write can wake the peer's process: on two virtual cores every wake-up costs CPU the API's event
loop needs at 300 requests a second."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bankanom_pipeline.http_protocol import CoalescingHttpToolsProtocol
from tests import online_world


class CountingTransport:
    """A transport recording the size of every write it passes on."""

    def __init__(self, transport, writes: list[int]):
        self._transport, self.writes = transport, writes

    def write(self, data) -> None:
        self.writes.append(len(data))
        self._transport.write(data)

    def __getattr__(self, name):
        return getattr(self._transport, name)


async def echo(scope, receive, send) -> None:
    """Answers a request's body back in three parts (``more_body``), or a short JSON on a GET."""
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    if scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})  # chunked
    third = len(body) // 3
    for part in (body[:third], body[third : 2 * third]):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": body[2 * third :]})


def test_a_calls_request_reaches_the_stream_in_one_write():
    from bankanom_api.stream import StreamClient

    received: list[bytes] = []

    async def ingest(scope, receive, send) -> None:  # a stream's /ingest, keeping what it was sent
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        received.append(body)
        answer = b'{"ingested": %d}' % len(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    url, stop = online_world.serve(ingest, http="httptools")
    writes: list[int] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        connect = loop.create_connection

        async def counted(factory, *args, **kwargs):  # every connection's transport counts its writes
            def made():
                protocol = factory()
                real = protocol.connection_made
                protocol.connection_made = lambda transport: real(CountingTransport(transport, writes))
                return protocol

            transport, protocol = await connect(made, *args, **kwargs)
            return CountingTransport(transport, writes), protocol

        loop.create_connection = counted
        stream = StreamClient(url, None, timeout=5)
        events = [{"event_id": f"E{i}", "message": "x" * 50} for i in range(3)]
        for _ in range(10):
            assert await stream.ingest(events) == {"ingested": len(received[-1])}
        await stream.aclose()

    try:
        asyncio.run(scenario())
    finally:
        stop()
    assert len(received) == 10 and all(b'"E2"' in body for body in received)
    # head and body together: one write per call (httpcore's own backend wrote the head, the body and
    # the body's end apart)
    assert len(writes) == 10, writes
    assert min(writes) > max(map(len, received))


@pytest.mark.parametrize(
    "protocol, per_post, per_get", [(CoalescingHttpToolsProtocol, 3, 1), (HttpToolsProtocol, 4, 2)]
)
def test_an_answers_head_leaves_with_its_body(protocol, per_post, per_get):
    writes: list[int] = []

    class Counted(protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(CountingTransport(transport, writes))

    url, stop = online_world.serve(echo, http=Counted)
    try:
        with httpx.Client(base_url=url) as client:
            bodies = [bytes([65 + i]) * (100 + 70_000 * i) for i in range(3)]  # up to a 140 KB answer
            for body in bodies:
                answer = client.post("/", content=body)
                assert answer.status_code == 200 and answer.content == body
            assert client.get("/").json() == {}
    finally:
        stop()
    # uvicorn writes the head, then each part (the last with the chunked end) and, for the GET, the head
    # and the body apart; with the coalescing protocol the head leaves with the first part
    assert len(writes) == 3 * per_post + per_get, writes


def test_a_head_whose_body_comes_later_is_not_held_for_it():
    async def slow(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(1.0)
        await send({"type": "http.response.body", "body": b"late"})

    url, stop = online_world.serve(slow, http=CoalescingHttpToolsProtocol)
    try:
        with httpx.Client(base_url=url) as client:
            asked = time.perf_counter()
            with client.stream("GET", "/") as answer:
                head_after = time.perf_counter() - asked
                assert answer.status_code == 200 and answer.read() == b"late"
            body_after = time.perf_counter() - asked
    finally:
        stop()
    assert head_after < 0.5 <= 1.0 <= body_after


def test_a_held_head_is_sent_before_the_connection_closes():
    url, stop = online_world.serve(echo, http=CoalescingHttpToolsProtocol)
    try:
        with httpx.Client(base_url=url, headers={"connection": "close"}) as client:
            for size in (10, 200_000):
                answer = client.post("/", content=b"z" * size)
                assert answer.status_code == 200 and answer.content == b"z" * size
    finally:
        stop()
