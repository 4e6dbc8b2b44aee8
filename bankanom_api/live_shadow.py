"""Which live events the batch snapshot holds (and so hides), and the live side's counts under a
request's filters, kept from request to request.

The shadow of a snapshot: the live store's rows in commit order (``seq``), each hidden when the
snapshot's ``scored_events`` holds its event, kept as runs ``[lo, hi]`` of consecutive hidden rows. It
is worked out once per snapshot (one join of the live rows with the snapshot's ids of the same days)
and then only for rows committed since. Delivery is in order, so the runs are few: typically one per
stretch of the day the batch has read.

The tallies: per set of filters, the number of visible live rows and the first and last of them in the
newest-first order, up to a ``seq``; a request adds what was committed since. Rows up to that ``seq``
never change visibility while the snapshot is the same, so only a new snapshot or the stream's pruning
(the oldest ``seq`` moves) starts a tally again. Without them each request counted every live row.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bankanom_api.state import Snapshot

log = logging.getLogger("bankanom_api")

INLINE_RUNS = 32  # up to this many runs are written into the query; more go to a temporary table
SMALL = 5_000  # new rows up to this many are looked up in the snapshot by id; more by their days' ids


def visible(con: sqlite3.Connection, runs: list[list[int]]) -> tuple[str, list[int]]:
    """The condition that a live row is not hidden, and its parameters: a few runs written out (a
    comparison or two per row), many in ``temp.hidden`` (an index lookup per row)."""
    if not runs:
        return "1", []
    if len(runs) <= INLINE_RUNS:
        return "NOT (" + " OR ".join(["seq BETWEEN ? AND ?"] * len(runs)) + ")", [b for r in runs for b in r]
    con.executemany("INSERT INTO temp.hidden (lo, hi) VALUES (?, ?)", runs)
    return (
        "coalesce((SELECT hi FROM temp.hidden WHERE lo <= events.seq ORDER BY lo DESC LIMIT 1), 0) < events.seq",
        [],
    )


@dataclass
class Shadow:
    identity: tuple[str, int]  # the snapshot's file and the live store's inode
    days: frozenset[str]  # the days the snapshot holds events of
    seq: int = 0  # rows up to this seq are accounted for
    runs: list[list[int]] = field(default_factory=list)
    extending: bool = False  # the last accounted row was hidden: the next hidden one extends its run


@dataclass(frozen=True)
class Tally:
    key: tuple  # (shadow identity, oldest seq of the store): a tally of another one is started again
    seq: int
    count: int
    first: tuple | None  # (ts, event_id) of the newest visible row, None when there is none
    last: tuple | None


class Shadows:
    """The shadow in use and the tallies, for one API process (its threads share them).

    A new snapshot's shadow of a full live day takes seconds to work out (every live row's id against
    the snapshot's). Meanwhile requests go on being answered from the previous snapshot and its shadow,
    which the live store completes as before (the merge rule holds for any published snapshot); a
    background thread builds the new one and swaps it in with its unfiltered tally ready. Only the first
    shadow of a process, or one after the store was replaced, is built in the request."""

    TALLIES = 256  # sets of filters remembered, least recently used dropped first

    def __init__(self, warm: Callable[[sqlite3.Connection, Snapshot, Shadow], None], reading):
        """``warm(con, snap, shadow)``: what to compute with a new shadow before it is swapped in;
        ``reading()``: a context manager giving a read-only store connection in a read transaction."""
        self._warm, self._reading = warm, reading
        self._lock = threading.Lock()
        self._shadow: Shadow | None = None
        self._snapshot: Snapshot | None = None
        self._building: tuple[str, int] | None = None
        self._tallies: OrderedDict[tuple, Tally] = OrderedDict()

    def settle(
        self, con: sqlite3.Connection, snap: Snapshot, identity: tuple[str, int]
    ) -> tuple[Snapshot, Shadow]:
        """The snapshot to serve and its shadow (a copy) brought up to the newest row ``con`` sees:
        ``snap`` once its shadow is built, the previous one until then."""
        newest = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        with self._lock:
            shadow, served = self._shadow, self._snapshot
            if shadow is not None and shadow.identity != identity:
                if (
                    shadow.identity[1] == identity[1]
                ):  # the same store: the previous snapshot serves meanwhile
                    self._build_later(snap, identity)
                    snap = served
                else:
                    shadow = None
            if shadow is None:
                shadow = _built(con, snap, identity, newest)
                self._shadow, self._snapshot = shadow, snap
            # a read that began before another request advanced the shadow sees fewer rows; the runs
            # cover those too (seq is never reused: the store only appends, and prunes from the oldest)
            if newest > shadow.seq:
                _account(con, snap, shadow, newest)
            return snap, Shadow(shadow.identity, shadow.days, shadow.seq, [list(r) for r in shadow.runs])

    def _build_later(self, snap: Snapshot, identity: tuple[str, int]) -> None:
        if self._building == identity:
            return
        self._building = identity
        threading.Thread(
            target=self._build, args=(snap, identity), name="bankanom-live-shadow", daemon=True
        ).start()

    def _build(self, snap: Snapshot, identity: tuple[str, int]) -> None:
        try:
            with self._reading() as con:
                newest = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
                shadow = _built(con, snap, identity, newest)
                self._warm(con, snap, shadow)
            with self._lock:
                self._shadow, self._snapshot = shadow, snap
        except Exception:  # the next request starts another build
            log.exception("could not work out which live events %s holds", identity[0])
        finally:
            with self._lock:
                if self._building == identity:
                    self._building = None

    def tally(
        self, con: sqlite3.Connection, key: tuple, filters: tuple, where: str, params: list, upto: int
    ) -> Tally:
        """Visible rows up to ``upto`` under ``where`` (the filters' SQL, ``visible`` included): counted
        from the last tally of the same filters on, or from the start."""
        with self._lock:
            known = self._tallies.get(filters)
        if known is None or known.key != key or known.seq > upto:
            known = Tally(key, 0, 0, None, None)
        if known.seq < upto:
            # a tally from the start spans the whole store: written ``+seq``, the bounds cannot be used
            # as a range of the table itself, so SQLite takes an index of the filters' (ts for
            # ``since``: the few thousand rows of the last seconds, not every row of the day)
            seq = "+seq" if known.seq == 0 else "seq"
            span = f"{where} AND {seq} > ? AND {seq} <= ?"
            bounds = [*params, known.seq, upto]
            (count,) = con.execute(f"SELECT count(*) FROM events WHERE {span}", bounds).fetchone()
            first, last = known.first, known.last
            if count:
                newest = con.execute(
                    f"SELECT ts, event_id FROM events WHERE {span} ORDER BY ts DESC, event_id LIMIT 1", bounds
                ).fetchone()
                oldest = con.execute(
                    f"SELECT ts, event_id FROM events WHERE {span} ORDER BY ts ASC, event_id DESC LIMIT 1",
                    bounds,
                ).fetchone()
                first = _newer(first, tuple(newest))
                last = _older(last, tuple(oldest))
            known = Tally(key, upto, known.count + count, first, last)
        with self._lock:
            kept = self._tallies.get(filters)
            if kept is None or kept.key != key or kept.seq <= known.seq:  # never go back to an older read's
                self._tallies[filters] = known
            self._tallies.move_to_end(filters)
            while len(self._tallies) > self.TALLIES:
                self._tallies.popitem(last=False)
        return known


def _newer(a: tuple | None, b: tuple) -> tuple:
    """The one first in the newest-first order (ts DESC, event_id ASC)."""
    return b if a is None or (-b[0], b[1]) < (-a[0], a[1]) else a


def _older(a: tuple | None, b: tuple) -> tuple:
    return b if a is None or (-b[0], b[1]) > (-a[0], a[1]) else a


def _built(con: sqlite3.Connection, snap: Snapshot, identity: tuple[str, int], newest: int) -> Shadow:
    days = frozenset(str(d) for (d,) in snap.query("SELECT DISTINCT partition_date FROM scored_events")[1])
    shadow = Shadow(identity, days)
    _account(con, snap, shadow, newest)
    return shadow


def _account(con: sqlite3.Connection, snap: Snapshot, shadow: Shadow, newest: int) -> None:
    """Classify the rows committed after ``shadow.seq`` up to ``newest`` and extend the runs."""
    span = [shadow.seq, newest]
    shadow.seq = newest
    seqs = np.fromiter(
        (r[0] for r in con.execute("SELECT seq FROM events WHERE seq > ? AND seq <= ? ORDER BY seq", span)),
        dtype=np.int64,
    )
    if not len(seqs):
        return
    hidden = np.isin(seqs, _held_seqs(con, snap, shadow.days, span, len(seqs)), assume_unique=True)
    runs = shadow.runs
    before = np.concatenate(([shadow.extending], hidden[:-1]))
    after = np.concatenate((hidden[1:], [False]))
    starts, ends = seqs[hidden & ~before], seqs[hidden & ~after]
    if hidden[0] and shadow.extending:  # the first new row continues the last run
        runs[-1][1] = int(ends[0])
        ends = ends[1:]
    runs.extend([int(lo), int(hi)] for lo, hi in zip(starts, ends, strict=True))
    shadow.extending = bool(hidden[-1])


def _held_seqs(
    con: sqlite3.Connection, snap: Snapshot, days: frozenset[str], span: list[int], n: int
) -> np.ndarray:
    """The seqs in ``span`` of live events the snapshot holds: few new rows (a request's worth) are
    looked up in the snapshot by id; many (a new snapshot) against the ids of the snapshot's days."""
    if not days or not snap.has("scored_events"):
        return np.empty(0, dtype=np.int64)
    rows = con.execute(
        "SELECT seq, event_id, partition_date FROM events WHERE seq > ? AND seq <= ?", span
    ).fetchall()
    candidates = [event_id for _, event_id, day in rows if day in days]
    if not candidates:
        return np.empty(0, dtype=np.int64)
    cursor = snap.con.cursor()
    try:
        if n <= SMALL:
            cursor.execute(
                "SELECT event_id FROM scored_events WHERE event_id IN (SELECT unnest(?::VARCHAR[]))",
                [candidates],
            )
        else:
            wanted = sorted(days & {day for _, _, day in rows})
            cursor.execute(
                "SELECT event_id FROM scored_events WHERE CAST(partition_date AS VARCHAR) IN "
                f"({', '.join('?' * len(wanted))})",
                wanted,
            )
        held = {event_id for (event_id,) in cursor.fetchall()}
    finally:
        cursor.close()
    return np.asarray(sorted(seq for seq, event_id, _ in rows if event_id in held), dtype=np.int64)
