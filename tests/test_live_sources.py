"""The live sources: the mock server's GET /stream (offsets, long-poll, gaps, a new server run) and the
Redis Stream source against a real redis-server (consumer group, resume after a crash, MAXLEN retention and
the gap it causes), and the publisher the mock server feeds Redis with."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
import uvicorn
from fastapi.testclient import TestClient

from bankanom_pipeline import settings
from bankanom_pipeline.generator.config import load_config
from bankanom_pipeline.ingest.raw_logs import landing_files
from bankanom_pipeline.live.sources import (
    MockSource,
    RedisSource,
    SourceError,
    open_source,
    redis_key,
)
from bankanom_pipeline.mock_server.app import create_app
from bankanom_pipeline.mock_server.stream import RedisPublisher, StreamBuffer
from tests.api_server import free_port


def _lines(n: int, start: int = 0) -> list[str]:
    return [orjson.dumps({"event_id": f"e{i}", "n": i}).decode() for i in range(start, start + n)]


@pytest.fixture(scope="module")
def config():
    return load_config(settings.mock_config_path())


def _app(config, tmp_path: Path, buffer: int = 1000, **kwargs):
    return create_app(config, tmp_path / "landing" / "logs", stream_buffer=buffer, **kwargs)


def _stream(client: TestClient, **params) -> dict:
    response = client.get("/stream", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_stream_pages_through_numbered_lines_and_resumes_from_next(config, tmp_path):
    app = _app(config, tmp_path)
    buffer: StreamBuffer = app.state.emitter.buffer
    lines = _lines(25)
    buffer.append(lines[:12], 100.0)
    buffer.append(lines[12:], 101.0)
    with TestClient(app) as client:
        seen, after = [], None
        for _ in range(3):
            body = _stream(client, limit=10, **({"after": after} if after else {}))
            assert body["gap"] is None
            seen += body["items"]
            after = body["next"]
        assert [i["line"] for i in seen] == lines
        assert [i["offset"] for i in seen] == [f"{buffer.epoch}:{n}" for n in range(1, 26)]
        assert [i["emitted_at"] for i in seen] == [100.0] * 12 + [101.0] * 13
        assert body["head"] == after == f"{buffer.epoch}:25" and body["head_emitted_at"] == 101.0
        caught_up = _stream(client, after=after)
        assert caught_up["items"] == [] and caught_up["next"] == after and caught_up["gap"] is None
        assert client.get("/").json()["stream"]["buffered"] == 25


def test_stream_long_polls_until_a_line_is_emitted(config, tmp_path):
    app = _app(config, tmp_path)
    buffer = app.state.emitter.buffer
    with TestClient(app) as client:
        started = time.monotonic()
        assert _stream(client, wait=0.3)["items"] == []
        assert time.monotonic() - started >= 0.3, "an empty answer waits the whole wait"

        threading.Timer(0.4, buffer.append, (_lines(3), time.time())).start()
        started = time.monotonic()
        body = _stream(client, wait=10)
        took = time.monotonic() - started
        assert [i["offset"] for i in body["items"]] == [f"{buffer.epoch}:{n}" for n in (1, 2, 3)]
        assert 0.3 <= took < 5, f"answered {took:.2f} s after the request, not when the lines came"


def test_a_consumer_behind_the_buffer_gets_a_counted_gap(config, tmp_path):
    app = _app(config, tmp_path, buffer=10)
    buffer = app.state.emitter.buffer
    buffer.append(_lines(25), 1.0)
    with TestClient(app) as client:
        body = _stream(client, after=f"{buffer.epoch}:3", limit=100)
        assert body["gap"] == {
            "reason": "behind_buffer",
            "after": f"{buffer.epoch}:3",
            "missed": 12,  # lines 4..15 are gone from memory; the landing files have them
            "resumed_after": f"{buffer.epoch}:15",
        }
        assert [i["offset"] for i in body["items"]] == [f"{buffer.epoch}:{n}" for n in range(16, 26)]
        fresh = _stream(client, limit=100)  # no offset yet: from the oldest line held, also counted
        assert fresh["gap"]["missed"] == 15 and fresh["items"][0]["offset"] == f"{buffer.epoch}:16"
        assert _stream(client, after=body["next"])["gap"] is None
        stream = client.get("/").json()["stream"]
        assert (stream["gaps_reported"], stream["lines_missed"]) == (2, 27)
        assert stream["buffered"] == 10 and stream["first"] == f"{buffer.epoch}:16"


def test_an_offset_from_an_earlier_server_run_restarts_at_the_new_run_and_says_so(config, tmp_path):
    old = _app(config, tmp_path).state.emitter.buffer
    old.append(_lines(5), 1.0)
    time.sleep(0.002)  # epochs are milliseconds
    app = _app(config, tmp_path)
    new = app.state.emitter.buffer
    assert new.epoch > old.epoch
    new.append(_lines(3, start=100), 2.0)
    with TestClient(app) as client:
        body = _stream(client, after=old.offset(5))
        assert body["gap"]["reason"] == "unknown_epoch" and body["gap"]["missed"] is None
        assert [i["offset"] for i in body["items"]] == [new.offset(n) for n in (1, 2, 3)]
        assert client.get("/").json()["stream"]["gaps_reported"] == 1

        ahead = client.get("/stream", params={"after": new.offset(4)})
        assert ahead.status_code == 409 and "ahead" in ahead.json()["detail"][0]["msg"]
        for bad in ("12", "a:1", "1:-1", "1:2:3"):
            refused = client.get("/stream", params={"after": bad})
            assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["query", "after"], (
                bad
            )
        assert client.get("/stream", params={"limit": 0}).status_code == 422
        assert client.get("/stream", params={"wait": 31}).status_code == 422


def test_the_emitter_streams_exactly_the_lines_it_writes_to_the_landing_files(config, tmp_path):
    app = _app(config, tmp_path, buffer=100_000)
    emitter = app.state.emitter
    with TestClient(app) as client:
        client.post("/control", json={"action": "start", "logs_per_second": 400})
        deadline = time.monotonic() + 30
        while emitter.events_emitted < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
        client.post("/control", json={"action": "stop"})
        body = _stream(client, limit=10_000)
    files = [f for day in sorted((tmp_path / "landing" / "logs").iterdir()) for f in landing_files(day)]
    written = [line.decode() for f in files for line in f.read_bytes().splitlines()]
    assert len(written) == emitter.events_emitted >= 300
    assert [i["line"] for i in body["items"]] == written
    # in the events' own order, (timestamp, event_id), as the online engine orders them: none arrives late
    order = [(e["timestamp"], e["event_id"]) for e in map(orjson.loads, written)]
    assert order == sorted(order)


@contextmanager
def _served(app) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free port (a real HTTP server, without a process start)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def test_mock_source_resumes_after_the_committed_offset_and_reports_a_new_server_run(config, tmp_path):
    app = _app(config, tmp_path)
    buffer = app.state.emitter.buffer
    buffer.append(_lines(30), time.time() - 5)
    with _served(app) as url:
        source = open_source(f"mock:{url}")
        assert isinstance(source, MockSource) and source.name == "mock"
        source.resume(None)
        first = source.fetch(20, 0.1)
        assert [orjson.loads(i.line)["n"] for i in first] == list(range(20))
        assert source.lag() == (10, 0.0)  # same emit time for all: 10 lines, 0 s behind
        source.acknowledge(first[-1].offset)
        source.close()

        again = MockSource(url)  # a restart: resumes from what the store committed
        again.resume(buffer.offset(15))
        rest = again.fetch(100, 0.1)
        assert [orjson.loads(i.line)["n"] for i in rest] == list(range(15, 30))
        assert again.fetch(100, 0.05) == [] and again.lag() == (0, 0.0)
        assert again.stats()["gaps"] == 0

        stale = MockSource(url)
        stale.resume(f"{buffer.epoch - 1}:99")  # an offset from the previous mock-server run
        items = stale.fetch(100, 0.1)
        assert items[0].offset == buffer.offset(1) and len(items) == 30
        stats = stale.stats()
        assert (stats["gaps"], stats["gaps_of_unknown_size"]) == (1, 1)
        assert stats["last_gap"]["reason"] == "unknown_epoch"
        with pytest.raises(SourceError, match="ahead"):
            ahead = MockSource(url)
            ahead.resume(buffer.offset(31))
            ahead.fetch(10, 0)


def test_mock_source_waits_out_an_unreachable_server():
    source = MockSource(f"http://127.0.0.1:{free_port()}")
    source.resume(None)
    started = time.monotonic()
    assert source.fetch(10, 0.2) == []
    assert time.monotonic() - started >= 0.2
    assert source.stats()["unreachable_since"] is not None


def test_open_source_parses_the_spec():
    assert open_source("none") is None
    redis_source = open_source("redis://127.0.0.1:6399/2?stream=s1&group=g1&consumer=c1&field=msg")
    assert isinstance(redis_source, RedisSource)
    assert (redis_source.url, redis_source.stream, redis_source.group, redis_source.consumer) == (
        "redis://127.0.0.1:6399/2",
        "s1",
        "g1",
        "c1",
    )
    assert redis_source.field == b"msg"
    default = open_source("redis://localhost:6379/0")
    assert (default.stream, default.group) == ("bankanom:logs", "bankanom-stream")
    for bad in ("kafka://x", "mock:ftp://x", "redis://h:1/0?topic=x", "redis://h:1/0?stream="):
        with pytest.raises(SourceError):
            open_source(bad)
    assert redis_key("1700000000000-12") == (1700000000000, 12)
    assert redis_key("9-1") < redis_key("10-0")  # numeric, not string, order
    with pytest.raises(SourceError):
        redis_key("12")


# ---- Redis -------------------------------------------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (scripts/setup.sh apt-installs it)")
    from tests.servers import redis

    with redis(tmp_path / "redis.log") as url:
        yield url


def _client(url: str):
    import redis

    return redis.Redis.from_url(url)


def _publish(
    url: str, n: int, start: int = 0, maxlen: int = 1_000_000, stream: str = "bankanom:logs"
) -> None:
    publisher = RedisPublisher(url, stream, maxlen)
    publisher.publish(_lines(n, start), time.time(), "1:1")
    assert publisher.status()["backlog"] == 0
    publisher.close()


def _numbers(items) -> list[int]:
    return [orjson.loads(i.line)["n"] for i in items]


def test_redis_retention_keeps_about_maxlen_entries(redis_url):
    publisher = RedisPublisher(redis_url, "bankanom:logs", maxlen=1000)
    for start in range(0, 5000, 250):
        publisher.publish(_lines(250, start), time.time(), f"1:{start + 1}")
    assert publisher.status()["published"] == 5000
    client = _client(redis_url)
    length = client.xlen("bankanom:logs")
    # MAXLEN ~ trims whole radix-tree nodes (stream-node-max-entries, 100): never more than one node over
    assert 1000 <= length <= 1100
    newest = client.xrevrange("bankanom:logs", count=1)[0][1]
    assert orjson.loads(newest[b"line"])["n"] == 4999 and newest[b"mock_offset"] == b"1:5000"
    with pytest.raises(ValueError, match="positive"):
        RedisPublisher(redis_url, "x", maxlen=0)


def test_redis_source_delivers_exactly_once_across_a_crash(redis_url):
    _publish(redis_url, 100)
    first = open_source(f"{redis_url}?consumer=scorer")
    first.resume(None)
    got = first.fetch(30, 0.1) + first.fetch(30, 0.1)
    assert _numbers(got) == list(range(60))
    first.acknowledge(got[19].offset)  # the store committed 20 events, then the process was killed

    assert _client(redis_url).xpending("bankanom:logs", "bankanom-stream")["pending"] == 40
    # the store's commit of the next 20 landed, the process died before it acked them
    again = open_source(f"{redis_url}?consumer=scorer")
    again.resume(got[39].offset)
    rest = []
    while batch := again.fetch(25, 0.1):
        rest += batch
        again.acknowledge(batch[-1].offset)
    assert _numbers(rest) == list(range(40, 100)), "nothing committed is re-delivered, nothing skipped"
    assert _client(redis_url).xpending("bankanom:logs", "bankanom-stream")["pending"] == 0
    assert again.lag() == (0, 0.0)
    assert again.stats()["gaps"] == 0


def test_redis_source_takes_over_what_another_consumer_name_left_pending(redis_url):
    _publish(redis_url, 10)
    old = RedisSource(redis_url, consumer="old-host")
    old.resume(None)
    assert len(old.fetch(10, 0.1)) == 10  # fetched, never committed
    new = RedisSource(redis_url, consumer="new-host")
    new.resume(None)
    items = new.fetch(100, 0.1)
    assert _numbers(items) == list(range(10))
    new.acknowledge(items[-1].offset)
    assert _client(redis_url).xpending("bankanom:logs", "bankanom-stream")["pending"] == 0


def test_redis_source_long_polls_and_reports_lag(redis_url):
    source = RedisSource(redis_url)
    source.resume(None)
    assert source.fetch(10, 0.2) == []  # creates the stream and the group
    threading.Timer(0.3, _publish, (redis_url, 5)).start()
    started = time.monotonic()
    items = source.fetch(2, 10)
    assert _numbers(items) == [0, 1] and time.monotonic() - started < 5
    events, seconds = source.lag()
    assert events == 3 and seconds >= 0


def test_redis_entries_trimmed_before_they_were_read_are_counted_not_skipped_silently(redis_url):
    source = RedisSource(redis_url)
    source.resume(None)
    _publish(redis_url, 50, maxlen=200)
    got = source.fetch(10, 0.1)
    # the scorer falls behind: 2,000 more entries, Redis keeps ~200
    for start in range(50, 2050, 100):
        _publish(redis_url, 100, start=start, maxlen=200)
    while batch := source.fetch(500, 0.1):
        got += batch
    stats = source.stats()
    numbers = _numbers(got)
    assert numbers == sorted(set(numbers)) and numbers[:10] == list(range(10))
    assert stats["gaps"] == 1 and len(got) + stats["missed"] == 2050, stats
    assert source.lag() == (0, 0.0), "the group's counters are set right after the gap"
    _publish(redis_url, 5, start=2050, maxlen=200)
    assert _numbers(source.fetch(100, 0.1)) == list(range(2050, 2055))
    assert source.stats()["gaps"] == 1, "a gap is counted once"


def test_redis_source_waits_out_an_unreachable_server():
    source = RedisSource(f"redis://127.0.0.1:{free_port()}/0")
    source.resume(None)
    assert source.fetch(10, 0.1) == []
    assert source.stats()["unreachable_since"] is not None


def test_the_mock_server_publishes_what_it_writes_to_redis(config, tmp_path, redis_url):
    publisher = RedisPublisher(redis_url, "bankanom:logs", maxlen=100_000)
    app = _app(config, tmp_path, publisher=publisher)
    emitter = app.state.emitter
    with TestClient(app) as client:
        client.post("/control", json={"action": "start", "logs_per_second": 400})
        deadline = time.monotonic() + 30
        while emitter.events_emitted < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
        client.post("/control", json={"action": "stop"})
        status = client.get("/").json()
    assert status["redis"]["published"] == status["events_emitted"] >= 300
    source = RedisSource(redis_url)
    source.resume(None)
    items = []
    while batch := source.fetch(1000, 0.1):
        items += batch
    emitted = emitter.buffer.read(None, 10_000, 0)["items"]
    assert [i.line.decode() for i in items] == [i["line"] for i in emitted]
    assert [float(i.emitted_at) for i in items] == [i["emitted_at"] for i in emitted]


def test_redis_source_reads_a_shippers_field_and_hands_on_entries_without_it(redis_url):
    client = _client(redis_url)
    line = _lines(1)[0]
    client.xadd("syslog", {"msg": line})  # rsyslog omhiredis mode="stream" writes field msg by default
    client.xadd("syslog", {"other": "x"})
    source = open_source(f"{redis_url}?stream=syslog&field=msg")
    source.resume(None)
    first, second = source.fetch(10, 0.1)
    assert first.line == line.encode() and first.emitted_at == redis_key(first.offset)[0] / 1000
    assert orjson.loads(second.line) == {"other": "x"}  # the scorer refuses it as invalid, with the entry


def test_redis_source_recreates_a_deleted_group_after_the_last_id_it_fetched(redis_url):
    _publish(redis_url, 10)
    source = RedisSource(redis_url)
    source.resume(None)
    got = source.fetch(6, 0.1)
    source.acknowledge(got[-1].offset)
    _client(redis_url).xgroup_destroy("bankanom:logs", "bankanom-stream")
    assert source.fetch(100, 0.1) == []  # notices, and sets up again on the next fetch
    got += source.fetch(100, 0.1)
    assert _numbers(got) == list(range(10))
