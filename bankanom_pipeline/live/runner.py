"""The consumer loop: ``source.fetch`` → ``scorer.process`` (one commit, the offset with the results) →
``source.acknowledge``.

Memory stays bounded however far behind the scorer falls: the loop holds one fetched batch at a time (at
most ``max_events`` lines) and fetches the next only once that one is committed; the backlog waits in the
source (the mock server's buffer, the Redis Stream), never here. Each fetch waits at most ``wait_s``, so an
event is committed well within a second of its arrival at a quiet rate too.
"""

from __future__ import annotations

import logging
import threading
import time

from bankanom_pipeline.live.scorer import LiveScorer

log = logging.getLogger("bankanom.stream")


class Runner:
    """Runs the loop in a thread of its own until ``stop``; ``failure`` says why it stopped by itself."""

    def __init__(
        self,
        scorer: LiveScorer,
        source,
        max_events: int = 1000,
        wait_s: float = 0.2,
        status_every_s: float = 1.0,
    ):
        self.scorer, self.source = scorer, source
        self.max_events, self.wait_s, self.status_every_s = max_events, wait_s, status_every_s
        self.failure: str | None = None
        self.batches = 0
        self.fetched = 0
        self.fetch_s = self.fetch_max_s = 0.0  # seconds in fetches that returned lines
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_failure = None  # called (no arguments) when the loop stops on an error

    def start(self) -> None:
        self._thread = threading.Thread(target=self._guarded, name="bankanom-stream-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _guarded(self) -> None:
        try:
            self.run()
        except Exception as error:  # the engine may hold what the store does not: stop, restart restores
            self.failure = f"{type(error).__name__}: {error}"
            log.exception("the consumer loop stopped")
            if self.on_failure is not None:
                self.on_failure()

    def run(self) -> None:
        """The loop, in the calling thread, until ``stop``."""
        source, scorer = self.source, self.scorer
        committed = scorer.committed_offset(source.name)
        source.resume(committed)
        log.info("consuming %s from offset %s", source.name, committed)
        lag, lag_at = None, 0.0
        while not self._stop.is_set():
            asked = time.monotonic()
            items = source.fetch(self.max_events, self.wait_s)
            now = time.monotonic()
            if items:  # a fetch that found lines waiting: the source's own cost, not the wait for more
                self.fetch_s += now - asked
                self.fetch_max_s = max(self.fetch_max_s, now - asked)
            if now - lag_at >= self.status_every_s:
                lag, lag_at = source.lag(), now
                if not items:  # idle: the status (lag above all) is still refreshed
                    scorer.process([], source.name, lag)
            if not items:
                continue
            self.fetched += len(items)
            scorer.process(items, source.name, lag)
            source.acknowledge(items[-1].offset)
            self.batches += 1

    def describe(self) -> dict:
        stats = self.source.stats() if hasattr(self.source, "stats") else {}
        return {
            "source": self.source.name,
            "running": self.alive,
            "failure": self.failure,
            "batches": self.batches,
            "fetched": self.fetched,
            "fetch_s": round(self.fetch_s, 3),
            "fetch_max_s": round(self.fetch_max_s, 4),
            **{f"source_{k}" if k == "source" else k: v for k, v in stats.items()},
        }
