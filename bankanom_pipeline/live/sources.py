"""Where ``bankanom stream`` reads events: the mock server's ``GET /stream`` (the embedded default) or a
Redis Stream read through a consumer group (scale-out, and the way a bank's own log shipper feeds it).

Both follow one contract (``Source``): ``resume`` once with the offset the live store last committed,
then ``fetch`` batches that never repeat an offset at or below it, and ``acknowledge`` an offset once the
store has committed it. Delivery is exactly-once because the store commits a batch's results and its offset
in one transaction: after a crash the source resumes from that offset and whatever it re-delivers at or
below it is skipped (and, for Redis, acknowledged). Lines a source could not deliver are never skipped
silently: each is logged and counted in ``stats()``. docs/live-sources.md.

httpx and redis are imported when a source is opened, not with this module.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_right
from typing import NamedTuple, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

log = logging.getLogger("bankanom.live.sources")

DEFAULT_MOCK_URL = "http://127.0.0.1:8000"
DEFAULT_REDIS_STREAM = "bankanom:logs"
DEFAULT_REDIS_GROUP = "bankanom-stream"
DEFAULT_REDIS_CONSUMER = "scorer"
DEFAULT_REDIS_FIELD = "line"  # the entry field holding the JSON line (a shipper's body/out field)


class Item(NamedTuple):
    offset: str  # the source's position of this event, strictly increasing
    line: bytes  # one JSON log line exactly as emitted
    emitted_at: float | None  # when the source emitted it (epoch s)


class Source(Protocol):
    name: str

    def resume(self, committed: str | None) -> None: ...

    def fetch(self, max_events: int, wait_s: float) -> list[Item]: ...

    def acknowledge(self, offset: str) -> None: ...

    def lag(self) -> tuple[int, float] | None: ...

    def stats(self) -> dict: ...

    def close(self) -> None: ...


class SourceError(ValueError):
    """A source spec or offset this module cannot use."""


def _mock_key(offset: str) -> tuple[int, int]:
    epoch, sep, seq = offset.partition(":")
    if not sep or not epoch.isdigit() or not seq.isdigit():
        raise SourceError(f"mock offset {offset!r} is not <epoch>:<seq>")
    return int(epoch), int(seq)


def redis_key(offset: str | bytes) -> tuple[int, int]:
    """A Redis Stream id ``<ms>-<seq>`` as integers, the order Redis gives its entries."""
    text = offset.decode() if isinstance(offset, bytes) else offset
    ms, sep, seq = text.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit():
        raise SourceError(f"Redis stream id {text!r} is not <ms>-<seq>")
    return int(ms), int(seq)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _Gaps:
    """Lines a source skipped because it could no longer deliver them: logged and counted, never silent."""

    def __init__(self, source: str):
        self.source = source
        self.gaps = 0
        self.missed = 0  # lines known to be skipped
        self.unknown = 0  # gaps whose size the source cannot know (the mock server restarted)
        self.last: dict | None = None

    def report(self, missed: int | None, **detail) -> None:
        self.gaps += 1
        if missed is None:
            self.unknown += 1
        else:
            self.missed += missed
        self.last = {"missed": missed, **detail, "at": time.time()}
        log.warning("%s source skipped lines it can no longer deliver: %s", self.source, self.last)

    def stats(self) -> dict:
        return {
            "gaps": self.gaps,
            "missed": self.missed,
            "gaps_of_unknown_size": self.unknown,
            "last_gap": self.last,
        }


class MockSource:
    """The mock server's ``GET /stream``: offsets ``<epoch>:<seq>``, long-polled.

    ``acknowledge`` has nothing to tell the server (it keeps no consumer state); the live store's offset is
    the only cursor."""

    name = "mock"

    def __init__(self, url: str = DEFAULT_MOCK_URL, request_timeout: float = 10.0):
        import httpx

        # httpx logs every request at INFO: a poll loop several times a second would drown the stream's log
        logging.getLogger("httpx").setLevel(max(logging.getLogger("httpx").level, logging.WARNING))
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=request_timeout)
        self._transport_errors = (httpx.TransportError,)
        self._after: str | None = None
        self._last_emitted_at: float | None = None
        self._head: str | None = None
        self._head_emitted_at: float | None = None
        self._gaps = _Gaps(self.name)
        self._unreachable_since: float | None = None

    def resume(self, committed: str | None) -> None:
        if committed is not None:
            _mock_key(committed)
        self._after = committed

    def fetch(self, max_events: int, wait_s: float) -> list[Item]:
        params: dict = {"limit": max(1, min(max_events, 10_000)), "wait": min(max(wait_s, 0.0), 30.0)}
        if self._after:
            params["after"] = self._after
        try:
            response = self._client.get("/stream", params=params, timeout=params["wait"] + 10)
        except self._transport_errors as error:
            self._unreachable(error, wait_s)
            return []
        if response.status_code != 200:
            # an offset the server refuses (malformed, or ahead of it) cannot be fixed by retrying: stop
            raise SourceError(f"{self.url}/stream answered {response.status_code}: {response.text[:500]}")
        if self._unreachable_since is not None:
            log.warning("mock server %s reachable again", self.url)
            self._unreachable_since = None
        import orjson

        body = orjson.loads(response.content)
        if body["gap"] is not None:
            gap = body["gap"]
            self._gaps.report(
                gap["missed"], reason=gap["reason"], after=gap["after"], resumed_after=gap["resumed_after"]
            )
        items = [Item(i["offset"], i["line"].encode(), i["emitted_at"]) for i in body["items"]]
        if items and self._after is not None and _mock_key(items[0].offset) <= _mock_key(self._after):
            raise SourceError(f"{self.url} re-sent offset {items[0].offset} after {self._after}")
        self._after = body["next"]
        if items:
            self._last_emitted_at = items[-1].emitted_at
        self._head, self._head_emitted_at = body["head"], body["head_emitted_at"]
        return items

    def _unreachable(self, error: Exception, wait_s: float) -> None:
        if self._unreachable_since is None:
            self._unreachable_since = time.time()
            log.warning("mock server %s unreachable (%s); retrying", self.url, error)
        time.sleep(min(max(wait_s, 0.05), 1.0))

    def acknowledge(self, offset: str) -> None:
        _mock_key(offset)

    def lag(self) -> tuple[int, float] | None:
        if self._head is None or self._after is None:
            return None
        (head_epoch, head_seq), (epoch, seq) = _mock_key(self._head), _mock_key(self._after)
        if head_epoch != epoch:
            return None
        events = max(0, head_seq - seq)
        seconds = 0.0
        if events and self._head_emitted_at is not None and self._last_emitted_at is not None:
            seconds = max(0.0, self._head_emitted_at - self._last_emitted_at)
        return events, seconds

    def stats(self) -> dict:
        return {
            "source": self.name,
            "url": self.url,
            "after": self._after,
            "unreachable_since": self._unreachable_since,
            **self._gaps.stats(),
        }

    def close(self) -> None:
        self._client.close()


class RedisSource:
    """A Redis Stream read with ``XREADGROUP`` in a consumer group, acknowledged with ``XACK``.

    The stream scorer is the single owner of the engine's state, so the group has one reading consumer:
    ``resume`` claims entries another consumer name left pending (a renamed or replaced scorer), acks those
    at or below the committed offset (committed by the store, not yet acked when the process died) and
    re-delivers the rest before anything new. Offsets are stream ids, ordered as ``(ms, seq)`` integers."""

    name = "redis"

    def __init__(
        self,
        url: str,
        stream: str = DEFAULT_REDIS_STREAM,
        group: str = DEFAULT_REDIS_GROUP,
        consumer: str = DEFAULT_REDIS_CONSUMER,
        field: str = DEFAULT_REDIS_FIELD,
    ):
        import redis

        self.url, self.stream, self.group, self.consumer = url, stream, group, consumer
        self.field = field.encode()
        self._redis = redis
        self._client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=40)
        self._committed: tuple[int, int] | None = None
        self._last: tuple[int, int] | None = None  # the newest id handed to the scorer (or committed)
        self._last_id: str | None = None
        self._ready = False
        self._redeliver: list[Item] = []  # pending entries above the committed offset, in id order
        self._unacked: list[bytes] = []  # fetched ids, in order, not yet acknowledged
        self._gaps = _Gaps(self.name)
        self._unreachable_since: float | None = None

    def resume(self, committed: str | None) -> None:
        self._committed = redis_key(committed) if committed is not None else None
        self._last, self._last_id = self._committed, committed
        self._ready = False

    def _setup(self) -> None:
        """Create the group if missing, take over entries pending on other consumer names, sort our pending
        entries into already committed (acked now) and to re-deliver."""
        start = self._last_id or "0"
        try:
            self._client.xgroup_create(self.stream, self.group, id=start, mkstream=True)
            log.info("created consumer group %s on %s at %s", self.group, self.stream, start)
        except self._redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        claim_from = "0-0"
        while True:
            claim_from, _claimed, _deleted = self._client.xautoclaim(
                self.stream, self.group, self.consumer, min_idle_time=0, start_id=claim_from, count=1000
            )
            if claim_from in (b"0-0", "0-0"):
                break
        self._redeliver = []
        after = "0"
        while True:
            reply = self._client.xreadgroup(self.group, self.consumer, {self.stream: after}, count=1000)
            entries = reply[0][1] if reply else []
            if not entries:
                break
            done = []
            for entry_id, fields in entries:
                key = redis_key(entry_id)
                if self._committed is not None and key <= self._committed:
                    done.append(entry_id)  # committed by the store, not acked before the process stopped
                elif self._last is not None and key <= self._last:
                    continue  # handed to the scorer by this process already (set up again after a reconnect)
                elif not fields:  # trimmed or deleted after it was delivered, before it was committed
                    self._gaps.report(1, reason="pending entry deleted", id=entry_id.decode())
                    done.append(entry_id)
                else:
                    self._redeliver.append(self._item(entry_id, fields))
            if done:
                self._client.xack(self.stream, self.group, *done)
            after = entries[-1][0]
        if self._redeliver:
            log.info(
                "re-delivering %d entries fetched but not committed before the restart", len(self._redeliver)
            )
        self._ready = True

    def _item(self, entry_id: bytes, fields: dict) -> Item:
        line = fields.get(self.field)
        if line is None:
            # not our producer's shape: hand the entry on as JSON so the scorer refuses it with its content
            import orjson

            line = orjson.dumps(
                {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
            )
        emitted = fields.get(b"emitted_at")
        try:
            emitted_at = float(emitted) if emitted is not None else None
        except ValueError:
            emitted_at = None
        if emitted_at is None:
            emitted_at = redis_key(entry_id)[0] / 1000  # the id's time is when Redis added it
        return Item(entry_id.decode(), line, emitted_at)

    def fetch(self, max_events: int, wait_s: float) -> list[Item]:
        try:
            if not self._ready:
                self._setup()
            if self._redeliver:
                items, self._redeliver = self._redeliver[:max_events], self._redeliver[max_events:]
                self._note_fetched(items)
                return items
            entries, group = self._read(max_events)
            if not entries and wait_s > 0:
                # wait for an entry past the group's position without taking it, then read it with the check
                delivered = group["last-delivered-id"] if group else b"0-0"
                self._client.xread({self.stream: delivered}, count=1, block=max(1, int(wait_s * 1000)))
                entries, _ = self._read(max_events)
        except (self._redis.ConnectionError, self._redis.TimeoutError) as error:
            if self._unreachable_since is None:
                self._unreachable_since = time.time()
                log.warning("Redis %s unreachable (%s); retrying", self.url, error)
            self._ready = False  # set up again on reconnect: the group may be gone if Redis restarted empty
            time.sleep(min(max(wait_s, 0.05), 1.0))
            return []
        except self._redis.ResponseError as error:
            if "NOGROUP" not in str(error) and "no such key" not in str(error):
                raise
            # the group or the stream was deleted (XGROUP DESTROY, DEL, a Redis restarted empty): create
            # the group again at the last id fetched, so nothing at or below it is delivered twice
            log.warning(
                "Redis stream %s or group %s is gone (%s); creating it again", self.stream, self.group, error
            )
            self._ready = False
            return []
        if self._unreachable_since is not None:
            log.warning("Redis %s reachable again", self.url)
            self._unreachable_since = None
        items, stale = [], []
        for entry_id, fields in entries:
            if self._last is not None and redis_key(entry_id) <= self._last:
                stale.append(entry_id)  # at or below what the store committed: scored already
            else:
                items.append(self._item(entry_id, fields))
        if stale:
            self._client.xack(self.stream, self.group, *stale)
        self._note_fetched(items)
        return items

    def _read(self, count: int) -> tuple[list, dict | None]:
        """The next ``count`` new entries, and whether MAXLEN trimmed any this group had not read yet.

        Redis numbers entries as they are added (``entries-added``) and counts what the group has read
        (``entries-read``); the oldest entry still held is number ``entries-added - length + 1``. If that is
        past ``entries-read + 1`` the read skips the difference: lost to trimming. The counters and the read
        run in one MULTI, so no trim can slip in between. Redis advances ``entries-read`` by the entries it
        delivers, not over the trimmed ones, so after counting a gap it is set right (XGROUP SETID
        ENTRIESREAD) and the group's lag stays true."""
        pipe = self._client.pipeline(transaction=True)
        pipe.xinfo_stream(self.stream)
        pipe.xinfo_groups(self.stream)
        pipe.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=max(1, count))
        info, groups, reply = pipe.execute()
        group = next((g for g in groups if _text(g["name"]) == self.group), None)
        entries = reply[0][1] if reply else []
        read = group.get("entries-read") if group else None
        if read is not None and entries:
            missed = info["entries-added"] - info["length"] - read
            if missed > 0:
                self._gaps.report(
                    missed, reason="trimmed before read (MAXLEN)", after=_text(group["last-delivered-id"])
                )
                if _text(info["max-deleted-entry-id"]) == "0-0":
                    # no XDEL ever: Redis counted only what it delivered (with deletions it re-estimates
                    # the counter itself, and a correction would count the gap twice)
                    self._client.xgroup_setid(
                        self.stream, self.group, entries[-1][0], entries_read=read + missed + len(entries)
                    )
        return entries, group

    def _note_fetched(self, items: list[Item]) -> None:
        if items:
            self._last, self._last_id = redis_key(items[-1].offset), items[-1].offset
            self._unacked.extend(item.offset.encode() for item in items)

    def _group(self) -> dict | None:
        return next(
            (g for g in self._client.xinfo_groups(self.stream) if _text(g["name"]) == self.group), None
        )

    def acknowledge(self, offset: str) -> None:
        upto = redis_key(offset)
        if self._committed is None or upto > self._committed:
            self._committed = upto
        count = bisect_right(self._unacked, upto, key=redis_key)  # fetched in id order
        if not count:
            return
        try:
            self._client.xack(self.stream, self.group, *self._unacked[:count])
        except (self._redis.ConnectionError, self._redis.TimeoutError) as error:
            # still pending in Redis: the next acknowledge or resume acks them (they are committed)
            log.warning("XACK to %s failed (%s); retried with the next acknowledge", self.url, error)
            return
        del self._unacked[:count]

    def lag(self) -> tuple[int, float] | None:
        try:
            group = self._group()
            head = self._client.xinfo_stream(self.stream)["last-generated-id"]
        except (self._redis.ConnectionError, self._redis.TimeoutError, self._redis.ResponseError):
            return None
        if group is None or group.get("lag") is None:
            return None
        events = int(group["lag"]) + len(self._redeliver)
        seconds = 0.0
        if events and self._last is not None:
            seconds = max(0.0, (redis_key(head)[0] - self._last[0]) / 1000)
        return events, seconds

    def stats(self) -> dict:
        return {
            "source": self.name,
            "url": self.url,
            "stream": self.stream,
            "group": self.group,
            "consumer": self.consumer,
            "after": self._last_id,
            "unacked": len(self._unacked),
            "unreachable_since": self._unreachable_since,
            **self._gaps.stats(),
        }

    def close(self) -> None:
        self._client.close()


def open_source(spec: str) -> Source | None:
    """``mock:<url>``, ``redis://host:port/db[?stream=&group=&consumer=&field=]`` (or ``rediss://``), or ``none``
    (no source: only events posted to the API)."""
    if spec == "none":
        return None
    if spec.startswith("mock:"):
        url = spec.removeprefix("mock:") or DEFAULT_MOCK_URL
        if not url.startswith(("http://", "https://")):
            raise SourceError(f"source {spec!r}: expected mock:http://host:port")
        return MockSource(url)
    if spec.startswith(("redis://", "rediss://")):
        parts = urlsplit(spec)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = set(query) - {"stream", "group", "consumer", "field"}
        if unknown:
            raise SourceError(
                f"source {spec!r}: unknown option(s) {sorted(unknown)} (stream, group, consumer, field)"
            )
        if any(not value for value in query.values()):
            raise SourceError(f"source {spec!r}: an empty stream, group, consumer or field name")
        return RedisSource(
            urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            stream=query.get("stream", DEFAULT_REDIS_STREAM),
            group=query.get("group", DEFAULT_REDIS_GROUP),
            consumer=query.get("consumer", DEFAULT_REDIS_CONSUMER),
            field=query.get("field", DEFAULT_REDIS_FIELD),
        )
    raise SourceError(f"unknown source {spec!r}: use mock:http://host:port, redis://host:port/db or none")
