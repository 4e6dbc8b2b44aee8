"""A service's trailing minute kept as running aggregates: the fast path of in-order ingest, where a busy
service's minute holds hundreds of events and recomputing its distinct addresses, p95 and maxima from the
slice for every event would cost that many steps each time.

The aggregates cover the events at indexes ``lo:`` of the track, the minute up to the service's newest
in-order event. ``advance`` slides the start forward (in-order events only move it forward); ``add``
counts an event inserted at an index, in order or late (a late event before the window only shifts
``lo``). Extremes are exact: a maximum is recomputed from the window only when the value leaving is it.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from bankanom_pipeline.online.tracks import Track

# payload columns of a service track
ERROR, WARN, IP, RT = 0, 1, 2, 3
GAUGES = (4, 5, 6, 7, 8, 9)  # timeout, error_rate, cache (a minimum), lag, rps, files
_IS_MIN = (False, False, True, False, False, False)


class ServiceTrack(Track):
    __slots__ = ("bound", "errors", "ext", "ips", "lo", "rts", "warns")

    def __init__(self, width: int):
        super().__init__(width)
        self.lo = 0
        self.bound = -(2**62)  # the window's start time; nothing before it is counted
        self.errors = 0
        self.warns = 0
        self.ips: dict[str, int] = {}
        self.rts: list[float] = []
        self.ext: list[float | None] = [None] * len(GAUGES)

    def advance(self, bound: int) -> None:
        """Start the window at ``bound`` (not earlier than its start now)."""
        self.bound = bound
        ts = self.ts
        lo = self.lo
        end = bisect_left(ts, bound, lo)
        if end == lo:
            return
        c = self.cols
        self.errors -= sum(c[ERROR][lo:end])
        self.warns -= sum(c[WARN][lo:end])
        ips = self.ips
        for ip in c[IP][lo:end]:
            if ip is not None:
                left = ips[ip] - 1
                if left:
                    ips[ip] = left
                else:
                    del ips[ip]
        rts = self.rts
        for v in c[RT][lo:end]:
            if v is not None:
                del rts[bisect_left(rts, v)]
        ext = self.ext
        for k, col in enumerate(GAUGES):
            current = ext[k]
            if current is not None and current in c[col][lo:end]:
                present = [v for v in c[col][end:] if v is not None]
                ext[k] = (min(present) if _IS_MIN[k] else max(present)) if present else None
        self.lo = end

    def add(self, at: int) -> None:
        """Count the event just inserted at index ``at``."""
        if self.ts[at] < self.bound:
            self.lo += 1
            return
        c = self.cols
        self.errors += c[ERROR][at]
        self.warns += c[WARN][at]
        ip = c[IP][at]
        if ip is not None:
            self.ips[ip] = self.ips.get(ip, 0) + 1
        rt = c[RT][at]
        if rt is not None:
            insort(self.rts, rt)
        ext = self.ext
        for k, col in enumerate(GAUGES):
            v = c[col][at]
            if v is not None:
                current = ext[k]
                if current is None or (v < current if _IS_MIN[k] else v > current):
                    ext[k] = v

    def expire(self, bound: int) -> list[str]:
        # no window starts before the retention's bound any more: slide this one there first, so the
        # events dropped are out of the aggregates and ``lo`` stays within the lists
        if bound > self.bound:
            self.advance(bound)
        return super().expire(bound)

    def _shift(self, n: int) -> None:
        self.lo -= n

    def restore_window(self) -> None:
        """Rebuild the aggregates from the lists (after a checkpoint is read): the window of the newest
        event."""
        self.lo = self.head
        self.bound = -(2**62)
        self.errors = self.warns = 0
        self.ips, self.rts, self.ext = {}, [], [None] * len(GAUGES)
        for i in range(self.head, len(self.ts)):
            self.add(i)
        if len(self.ts) > self.head:
            self.advance(self.ts[-1] - 60_000_000)
