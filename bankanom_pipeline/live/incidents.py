"""Live incidents: the batch grouping rules (incidents.yaml) applied event by event to the stream's flagged
events, with the batch's aggregation, severity, reporting and root cause (``build_incidents`` on each
touched group's events) and stable ids (``incident_id`` of the first event). Rules, and where live can
differ from batch: docs/live-incidents.md.

State is the open groups, and the closed ones a rare-template link may still reach: a group whose
newest event is more than the largest gap behind the newest flagged event can no longer be joined by an
in-order event, so it is closed; it is dropped from memory (its rows stay in the store) once no
template event still waiting for its entity group to close lies within the template gap of it.
``restore`` rebuilds those groups from the store's tables.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
from sortedcontainers import SortedList

from bankanom_pipeline.detection import rca
from bankanom_pipeline.detection.explain import normal_values
from bankanom_pipeline.detection.incident_ids import incident_id
from bankanom_pipeline.detection.incidents import (
    INCIDENT_COLUMNS,
    IncidentConfig,
    _reported,
    _severity,
    _summary,
    build_incidents,
    default_incident_config,
    link_key_values,
)
from bankanom_pipeline.detection.models import Detector
from bankanom_pipeline.detection.scoring import IF, deviations, explain
from bankanom_pipeline.online.schema import FEATURES

log = logging.getLogger("bankanom.stream")
_US_PER_MINUTE = 60_000_000
TEMPLATE_KIND = "service_template"

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
  incident_id TEXT PRIMARY KEY, partition_date TEXT NOT NULL,
  start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL, event_count INTEGER NOT NULL,
  services TEXT NOT NULL, users TEXT NOT NULL, ips TEXT NOT NULL,      -- JSON lists
  user_count INTEGER NOT NULL, ip_count INTEGER NOT NULL, max_score REAL NOT NULL, mean_score REAL NOT NULL,
  severity TEXT NOT NULL, reported INTEGER NOT NULL, origin_service TEXT, origin_entity TEXT,
  scenario_id TEXT, scenario_name TEXT, scenario_confidence REAL, scenario_alternatives TEXT,
  top_features TEXT, summary TEXT, status TEXT NOT NULL,
  first_event_id TEXT NOT NULL,
  merged_into TEXT,            -- set when merged into an older incident (then hidden)
  opened_at REAL NOT NULL,     -- the commit that first made it visible
  updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_end ON incidents(end_ts);
CREATE TABLE IF NOT EXISTS incident_events (
  incident_id TEXT NOT NULL, event_id TEXT NOT NULL PRIMARY KEY
);
CREATE INDEX IF NOT EXISTS incident_events_incident ON incident_events(incident_id);
CREATE TABLE IF NOT EXISTS flagged_features (   -- what grouping and RCA read, to rebuild after a restart
  event_id TEXT PRIMARY KEY, ts INTEGER NOT NULL, partition_date TEXT NOT NULL,
  source_service TEXT, user_id TEXT, ip_address TEXT, correlation_id TEXT, template TEXT,
  ensemble_score REAL NOT NULL,
  features BLOB NOT NULL       -- float64 little-endian, FEATURES order
);
"""
# the columns of a flagged event this module keeps, besides its features
_ROW = (
    "event_id",
    "ts",
    "partition_date",
    "source_service",
    "user_id",
    "ip_address",
    "correlation_id",
    "template",
    "ensemble_score",
)
_ROW_TYPES = {
    c: {"ts": pl.Int64, "partition_date": pl.Date, "ensemble_score": pl.Float64}.get(c, pl.String)
    for c in _ROW
}
_LISTS = ("services", "users", "ips")
_STORED = (*INCIDENT_COLUMNS, "first_event_id", "opened_at", "updated_at")
_UPSERT = (
    f"INSERT INTO incidents ({', '.join(_STORED)}) VALUES ({', '.join('?' * len(_STORED))}) "
    "ON CONFLICT(incident_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _STORED if c not in ("incident_id", "opened_at"))
)


class _Sets:
    """Union-find over event ids, with each set's size."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}

    def add(self, x: str) -> None:
        self.parent[x], self.size[x] = x, 1

    def find(self, x: str) -> str:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> tuple[str, str] | None:
        """``(root, absorbed root)``, or None when already one set."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return None
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size.pop(rb)
        return ra, rb

    def drop(self, members: Iterable[str]) -> None:
        """Forget a whole set."""
        for x in members:
            self.parent.pop(x, None)
            self.size.pop(x, None)


@dataclass
class _Stats:
    """A group's figures that only grow with its events, kept as they join: ``build_incidents``'
    aggregation of the group without re-reading it."""

    first: tuple  # (partition_date, ts, event_id) of the earliest event: the incident's day
    start: int
    end: int
    count: int
    score_max: float
    score_sum: float
    services: set
    users: set  # real users (not null, not ignored), as build_incidents counts them
    ips: set

    def absorb(self, other: _Stats) -> None:
        self.first = min(self.first, other.first)
        self.start, self.end = min(self.start, other.start), max(self.end, other.end)
        self.count += other.count
        self.score_max = max(self.score_max, other.score_max)
        self.score_sum += other.score_sum
        self.services |= other.services
        self.users |= other.users
        self.ips |= other.ips


@dataclass
class _Group:
    first: tuple[int, str]  # (ts, event_id) of the first event: of the id's event once it has an id
    members: list[str]
    newest: int
    stats: _Stats
    incident_id: str | None = None  # None until a commit made it visible
    computed_at: float = float("-inf")  # when build_incidents last ran on it
    cost: float = 0.0  # seconds its share of that build_incidents call took
    row: dict | None = None  # that call's row: the root-cause columns between two calls
    dirty: bool = False  # has events (or merges) its stored row does not reflect yet
    stale: bool = False  # its stored row's root-cause columns are older than its events
    new: list[str] = field(default_factory=list)  # members not yet written to incident_events
    passes: int = 0  # root-cause passes started on it: a background result applies to the newest only
    absorbed: list[str] = field(default_factory=list)  # visible incidents merged into it, not yet written
    # rare-template events of its entity group (still at most template_link_max_group events) waiting for
    # that group to close: only then is its final size known, and the template link decided
    pending: list[str] = field(default_factory=list)
    linkable: int = -(2**62)  # ts of its newest template event taken into the template index


class LiveIncidents:
    """Incremental incidents over the stream's flagged events; writes through ``update``'s callable."""

    SCHEMA = SCHEMA

    def __init__(
        self,
        config: IncidentConfig | None = None,
        catalogue: rca.Catalogue | None = None,
        *,
        large_group: int = 500,
        large_group_every_s: float = 5.0,
        rca_share: float = 0.05,
        background: bool = False,
    ):
        """A group of more than ``large_group`` events gets its figures (counts, span, entities, scores,
        severity, reporting, summary) from its running aggregates at every batch, and its root cause
        (``build_incidents`` on all its events, whose cost grows with the group) at most every
        ``large_group_every_s`` seconds, or every ``cost / rca_share`` seconds once its last pass took
        ``cost``: the passes of large groups take at most about ``rca_share`` of the stream's time.

        ``background``: those passes of large groups run in a thread of their own, one at a time, on
        the group's members when the pass starts, and their root cause joins the group's row at the
        first batch after the pass ends; a batch never waits for one (a pass of 200,000 events is
        ~1.5 s of CPU). The passes at close and at ``settle``, and those of groups up to
        ``large_group`` events, stay in the batch, so every final row is still batch's."""
        self.config = config or default_incident_config()
        self.catalogue = catalogue or rca.default_catalogue()
        self.large_group, self.large_group_every_s = large_group, large_group_every_s
        self.rca_share = rca_share
        self._ignored = {u.lower() for u in self.config.grouping.ignored_users}
        self._profiles = {p.id: p for p in self.catalogue.profiles}
        self._keys = link_key_values(self.config)
        self._gap_us = {kind: int(gap * _US_PER_MINUTE) for kind, _, gap in self._keys}
        self.hold_us = max(self._gap_us.values())
        self._small = self.config.grouping.template_link_max_group
        self._template_gap_us = self._gap_us.get(TEMPLATE_KIND, 0)
        entity_gap = max((g for k, g in self._gap_us.items() if k != TEMPLATE_KIND), default=0)
        # how far behind the newest flagged event a held group can still matter: an entity group of at
        # most template_link_max_group events spans at most (that - 1) entity gaps, so a template event
        # waiting for its group to close is at most hold + that span old, and a closed group's template
        # event within the template gap of it is kept (docs/live-incidents.md, "Rare-template link")
        self.keep_us = self.hold_us + (self._small - 1) * entity_gap + self._template_gap_us
        self._rca_s = 0.0  # seconds of root-cause passes since took_rca last read them
        self.background = background
        self._worker: threading.Thread | None = None
        self._jobs: list = []  # at most one: (group, passes, members, incident id, first event, detectors)
        self._done: list = []  # (group, passes, row, seconds) of finished background passes
        self._busy = False
        self._signal = threading.Condition()
        self.background_figures = {"passes": 0, "seconds": 0.0, "max_s": 0.0, "dropped": 0, "stale": 0}
        self._reset()

    def _reset(self) -> None:
        self._entity = _Sets()  # entity keys only: the template link's "small group" test
        self._final = _Sets()  # every link: the incidents
        self._groups: dict[str, _Group] = {}  # by root in _final
        self._rows: dict[str, tuple] = {}  # event_id -> _ROW values
        self._features: dict[str, np.ndarray] = {}
        self._index: dict[tuple[str, str], SortedList] = {}  # (kind, key) -> (ts, event_id)
        self._indexed: dict[str, list[tuple[str, str]]] = {}  # event_id -> its index entries
        self._template: dict[str, str] = {}  # event_id -> its rare-template key, for held events with one
        self._pending = SortedList()  # (ts, event_id) of the template events waiting (_Group.pending)
        self._attribution: dict[str, np.ndarray] = {}  # explain() per event, for _explained_by
        self._explained_by: tuple = ()
        self.watermark = 0  # newest flagged ts seen (µs)

    # -- the scorer's hook ---------------------------------------------------------------------------

    def update(
        self,
        flagged: pl.DataFrame,
        features: np.ndarray | None,
        detectors: dict[str, Detector],
        now: float,
    ) -> Callable[[sqlite3.Cursor], None]:
        """Group the batch's flagged events (columns: ``_ROW`` and the features, by name) and return the
        writes for the batch's commit. ``features``: the same features as a matrix in ``FEATURES`` order
        (taken from the frame's columns when None). Events already held are ignored (a re-delivery)."""
        if flagged.is_empty():
            return self._flush([], detectors, now)
        keep = np.array([str(e) not in self._rows for e in flagged["event_id"].to_list()], dtype=bool)
        fresh = flagged if keep.all() else flagged.filter(pl.Series(keep))
        if features is not None and not keep.all():
            features = np.asarray(features)[keep]
        frame = _normalise(fresh)
        matrix = (
            frame.select(FEATURES).to_numpy().astype(float)
            if features is None
            else np.asarray(features, dtype=float).reshape(frame.height, len(FEATURES))
        )
        order = np.lexsort((frame["event_id"].to_numpy(), frame["ts"].dt.epoch("us").to_numpy()))
        frame, matrix = frame[order], matrix[order]
        added = self._add(frame, matrix, link=True)
        if added:
            self.watermark = max(self.watermark, max(self._rows[e][1] for e in added))
        return self._flush(added, detectors, now)

    def settle(self, detectors: dict[str, Detector], now: float) -> Callable[[sqlite3.Cursor], None]:
        """The writes that bring every open incident's row up to date, throttled ones included (at
        shutdown, or when the stream has been idle)."""
        return self._flush([], detectors, now, force=True)

    def took_rca(self) -> float:
        """Seconds the root-cause passes (``build_incidents``) took since the last call."""
        took, self._rca_s = self._rca_s, 0.0
        return took

    def open_incidents(self) -> int:
        """Held groups an in-order flagged event may still join (not the closed ones held only for a
        template link)."""
        cutoff = self.watermark - self.hold_us
        return sum(1 for group in self._groups.values() if group.newest >= cutoff)

    def held_events(self) -> int:
        return len(self._rows)

    def waiting_template_events(self) -> int:
        """Rare-template events waiting for their entity group to close before they may link."""
        return len(self._pending)

    # -- restart -------------------------------------------------------------------------------------

    def restore(self, con: sqlite3.Connection, detectors: dict[str, Detector] | None = None) -> None:
        """Rebuild the held groups from the tables: the open ones and the closed ones a waiting template
        event may still reach (their ids, members, the entity links and the template events waiting or
        indexed); the first ``update`` recomputes those whose stored row lags its members and drops the
        closed ones no longer needed."""
        del detectors  # nothing is computed here; kept for the scorer's call
        self._reset()
        newest = con.execute("SELECT max(ts) FROM flagged_features").fetchone()[0]
        if newest is None:
            return
        self.watermark = newest
        open_rows = con.execute(
            "SELECT incident_id, first_event_id, event_count FROM incidents "
            "WHERE merged_into IS NULL AND end_ts >= ?",
            (newest - self.keep_us,),
        ).fetchall()
        if not open_rows:
            return
        ids = [r[0] for r in open_rows]
        members = con.execute(
            f"SELECT ie.incident_id, {', '.join('f.' + c for c in _ROW)}, f.features "
            "FROM incident_events ie JOIN flagged_features f USING (event_id) "
            f"WHERE ie.incident_id IN ({', '.join('?' * len(ids))}) ORDER BY f.ts, f.event_id",
            ids,
        ).fetchall()
        owner = {m[1]: m[0] for m in members}
        day = _ROW.index("partition_date")
        rows = [(*m[1 : 1 + day], dt.date.fromisoformat(m[1 + day]), *m[2 + day : -1]) for m in members]
        matrix = np.array([np.frombuffer(m[-1], dtype="<f8") for m in members]).reshape(-1, len(FEATURES))
        self._add(_frame(rows, matrix), matrix, link=False)
        by_id: dict[str, list[str]] = {}
        for event, iid in owner.items():
            by_id.setdefault(iid, []).append(event)
        for iid, first_event, count in open_rows:
            events = by_id.get(iid, [])
            if not events:
                continue
            for e in events[1:]:
                self._union(events[0], e, entity=False)
            group = self._groups[self._final.find(events[0])]
            group.incident_id = iid
            group.first = (
                (self._rows[first_event][1], first_event) if first_event in self._rows else group.first
            )
            group.new.clear()
            group.dirty = count != len(events)
        # template events of entity groups still small: waiting when their group is open, else decided
        # by the flush that closed it, so indexed (a store is written by flushes only)
        cutoff = self.watermark - self.hold_us
        for event, key in self._template.items():
            if self._entity.size[self._entity.find(event)] > self._small:
                continue
            ts, group = self._rows[event][1], self._groups[self._final.find(event)]
            if group.newest >= cutoff:
                group.pending.append(event)
                self._pending.add((ts, event))
            else:
                self._insert(TEMPLATE_KIND, key, ts, event)
                group.linkable = max(group.linkable, ts)

    # -- grouping ------------------------------------------------------------------------------------

    def _add(self, frame: pl.DataFrame, matrix: np.ndarray, link: bool) -> list[str]:
        """Hold the rows of ``frame`` (in (ts, event_id) order) and link each to what is held. Without
        ``link`` (restore) only the entity links are made and the template index filled."""
        if frame.height == 0:
            return []
        keys = frame.select(expr.alias(kind) for kind, expr, _ in self._keys)
        rows = frame.select(pl.col("ts").dt.epoch("us") if c == "ts" else pl.col(c) for c in _ROW).rows()
        key_rows = keys.rows()
        kinds = keys.columns
        added = []
        for i, row in enumerate(rows):
            event, ts = row[0], row[1]
            self._rows[event], self._features[event] = row, matrix[i]
            self._entity.add(event)
            self._final.add(event)
            self._groups[event] = _Group((ts, event), [event], ts, self._stats(row), new=[event], dirty=True)
            self._indexed[event] = []
            added.append(event)
            template_key = None
            for kind, key in zip(kinds, key_rows[i], strict=True):
                if key is None:
                    continue
                if kind == TEMPLATE_KIND:
                    template_key = key
                    continue
                for other in self._neighbours(kind, key, ts, event):
                    # on restore the stored memberships make the incidents, not a replay of links
                    self._union(event, other, entity=True, final=link)
                self._insert(kind, key, ts, event)
            if template_key is not None and self._entity.size[self._entity.find(event)] <= self._small:
                # linked once its entity group has closed no larger (_decide); restore sorts its own
                self._template[event] = template_key
                if link:
                    self._groups[self._final.find(event)].pending.append(event)
                    self._pending.add((ts, event))
        return added

    def _stats(self, row: tuple) -> _Stats:
        event, ts, day, service, user, ip, _, _, score = row
        real = user is not None and user.lower() not in self._ignored
        return _Stats(
            (day, ts, event), ts, ts, 1, score, score, {service},
            {user} if real else set(), set() if ip is None else {ip},
        )  # fmt: skip

    def _neighbours(self, kind: str, key: str, ts: int, event: str) -> list[str]:
        """The held events of ``key`` just before and just after ``(ts, event)``, if within the gap:
        consecutive events of a key are linked, as in batch."""
        held = self._index.get((kind, key))
        if not held:
            return []
        gap, pos, out = self._gap_us[kind], held.bisect_left((ts, event)), []
        if pos > 0 and ts - held[pos - 1][0] <= gap:
            out.append(held[pos - 1][1])
        if pos < len(held) and held[pos][0] - ts <= gap:
            out.append(held[pos][1])
        return out

    def _decide(self, cutoff: int) -> None:
        """The rare-template link of the waiting template events whose entity group has closed (newest
        event before ``cutoff``): its size is final and at most ``template_link_max_group`` (a group
        growing past it forgets them, ``_union``), as batch's gate reads it at the end of the day. Each
        joins the nearest such events before and after it with its key, within the gap, and is indexed
        for those deciding later. Batch links consecutive eligible events of a key; linking each one
        as it is decided, in any order, to its nearest decided neighbours makes the same components:
        a link spans no gap wider than the template gap (so batch connects its ends too), and two
        consecutive eligible events are linked by whichever is decided second, since nothing eligible
        lies between them. A waiting event between two decided ones does not change that: decided
        eligible, it links to both; forgotten, the two were linked directly if within the gap."""
        events = []
        for group in self._groups.values():
            if group.pending and group.newest < cutoff:
                events += group.pending
                group.pending = []
        for event in events:
            ts, key = self._rows[event][1], self._template[event]
            self._pending.discard((ts, event))
            for other in self._neighbours(TEMPLATE_KIND, key, ts, event):
                self._union(event, other, entity=False)
            self._insert(TEMPLATE_KIND, key, ts, event)
            group = self._groups[self._final.find(event)]
            group.linkable = max(group.linkable, ts)

    def _needed_from(self) -> int:
        """The oldest ts a template event may have and still be linked to: one waiting (the oldest
        waiting) or to come (in-order events are no older than the newest flagged event seen), less
        the template gap. A closed group whose template events are all older is not needed any more."""
        oldest = self._pending[0][0] if self._pending else self.watermark
        return min(oldest, self.watermark) - self._template_gap_us

    def _insert(self, kind: str, key: str, ts: int, event: str) -> None:
        self._index.setdefault((kind, key), SortedList()).add((ts, event))
        self._indexed[event].append((kind, key))

    def _union(self, a: str, b: str, entity: bool, final: bool = True) -> None:
        if entity:
            self._entity.union(a, b)
        if not final:
            return
        joined = self._final.union(a, b)
        if joined is not None:
            root, gone = joined
            keep, other = self._groups[root], self._groups.pop(gone)
            self._groups[root] = _merge(keep, other)
        if not entity:
            return
        group = self._groups[self._final.find(a)]
        if group.pending and self._entity.size[self._entity.find(a)] > self._small:
            # grown past the gate: batch never template-links these events (a waiting group is its
            # entity group: template links are only made between closed groups)
            for event in group.pending:
                self._pending.discard((self._rows[event][1], event))
            group.pending = []

    # -- closing and writing -------------------------------------------------------------------------

    def _wait(self, group: _Group) -> float:
        """How long a large group's root cause may lag its events: its last pass's cost over the share
        of the stream's time such passes may take (a pass costs in proportion to the group: one of
        128,000 events, passed every 5 s, held scoring a minute behind emission at 1,000 events/s)."""
        return max(self.large_group_every_s, group.cost / self.rca_share)

    def _flush(
        self, added: list[str], detectors, now: float, force: bool = False
    ) -> Callable[[sqlite3.Cursor], None]:
        cutoff = self.watermark - self.hold_us
        self._decide(cutoff)
        needed = self._needed_from()
        closing = [
            root
            for root, g in self._groups.items()
            if g.newest < cutoff and not g.pending and g.linkable < needed
        ]
        dropped = set(closing)
        self._adopt_background()
        due, refreshed = [], []
        for root, group in self._groups.items():
            if not (group.dirty or group.stale):
                continue
            in_batch = (
                force
                or group.row is None
                or len(group.members) <= self.large_group
                or root in dropped  # its last row is the batch's
            )
            waited = now - group.computed_at >= self._wait(group)
            if in_batch or (waited and not self.background):
                due.append(root)
                continue
            if waited:
                self._submit(group, detectors, now)
            if group.dirty:
                refreshed.append(self._refreshed(group))
        built = self._build([self._groups[r] for r in due], detectors, now)
        merges, memberships = [], []
        for group in self._groups.values():
            if group.incident_id is None:  # not possible after _build; kept out of the writes if it were
                continue
            merges += [(group.incident_id, gone) for gone in group.absorbed]
            memberships += [(group.incident_id, e) for e in group.new]
            group.absorbed, group.new = [], []
        flagged_rows = [
            (*_stored_row(self._rows[e]), self._features[e].astype("<f8").tobytes()) for e in added
        ]
        for root in closing:
            self._close(root)
        incident_rows = [_incident_row(r, now) for r in (*built, *refreshed)]

        def write(cur: sqlite3.Cursor) -> None:
            if flagged_rows:
                cur.executemany(
                    f"INSERT OR IGNORE INTO flagged_features ({', '.join(_ROW)}, features) "
                    f"VALUES ({', '.join('?' * (len(_ROW) + 1))})",
                    flagged_rows,
                )
            for survivor, gone in merges:
                cur.execute(
                    "UPDATE incidents SET merged_into = ?, updated_at = ? "
                    "WHERE incident_id = ? OR merged_into = ?",
                    (survivor, now, gone, gone),
                )
                cur.execute(
                    "UPDATE incident_events SET incident_id = ? WHERE incident_id = ?", (survivor, gone)
                )
            if incident_rows:
                cur.executemany(_UPSERT, incident_rows)
            if memberships:
                cur.executemany(
                    "INSERT INTO incident_events (incident_id, event_id) VALUES (?, ?) "
                    "ON CONFLICT(event_id) DO UPDATE SET incident_id = excluded.incident_id",
                    memberships,
                )

        return write

    def _build(self, groups: list[_Group], detectors, now: float) -> list[dict]:
        """``build_incidents`` on the groups' events, each group one incident under its id (new groups
        take ``incident_id`` of their first event): the incidents' rows."""
        if not groups:
            return []
        began = time.perf_counter()
        for group in groups:
            if group.incident_id is None:
                group.incident_id = incident_id(group.first[1], group.first[0])
            group.dirty, group.stale, group.computed_at = False, False, now
            group.passes += 1
        events = [e for g in groups for e in g.members]
        ids = [g.incident_id for g in groups for _ in g.members]
        firsts = {g.incident_id: g.first[1] for g in groups}
        rows = self._pass(events, ids, firsts, detectors)
        took = time.perf_counter() - began
        self._rca_s += took
        by_id = {r["incident_id"]: r for r in rows}
        for group in groups:
            group.row, group.cost = by_id[group.incident_id], took * len(group.members) / len(events)
        return rows

    def _pass(self, events: list[str], ids: list[str], firsts: dict[str, str], detectors) -> list[dict]:
        """One ``build_incidents`` call over ``events`` grouped as ``ids``: a row per incident id. Reads
        the held rows and features only (a background pass runs it too; an event closed meanwhile
        raises KeyError)."""
        matrix = np.array([self._features[e] for e in events])
        frame = _frame([self._rows[e] for e in events], matrix)
        space = detectors[IF].space
        built, _ = build_incidents(
            frame,
            deviations(frame, detectors),
            space.names,
            self._explainer(frame, detectors),
            self.config,
            normals=normal_values(space),
            catalogue=self.catalogue,
            groups=ids,
        )
        return [{**r, "first_event_id": firsts[r["incident_id"]]} for r in built.iter_rows(named=True)]

    # -- root-cause passes of large groups in the background ------------------------------------------

    def _submit(self, group: _Group, detectors, now: float) -> None:
        """Start a background pass on ``group`` as it is now, unless one is under way (the group then
        stays due, and the next batch tries again)."""
        with self._signal:
            if self._busy:
                return
            self._busy = True
            group.passes += 1
            group.computed_at = now  # the wait before its next pass counts from this one's start
            self._jobs.append(
                (group, group.passes, list(group.members), group.incident_id, group.first[1], detectors)
            )
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="bankanom-live-rca", daemon=True)
                self._worker.start()
            self._signal.notify_all()

    def _work(self) -> None:
        while True:
            with self._signal:
                while not self._jobs:
                    self._signal.wait()
                group, passes, members, iid, first, detectors = self._jobs.pop()
            began, result = time.perf_counter(), None
            try:
                row = self._pass(members, [iid] * len(members), {iid: first}, detectors)[0]
                result = (group, passes, row, time.perf_counter() - began)
            except Exception as error:  # the group closed (its events dropped) or merged meanwhile
                log.debug("a background root-cause pass was dropped: %r", error)
            with self._signal:
                figures = self.background_figures
                if result is None:
                    figures["dropped"] += 1
                else:
                    self._done.append(result)
                    figures["passes"] += 1
                    figures["seconds"] += result[3]
                    figures["max_s"] = max(figures["max_s"], result[3])
                self._busy = False
                self._signal.notify_all()

    def wait_for_background(self, timeout: float = 60.0) -> None:
        """Until no background pass is under way (tests; a stop)."""
        with self._signal:
            self._signal.wait_for(lambda: not self._busy, timeout)

    def _adopt_background(self) -> None:
        """The root cause of each finished pass joins its group's row (written by this batch), if the
        group is still open and no pass started on it since."""
        with self._signal:
            done, self._done = self._done, []
        live = {id(g) for g in self._groups.values()}
        for group, passes, row, took in done:
            if id(group) not in live or group.passes != passes or group.incident_id is None:
                self.background_figures["stale"] += 1
                continue
            group.row, group.cost, group.dirty = row, took, True

    def _refreshed(self, group: _Group) -> dict:
        """A large group's row between two passes: its figures from the running aggregates, exactly as
        ``build_incidents`` computes them (the mean up to float rounding), severity, reporting and
        the summary from those; origin, scenario and top features from its last pass."""
        s, cap = group.stats, self.config.explain.max_listed
        row = {
            **group.row,
            "incident_id": group.incident_id,
            "first_event_id": group.first[1],
            "partition_date": s.first[0],
            "start_ts": _datetime(s.start),
            "end_ts": _datetime(s.end),
            "event_count": s.count,
            "services": sorted(s.services, key=lambda v: (v is not None, v or "")),
            "users": heapq.nsmallest(cap, s.users),
            "ips": heapq.nsmallest(cap, s.ips),
            "user_count": len(s.users),
            "ip_count": len(s.ips),
            "max_score": s.score_max,
            "mean_score": s.score_sum / s.count,
        }
        figures = pl.DataFrame(
            {k: [row[k]] for k in ("max_score", "user_count", "ip_count", "event_count", "services")},
            schema_overrides={"services": pl.List(pl.String)},
        )
        row["severity"] = _severity(figures, self.config)[0]
        row["reported"] = bool(_reported(figures, self.config)[0])
        match = rca.Match(
            row["scenario_id"],
            row["scenario_name"],
            row["scenario_confidence"],
            0.0,
            [(a["id"], a["name"], a["confidence"]) for a in json.loads(row["scenario_alternatives"])],
        )
        top = json.loads(row["top_features"])
        row["summary"] = _summary(row, top, match, self._profiles[match.scenario_id], self.config)
        group.dirty, group.stale = False, True
        return row

    def _explainer(self, frame: pl.DataFrame, detectors) -> Callable[[np.ndarray], np.ndarray]:
        """``explain`` with each event's attribution kept while its group is open: a growing incident's
        top line is explained once, not at every batch. Forgotten when the models change."""
        models = tuple(detectors.values())
        if len(models) != len(self._explained_by) or any(
            a is not b for a, b in zip(models, self._explained_by, strict=False)
        ):
            self._attribution, self._explained_by = {}, models
        events = frame["event_id"].to_list()

        def explain_rows(rows: np.ndarray) -> np.ndarray:
            # read into a local map: a background pass shares the cache with the batch's own passes
            cache = self._attribution
            found = {r: cache.get(events[r]) for r in (int(r) for r in rows)}
            missing = [r for r, values in found.items() if values is None]
            if missing:
                got = explain(frame[missing], detectors)
                for r, values in zip(missing, got, strict=True):
                    found[r] = cache[events[r]] = values
            return np.array([found[int(r)] for r in rows])

        return explain_rows

    def _close(self, root: str) -> None:
        group = self._groups.pop(root)
        for event in group.members:
            for kind, key in self._indexed.pop(event, []):
                held = self._index[(kind, key)]
                held.discard((self._rows[event][1], event))
                if not held:
                    del self._index[(kind, key)]
            del self._rows[event], self._features[event]
            self._attribution.pop(event, None)
            self._template.pop(event, None)
        self._entity.drop(group.members)
        self._final.drop(group.members)


def _merge(a: _Group, b: _Group) -> _Group:
    """One group of two: the visible incident whose first event is older keeps its id and the other is
    recorded as absorbed; a group not yet visible takes the other's id, or, if neither is visible,
    the older first event. The larger group takes the smaller's events in place (an event joining a
    group of 100,000 must not copy it)."""
    if a.incident_id is not None and b.incident_id is not None:
        keep, gone = (a, b) if a.first <= b.first else (b, a)
        absorbed = [*keep.absorbed, gone.incident_id, *gone.absorbed]
    elif a.incident_id is not None or b.incident_id is not None:
        keep, gone = (a, b) if a.incident_id is not None else (b, a)
        absorbed = [*keep.absorbed, *gone.absorbed]
    else:
        keep, gone = (a, b) if a.first <= b.first else (b, a)
        absorbed = []
    big, small = (a, b) if len(a.members) >= len(b.members) else (b, a)
    big.members.extend(small.members)
    big.new.extend(small.new)
    big.stats.absorb(small.stats)
    big.pending.extend(small.pending)
    big.linkable = max(big.linkable, small.linkable)
    big.newest = max(big.newest, small.newest)
    if big.row is None:  # the root cause of the larger side describes the merged group best
        big.row, big.cost = small.row, small.cost
    big.first, big.incident_id, big.absorbed = keep.first, keep.incident_id, absorbed
    big.computed_at = keep.computed_at
    big.dirty = True
    return big


def _normalise(frame: pl.DataFrame) -> pl.DataFrame:
    """Types as build_incidents reads them: partition_date a date, ts µs UTC, ids strings."""
    text = ["event_id", "source_service", "user_id", "ip_address", "correlation_id", "template"]
    frame = frame.with_columns(pl.col(c).cast(pl.String) for c in text)
    if frame.schema["partition_date"] == pl.String:
        frame = frame.with_columns(pl.col("partition_date").str.to_date())
    ts = frame.schema["ts"]
    if ts.is_integer():  # µs since the epoch, as the store keeps it
        frame, ts = frame.with_columns(pl.col("ts").cast(pl.Datetime("us"))), pl.Datetime("us")
    if not isinstance(ts, pl.Datetime) or ts.time_zone is None:
        frame = frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    return frame.with_columns(pl.col("ts").dt.cast_time_unit("us"), pl.col("ensemble_score").cast(pl.Float64))


def _feature_columns(matrix: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(matrix.reshape(-1, len(FEATURES)), schema=list(FEATURES), orient="row")


def _frame(rows: list[tuple], matrix: np.ndarray) -> pl.DataFrame:
    """Held rows (``_ROW`` values, ts as µs) and their features as the frame build_incidents reads."""
    base = pl.DataFrame(rows, schema=_ROW_TYPES, orient="row").with_columns(
        pl.col("ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    )
    return _normalise(base).hstack(_feature_columns(matrix))


def _stored_row(row: tuple) -> tuple:
    """``_ROW`` values as stored: the day as text."""
    return tuple(v.isoformat() if isinstance(v, dt.date) else v for v in row)


def _incident_row(r: dict, now: float) -> tuple:
    values = []
    for column in _STORED:
        v = r.get(column)
        if column in _LISTS:
            v = json.dumps(v)
        elif column in ("start_ts", "end_ts"):
            v = _us(v)
        elif column == "partition_date":
            v = v.isoformat()
        elif column == "reported":
            v = int(v)
        elif column in ("opened_at", "updated_at"):
            v = now
        values.append(v)
    return tuple(values)


def _datetime(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)


def _us(t: dt.datetime) -> int:
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def prune(cur: sqlite3.Cursor, before_date: str) -> dict[str, int]:
    """Delete the incidents (with their members and flagged rows) of days before ``before_date``, in
    the caller's transaction (``LiveStore.prune``'s retention)."""
    old = "SELECT incident_id FROM incidents WHERE partition_date < ?"
    members = cur.execute(
        f"DELETE FROM incident_events WHERE incident_id IN ({old})", (before_date,)
    ).rowcount
    incidents = cur.execute("DELETE FROM incidents WHERE partition_date < ?", (before_date,)).rowcount
    flagged = cur.execute("DELETE FROM flagged_features WHERE partition_date < ?", (before_date,)).rowcount
    return {"incidents": incidents, "incident_events": members, "flagged_features": flagged}


# -- reading ---------------------------------------------------------------------------------------


def read_incidents(
    con: sqlite3.Connection, day: str | None = None, merged: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(incidents, incident_events)`` of the store in the batch's columns (``INCIDENT_COLUMNS`` plus
    ``first_event_id``, ``merged_into``, ``opened_at``, ``updated_at``), for the day when given, without
    the merged-away ones unless ``merged``."""
    where, args = [], []
    if day is not None:
        where.append("partition_date = ?")
        args.append(day)
    if not merged:
        where.append("merged_into IS NULL")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    columns = [*_STORED, "merged_into"]
    rows = con.execute(
        f"SELECT {', '.join(columns)} FROM incidents {clause} ORDER BY start_ts, incident_id", args
    )
    raw = pl.DataFrame(rows.fetchall(), schema=columns, orient="row", infer_schema_length=None)
    incidents = raw.with_columns(
        pl.col("partition_date").cast(pl.String).str.to_date(),
        *[
            pl.col(c).cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            for c in ("start_ts", "end_ts")
        ],
        *[pl.col(c).cast(pl.String).str.json_decode(pl.List(pl.String)) for c in _LISTS],
        pl.col("reported").cast(pl.Boolean),
        *[pl.col(c).cast(pl.Float64) for c in ("max_score", "mean_score", "scenario_confidence")],
        *[pl.col(c).cast(pl.Int64) for c in ("event_count", "user_count", "ip_count")],
    )
    members = con.execute(
        "SELECT ie.incident_id, ie.event_id FROM incident_events ie JOIN incidents USING (incident_id) "
        f"{clause} ORDER BY ie.incident_id, ie.event_id",
        args,
    ).fetchall()
    events = pl.DataFrame(members, schema={"incident_id": pl.String, "event_id": pl.String}, orient="row")
    return incidents, events
