"""The API's async calls to the live stream (``bankanom_api/stream.py``): a request waiting for the stream
holds no thread, so more requests than the thread pool has threads wait on it at once and none waits
for another; a stream that takes the request and breaks the connection without answering is a 503
saying so; the stream's client belongs to the app's event loop and closes with it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import anyio
import httpx
import pytest

from tests import online_world
from tests.api_server import api_client
from tests.online_world import HI, INGEST, KEY, STREAM_KEY, UNLIMITED, H, client

# more than the thread pool FastAPI runs plain ``def`` routes in (anyio's default: 40 threads)
IN_FLIGHT = 48


@pytest.fixture(scope="module")
def world():
    return online_world.built()


class Gate:
    """A proxy in front of the real stream service that holds every ``/peek`` until ``IN_FLIGHT`` of
    them wait at once, then forwards them all; one that is still held after ``patience`` seconds is
    answered 504."""

    def __init__(self, stream_url: str, patience: float):
        self.stream_url, self.patience = stream_url, patience
        self.held = self.most_held = 0
        self.full: asyncio.Event | None = None

    async def __call__(self, scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.full = self.full or asyncio.Event()
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        if self.held >= IN_FLIGHT:
            self.full.set()
        try:
            await asyncio.wait_for(self.full.wait(), self.patience)
        except TimeoutError:
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b"held too long"})
            return
        finally:
            self.held -= 1
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.lower() != b"host"}
        async with httpx.AsyncClient() as forward:
            answer = await forward.post(self.stream_url + scope["path"], content=body, headers=headers)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status_code,
                "headers": [(k.encode(), v.encode()) for k, v in answer.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": answer.content})


def test_more_predicts_than_threads_wait_on_the_stream_at_once_and_all_are_answered(tmp_path, world):
    first, second, *_ = world
    with client(tmp_path, models=True) as direct:
        direct.post("/events", json={"events": first}, headers=HI).raise_for_status()
        stream_url = direct.app.state.settings.stream_url
        expected = {
            e["event_id"]: direct.post("/predict", json={"events": [e]}, headers=H).json()["predictions"][0]
            for e in second[:IN_FLIGHT]
        }
        gate = Gate(stream_url, patience=20)
        gate_url, stop = online_world.serve(gate)
        settings = {
            "rate_limit": UNLIMITED,
            "stream_url": gate_url,
            "stream_key": STREAM_KEY,
            "live_dir": tmp_path / "live",
        }
        try:
            with api_client(tmp_path, KEY, **settings) as app:

                def one(event: dict) -> httpx.Response:
                    return app.post("/predict", json={"events": [event]}, headers=H)

                with ThreadPoolExecutor(IN_FLIGHT) as callers:
                    answers = list(callers.map(one, second[:IN_FLIGHT]))
        finally:
            stop()
    # a plain def route would hold a thread per waiting request: 40 at most, and the gate would never open
    assert gate.most_held == IN_FLIGHT
    for answer in answers:
        assert answer.status_code == 200, answer.text
        prediction = answer.json()["predictions"][0]
        assert prediction == expected[prediction["event_id"]]


class Breaker:
    """Takes each connection, reads what is sent, and closes it without answering: a stream that stops
    or crashes mid-request."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.taken = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            with connection:
                connection.settimeout(2)
                with contextlib.suppress(OSError):
                    connection.recv(65536)
                self.taken += 1

    def close(self) -> None:
        self.listener.close()


def test_a_stream_that_breaks_the_connection_mid_request_is_a_503_saying_so(tmp_path, world):
    first, *_ = world
    shutil.copytree(online_world.built()[3], tmp_path / "models")
    breaker = Breaker()
    settings = {"ingest_keys": [INGEST], "stream_url": breaker.url, "live_dir": tmp_path / "live"}
    try:
        with api_client(tmp_path, KEY, **settings) as app:
            for path, headers, route in (("/predict", H, "/peek"), ("/events", HI, "/ingest")):
                response = app.post(path, json={"events": first[:1]}, headers=headers)
                assert response.status_code == 503, response.text
                assert response.json()["detail"].startswith(
                    f"the live stream at {breaker.url} closed the connection without answering {route}"
                )
            stream = app.get("/ready", headers=H).json()["stream"]
            assert stream["reachable"] is False and "without answering /status" in stream["error"]
            # the rest serves: the batch-only scoring needs no stream
            assert app.post(
                "/predict", json={"events": first[:1]}, params={"context": "false"}, headers=H
            ).is_success
    finally:
        breaker.close()
    assert breaker.taken >= 3


def test_the_client_reuses_its_connections_and_drops_those_of_a_restarted_stream():
    from bankanom_api.stream import StreamClient

    opened: list[int] = []

    async def status(scope, receive, send) -> None:  # a stream's /status, counting its connections
        opened.append(scope["client"][1])  # the caller's port: one per connection
        body = b'{"events": 0}'
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    port = online_world.free_port()
    url, stop = online_world.serve(status, port)

    async def calls(stream: StreamClient, n: int) -> list[dict]:
        return list(await asyncio.gather(*(stream.status() for _ in range(n))))

    async def scenario() -> None:
        stream = StreamClient(url, None, timeout=5)
        assert await calls(stream, 40) == [{"events": 0}] * 40
        assert len(set(opened)) <= 40 and len(stream._idle) <= 16
        before = len(set(opened))
        for _ in range(20):  # one at a time: one idle connection, reused
            await stream.status()
        assert len(set(opened)) == before
        nonlocal stop
        stop()  # the stream stops (its idle connections closed) and starts again on the same port
        _, stop = online_world.serve(status, port)
        assert await stream.status() == {"events": 0}
        assert len(set(opened)) == before + 1 and stream._idle
        await stream.aclose()
        assert stream._idle == []

    try:
        anyio.run(scenario)
    finally:
        stop()


def test_the_client_holds_at_most_max_connections_calls_at_once_and_a_call_waits_at_most_the_timeout():
    from bankanom_api.stream import StreamClient, StreamUnavailable

    at_once = {"now": 0, "most": 0}

    async def slow_status(scope, receive, send) -> None:
        at_once["now"] += 1
        at_once["most"] = max(at_once["most"], at_once["now"])
        await asyncio.sleep(0.5)
        at_once["now"] -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    url, stop = online_world.serve(slow_status)

    async def scenario() -> None:
        stream = StreamClient(url, None, timeout=5, max_connections=2)
        assert await asyncio.gather(*(stream.status() for _ in range(5))) == [{}] * 5
        assert at_once["most"] == 2
        hurried = StreamClient(url, None, timeout=0.8, max_connections=1)
        answers = await asyncio.gather(*(hurried.status() for _ in range(3)), return_exceptions=True)
        # answered after 0.5 and 1.0 s; the third would wait 1.0 s for its turn: refused at 0.8 s
        assert answers[0] == {} and isinstance(answers[2], StreamUnavailable)
        assert answers[2].status_code == 503 and "did not answer in time" in answers[2].detail
        await stream.aclose()
        await hurried.aclose()

    try:
        anyio.run(scenario)
    finally:
        stop()
