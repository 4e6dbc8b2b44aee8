"""An entity's retained events in the one order ``(ts, event_id)``: parallel lists, so a window's bounds are
two binary searches and its aggregates C-speed passes over slices.

Appending (the in-order case) is O(1); a late event is inserted at its place (a memmove). Events older
than the retention are dropped lazily: ``head`` moves past them, and the lists are compacted once the
dropped prefix is a quarter of them.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from itertools import pairwise


class Track:
    __slots__ = ("cols", "eid", "head", "ts")

    def __init__(self, types: str = ""):
        # Typed columns where the values allow (an array holds the number itself, a list a pointer to a
        # number object): times are int64, ``types`` gives each payload column's array typecode, or "O"
        # for a list (text, or a number that may be None).
        self.ts: array = array("q")
        self.eid: list[str] = []
        self.cols: tuple = tuple([] if code == "O" else array(code) for code in types)
        self.head = 0

    def __len__(self) -> int:
        return len(self.ts) - self.head

    def upper(self, t: int, eid: str) -> int:
        """Index just past the events before ``(t, eid)`` in the order (an equal id is not before)."""
        ts = self.ts
        hi = bisect_right(ts, t, self.head)
        ids = self.eid
        head = self.head
        while hi > head and ts[hi - 1] == t and ids[hi - 1] >= eid:
            hi -= 1
        return hi

    def since(self, bound: int, t: int, eid: str, in_order: bool) -> int:
        """How many retained events are at or after ``bound`` (µs) and before ``(t, eid)`` in the order;
        ``in_order``: ``(t, eid)`` is after every retained event."""
        hi = len(self.ts) if in_order else self.upper(t, eid)
        return hi - bisect_left(self.ts, bound, self.head, hi)

    def insert(self, at: int, t: int, eid: str, values: tuple) -> None:
        if at == len(self.ts):
            self.ts.append(t)
            self.eid.append(eid)
            for col, value in zip(self.cols, values, strict=True):
                col.append(value)
        else:
            self.ts.insert(at, t)
            self.eid.insert(at, eid)
            for col, value in zip(self.cols, values, strict=True):
                col.insert(at, value)

    def expire(self, bound: int) -> list[str]:
        """Drop the events older than ``bound``; returns their ids."""
        ts = self.ts
        head = self.head
        if head >= len(ts) or ts[head] >= bound:
            return []
        new_head = bisect_left(ts, bound, head)
        dropped = self.eid[head:new_head]
        self.head = new_head
        # compact once a quarter is dropped: an active entity's stale prefix would otherwise stay as
        # long as its retained events (memmoves of at most three items per item dropped)
        if new_head * 4 >= len(ts):
            del ts[:new_head]
            del self.eid[:new_head]
            for col in self.cols:
                del col[:new_head]
            self.head = 0
            self._shift(new_head)
        return dropped

    def _shift(self, n: int) -> None:
        """The lists lost their first ``n`` items (subclasses holding indexes move them)."""

    def load_rows(self, rows: list[list]) -> None:
        """Fill an empty track from ``rows`` (ts, eid, then the payload columns), rebuilding any running
        windows."""
        width = len(self.cols)
        if len(rows) != width + 2 or any(len(col) != len(rows[0]) for col in rows):
            raise ValueError("a track's columns have different lengths or the wrong count")
        if any(a > b for a, b in pairwise(rows[0])):
            raise ValueError("a track's times are not in order")
        self.ts = _owned(rows[0], array("q"))
        self.eid = list(rows[1])
        self.cols = tuple(_owned(col, empty) for empty, col in zip(self.cols, rows[2:], strict=True))
        self.head = 0
        self.restore_window()

    def add(self, at: int) -> None:
        """Count the event just inserted at ``at`` in running windows (none here)."""

    def restore_window(self) -> None:
        """Rebuild running windows from the lists (none here)."""

    def nbytes(self) -> int:
        """Approximate bytes of the columns (a list's pointers and number objects; shared strings not counted)."""
        n = len(self.ts)
        per_event = 8 + 8  # the time, the pointer to the event id
        for col in self.cols:
            per_event += 8 + 24 if col.__class__ is list else col.itemsize
        return 64 * (2 + len(self.cols)) + n * per_event


def _owned(values, empty):
    """``values`` as a column like ``empty`` (a list, or an array of its typecode): taken as they are when
    they already are one (the caller hands them over), else copied."""
    if values.__class__ is empty.__class__ and (empty.__class__ is list or values.typecode == empty.typecode):
        return values
    return list(values) if empty.__class__ is list else array(empty.typecode, values)
