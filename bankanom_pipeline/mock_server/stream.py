"""The mock server's live outputs beside its landing files: a bounded, sequence-numbered buffer that
``GET /stream`` serves to a consumer resuming from its last offset, and an optional Redis Stream publisher.

An offset is ``<epoch>:<seq>``: ``epoch`` is the server run's start in epoch milliseconds, ``seq`` counts
that run's lines from 1. A restarted server starts a new epoch, so an offset from an earlier run can never
be mistaken for a position in this one: its consumer restarts at the new run's first line and the answer
carries a ``gap`` saying so (the lines the old run emitted after that offset are in its landing files,
which the batch run loads; how many there were, this run cannot know).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("bankanom.mock_server.stream")

# ~670 bytes a line in memory (measured): 200,000 lines is ~135 MB, 5.5 h at the default 10 lines/s,
# 200 s at 1,000/s
DEFAULT_BUFFER_LINES = 200_000
# Redis keeps about this many entries (XADD MAXLEN ~): ~710 bytes each (MEMORY USAGE), ~355 MB; 14 h at
# the default rate, 8 min at 1,000/s
DEFAULT_REDIS_MAXLEN = 500_000
DEFAULT_REDIS_STREAM = "bankanom:logs"
FLUSH_BATCH = 5_000
RETRY_S = 2.0


class OffsetError(ValueError):
    """An offset that is malformed, or that is ahead of what this server run has emitted."""


class OffsetAhead(OffsetError):
    """An offset past this run's newest line: the consumer read from a different server or a bug."""


def parse_offset(text: str) -> tuple[int, int]:
    epoch, sep, seq = text.partition(":")
    if not sep or not epoch.isdigit() or not seq.isdigit():
        raise OffsetError(f"offset {text!r} is not <epoch>:<seq> (two non-negative integers)")
    return int(epoch), int(seq)


class StreamBuffer:
    """The last ``capacity`` emitted lines of this server run, numbered from 1, with their emit times.

    A ring indexed by ``seq % capacity``: appends and reads from any offset cost O(lines moved)."""

    def __init__(self, capacity: int = DEFAULT_BUFFER_LINES, epoch: int | None = None):
        if capacity < 1:
            raise ValueError(f"the stream buffer must hold at least one line, not {capacity}")
        self.capacity = capacity
        self.epoch = epoch if epoch is not None else time.time_ns() // 1_000_000
        self.head = 0  # seq of the newest line
        self.gaps_reported = 0
        self.lines_missed = 0  # counted where known: lines a consumer skipped because the buffer dropped them
        self._ring: list[tuple[float, str] | None] = [None] * capacity
        self._emitted_at = 0.0
        self._changed = threading.Condition()

    def offset(self, seq: int) -> str:
        return f"{self.epoch}:{seq}"

    @property
    def first(self) -> int:
        """The oldest seq still held (1 until the ring wraps)."""
        return max(1, self.head - self.capacity + 1)

    def append(self, lines: list[str], emitted_at: float) -> None:
        with self._changed:
            for line in lines:
                self.head += 1
                self._ring[self.head % self.capacity] = (emitted_at, line)
            self._emitted_at = emitted_at
            self._changed.notify_all()

    def read(self, after: str | None, limit: int, wait: float) -> dict:
        """Up to ``limit`` lines after ``after`` (None: from the oldest held), waiting up to ``wait`` seconds
        for the first one. ``next`` is the offset to send next time, also when no line came back."""
        gap: dict | None = None
        if after:
            epoch, seq = parse_offset(after)
            if epoch != self.epoch:
                gap = {"reason": "unknown_epoch", "after": after, "missed": None}
                seq = 0
            elif seq > self.head:
                raise OffsetAhead(
                    f"offset {after!r} is ahead of this run's newest line {self.offset(self.head)}"
                )
        else:
            seq = 0
        with self._changed:
            if self.head <= seq and wait > 0:
                self._changed.wait_for(lambda: self.head > seq, timeout=wait)
            first = self.first
            if seq + 1 < first:  # the ring wrapped past the consumer: the lines between are gone from here
                dropped = first - 1 - seq
                if gap is None:
                    gap = {"reason": "behind_buffer", "after": after, "missed": dropped}
                seq = first - 1
            end = min(self.head, seq + limit)
            items = []
            for n in range(seq + 1, end + 1):
                at, line = self._ring[n % self.capacity]  # type: ignore[misc]
                items.append({"offset": self.offset(n), "emitted_at": at, "line": line})
            if gap is not None:
                self.gaps_reported += 1
                self.lines_missed += gap["missed"] or 0
                gap["resumed_after"] = self.offset(seq)
                log.warning("stream consumer gap: %s", gap)
            return {
                "epoch": self.epoch,
                "head": self.offset(self.head),
                "head_emitted_at": self._emitted_at or None,
                "next": self.offset(end),
                "gap": gap,
                "items": items,
            }

    def status(self) -> dict:
        with self._changed:
            return {
                "epoch": self.epoch,
                "head": self.offset(self.head),
                "first": self.offset(self.first) if self.head else None,
                "buffered": self.head - self.first + 1 if self.head else 0,
                "buffer_capacity": self.capacity,
                "gaps_reported": self.gaps_reported,
                "lines_missed": self.lines_missed,
            }


class RedisPublisher:
    """XADDs each emitted line to a Redis Stream, trimmed to about ``maxlen`` entries (``MAXLEN ~``: Redis
    trims whole nodes, so the length may exceed ``maxlen`` by up to one node, 100 entries by default).

    When Redis is unreachable the lines wait in a backlog (at most ``maxlen``, oldest dropped first and
    counted in ``dropped``) and go out on the next successful call, in emit order."""

    def __init__(self, url: str, stream: str = DEFAULT_REDIS_STREAM, maxlen: int = DEFAULT_REDIS_MAXLEN):
        import redis

        if maxlen < 1:
            raise ValueError(f"the Redis stream's maxlen must be positive, not {maxlen}")
        self.url, self.stream, self.maxlen = url, stream, maxlen
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._errors = (redis.ConnectionError, redis.TimeoutError)
        self._backlog: list[tuple[str, float, str]] = []
        self.published = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._retry_at = 0.0

    def publish(self, lines: list[str], emitted_at: float, first_offset: str) -> None:
        """Queue ``lines`` (their mock offsets start at ``first_offset``) and send everything queued."""
        epoch, seq = parse_offset(first_offset)
        self._backlog.extend((line, emitted_at, f"{epoch}:{seq + i}") for i, line in enumerate(lines))
        if len(self._backlog) > self.maxlen:
            excess = len(self._backlog) - self.maxlen
            del self._backlog[:excess]
            self.dropped += excess
            log.warning("Redis backlog over %d lines: dropped the %d oldest", self.maxlen, excess)
        self.flush()

    def flush(self) -> None:
        if time.monotonic() < self._retry_at:  # a down Redis is retried every RETRY_S, not every tick
            return
        while self._backlog:
            batch = self._backlog[:FLUSH_BATCH]
            # MULTI/EXEC: a batch is added whole or not at all, so a retry cannot duplicate part of it (only
            # a connection lost after EXEC reached Redis can; the scorer refuses such a line as a duplicate)
            pipe = self._client.pipeline(transaction=True)
            for line, at, offset in batch:
                pipe.xadd(
                    self.stream,
                    {"line": line, "emitted_at": repr(at), "mock_offset": offset},
                    maxlen=self.maxlen,
                    approximate=True,
                )
            try:
                pipe.execute()
            except self._errors as error:
                if self.last_error is None:
                    log.warning(
                        "Redis %s unreachable, keeping %d lines: %s", self.url, len(self._backlog), error
                    )
                self.last_error = str(error)
                self._retry_at = time.monotonic() + RETRY_S
                return
            del self._backlog[: len(batch)]
            self.published += len(batch)
            if self.last_error is not None:
                log.warning("Redis %s reachable again", self.url)
                self.last_error = None

    def status(self) -> dict:
        return {
            "url": self.url,
            "stream": self.stream,
            "maxlen": self.maxlen,
            "published": self.published,
            "backlog": len(self._backlog),
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    def close(self) -> None:
        self._client.close()
