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

    def __init__(self, types: str):
        super().__init__(types)
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
        self.errors = self.warns = 0
        self.ips, self.rts, self.ext = {}, [], [None] * len(GAUGES)
        ts = self.ts
        if len(ts) > self.head:
            # only the minute's events are counted (those before it would be added and taken out again)
            self.bound = ts[-1] - 60_000_000
            self.lo = bisect_left(ts, self.bound, self.head)
            for i in range(self.lo, len(ts)):
                self.add(i)
        else:
            self.lo = self.head
            self.bound = -(2**62)


class Window:
    """One trailing window of a track as running aggregates: sums of some columns and, for others, the
    count of each value (distinct counts and shares). Covers the track's events at ``lo:``.

    A running float sum that adds and subtracts keeps the rounding of every value that ever passed
    through it, which after a large value has left can dwarf what the window holds. So a sum is kept
    running only while every value in the window is a whole number (then it is exact below 2**53); a
    window holding another value is summed from its slice (``total``)."""

    __slots__ = ("bound", "counter_cols", "counters", "fractional", "lo", "span", "sum_cols", "sums")

    def __init__(self, span: int, sum_cols: tuple[int, ...], counter_cols: tuple[int, ...]):
        self.span = span
        self.sum_cols = sum_cols
        self.counter_cols = counter_cols
        self.lo = 0
        self.bound = -(2**62)
        self.sums = [0] * len(sum_cols)
        self.fractional = [0] * len(sum_cols)  # values in the window that are not whole numbers
        self.counters: list[dict] = [{} for _ in counter_cols]

    def total(self, track: Track, i: int) -> float:
        """The window's sum of its ``i``-th summed column."""
        if self.fractional[i]:
            return sum(track.cols[self.sum_cols[i]][self.lo :])
        return self.sums[i]

    def advance(self, track: Track, bound: int) -> None:
        self.bound = bound
        lo = self.lo
        ts = track.ts
        end = bisect_left(ts, bound, lo)
        if end == lo:
            return
        cols = track.cols
        if end == len(ts):
            # empty: exact zeros
            self.sums = [0] * len(self.sum_cols)
            self.fractional = [0] * len(self.sum_cols)
            self.counters = [{} for _ in self.counter_cols]
        else:
            sums = self.sums
            fractional = self.fractional
            for i, k in enumerate(self.sum_cols):
                leaving = cols[k][lo:end]
                sums[i] -= sum(leaving)
                if fractional[i]:
                    fractional[i] -= sum(1 for v in leaving if v.__class__ is float and not v.is_integer())
                    if not fractional[i]:
                        # whole numbers only again: restart the running sum exactly from them
                        sums[i] = sum(cols[k][end:])
            for counter, k in zip(self.counters, self.counter_cols, strict=True):
                for v in cols[k][lo:end]:
                    left = counter[v] - 1
                    if left:
                        counter[v] = left
                    else:
                        del counter[v]
        self.lo = end

    def add(self, track: Track, at: int) -> None:
        if track.ts[at] < self.bound:
            self.lo += 1
            return
        cols = track.cols
        if self.sum_cols:
            sums = self.sums
            for i, k in enumerate(self.sum_cols):
                v = cols[k][at]
                sums[i] += v
                if v.__class__ is float and not v.is_integer():
                    self.fractional[i] += 1
        if self.counter_cols:
            for counter, k in zip(self.counters, self.counter_cols):  # noqa: B905 - same length
                v = cols[k][at]
                counter[v] = counter.get(v, 0) + 1

    def reset(self, track: Track) -> None:
        """Rebuild from the lists: the window of the track's newest event."""
        self.sums = [0] * len(self.sum_cols)
        self.fractional = [0] * len(self.sum_cols)
        self.counters = [{} for _ in self.counter_cols]
        ts = track.ts
        if len(ts) > track.head:
            # only the window's events are counted (those before it would be added and taken out again)
            self.bound = ts[-1] - self.span
            self.lo = bisect_left(ts, self.bound, track.head)
            for i in range(self.lo, len(ts)):
                self.add(track, i)
        else:
            self.lo = track.head
            self.bound = -(2**62)


# Below this many retained events an entity's windows are summed from slices: most entities (a session,
# a customer's address) only ever hold a few events, and building and sliding running windows for them
# costs more than the slices do.
RUNNING_FROM = 32


class WindowedTrack(Track):
    """A track with running trailing windows (``Window``) for in-order ingest, built once the track holds
    ``RUNNING_FROM`` events (``windows`` is None until then)."""

    __slots__ = ("spec", "windows")

    def __init__(self, types: str, spec: tuple[tuple[int, tuple[int, ...], tuple[int, ...]], ...]):
        super().__init__(types)
        self.spec = spec
        self.windows: tuple[Window, ...] | None = None

    def slide(self, t: int) -> tuple[Window, ...]:
        """The windows, each advanced to end at ``t``."""
        ts = self.ts
        n = len(ts)
        for w in self.windows:
            bound = t - w.span
            lo = w.lo
            if lo < n and ts[lo] < bound:
                w.advance(self, bound)
            else:
                w.bound = bound
        return self.windows

    def add(self, at: int) -> None:
        windows = self.windows
        if windows is None:
            if len(self.ts) - self.head >= RUNNING_FROM:
                self.restore_window()
            return
        for w in windows:
            w.add(self, at)

    def expire(self, bound: int) -> list[str]:
        if self.windows is not None:
            for w in self.windows:
                if bound > w.bound:
                    w.advance(self, bound)
        return super().expire(bound)

    def _shift(self, n: int) -> None:
        if self.windows is not None:
            for w in self.windows:
                w.lo -= n

    def restore_window(self) -> None:
        if len(self.ts) - self.head < RUNNING_FROM:
            self.windows = None
            return
        self.windows = tuple(Window(*s) for s in self.spec)
        for w in self.windows:
            w.reset(self)
