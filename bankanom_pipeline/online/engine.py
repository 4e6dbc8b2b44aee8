"""The online feature engine: event by event, the feature vector ``features_events`` holds for the event,
computed point in time (docs/features.md) from each entity's retained events.

``OnlineEngine`` is the per-event API (``ingest``, ``ingest_many``, ``peek``, checkpoints, counters) of the
compiled engine (``compiled.CompiledEngine``: a numba kernel over numpy state, docs/online.md "Compiled
engine"); ``ingest_frame`` takes a whole polars frame of events (replay's way).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, MutableMapping
from typing import NamedTuple

import numpy as np

from bankanom_pipeline.online import layout as lay
from bankanom_pipeline.online.compiled import ENGINE_FEATURE_SET_VERSION, CompiledEngine
from bankanom_pipeline.online.events import BadEvent, Event, metric_values
from bankanom_pipeline.online.prepare import ROWS_BELOW, check, frame_of
from bankanom_pipeline.online.schema import DAY, FEATURES, HORIZON, Features

__all__ = [
    "DAY",
    "ENGINE_FEATURE_SET_VERSION",
    "FEATURES",
    "HORIZON",
    "BadEvent",
    "OnlineEngine",
    "Outcome",
    "TooLate",
]


class Outcome(NamedTuple):
    """What ``ingest`` did with an event: ``status`` is ingested, late (ingested, out of order),
    duplicate, too_late or invalid (refused: ``reason`` says why); ``features`` for ingested and late."""

    status: str
    event_id: str
    features: Features | None = None
    reason: str | None = None


class TooLate(ValueError):
    """The event is older than the engine keeps: its windows are no longer complete."""


_COUNTERS = {
    "ingested": lay.G_INGESTED,
    "late": lay.G_LATE,
    "duplicate": lay.G_DUPLICATE,
    "too_late": lay.G_TOO_LATE,
    "invalid": lay.G_INVALID,
    "new_user": lay.G_NEW_USER,
    "new_service": lay.G_NEW_SERVICE,
    "new_ip": lay.G_NEW_IP,
}


class Counters(MutableMapping):
    """The engine's counters, read from and written to its state (a checkpoint keeps them)."""

    def __init__(self, engine: CompiledEngine):
        self._engine = engine

    def __getitem__(self, name: str) -> int:
        return int(self._engine.G[_COUNTERS[name]])

    def __setitem__(self, name: str, value: int) -> None:
        self._engine.G[_COUNTERS[name]] = value

    def __delitem__(self, name: str) -> None:
        raise TypeError("the engine's counters cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(_COUNTERS)

    def __len__(self) -> int:
        return len(_COUNTERS)

    def __repr__(self) -> str:
        return repr(dict(self))


class OnlineEngine(CompiledEngine):
    FEATURES = FEATURES
    FEATURE_SET_VERSION = ENGINE_FEATURE_SET_VERSION

    @property
    def counters(self) -> Counters:
        return Counters(self)

    @property
    def high_water_mark(self) -> tuple[int, str] | None:
        """The newest ``(ts µs, event_id)`` ingested, or None before the first event."""
        if not self.G[lay.G_HAS_HWM]:
            return None
        return int(self.G[lay.G_HWM_TS]), self.hwm_eid

    # ---------------------------------------------------------------- per event

    def ingest(self, event: Event) -> Outcome:
        """Compute ``event``'s features point in time, then fold it into the state."""
        hwm = int(self.G[lay.G_HWM_TS]) if self.G[lay.G_HAS_HWM] else None
        return self._outcomes([event], self.ingest_batch([event]), hwm)[0]

    def ingest_many(self, events: Iterable[Event]) -> list[Outcome]:
        """``ingest`` of each event in turn (in batches: the same outcomes, faster)."""
        events = list(events)
        out: list[Outcome] = []
        for start in range(0, len(events), 65_536):
            chunk = events[start : start + 65_536]
            hwm = int(self.G[lay.G_HWM_TS]) if self.G[lay.G_HAS_HWM] else None
            if len(chunk) < ROWS_BELOW or not all(map(_well_typed, chunk)):
                # a frame needs its columns' types: events of the wrong types are refused row by row
                batch = self._ingest(time.process_time(), *self.prepare_events(chunk))
            else:
                batch = self.ingest_frame(frame_of(chunk))
            out += self._outcomes(chunk, batch, hwm)
        return out

    def peek(self, event: Event) -> Features:
        """The features ``event`` would get if ingested now; the state is not changed. Raises
        ``BadEvent`` for an invalid event, ``TooLate`` for one older than the lateness allowed."""
        return tuple(self.peek_many([event])[0].tolist())

    def peek_many(self, events: list[Event]) -> np.ndarray:
        """``peek`` of each event against the same state (the events do not see each other), in one
        kernel call: a row per event in ``FEATURES`` order. Raises ``peek``'s error for the first event
        refused, its place in ``events`` as the error's ``index``."""
        if len(events) < ROWS_BELOW or not all(map(_well_typed, events)):
            batch = self._peek(*self.prepare_events(events))
        else:
            batch = self.peek_frame(frame_of(events))
        refused = np.flatnonzero((batch.status == lay.ST_INVALID) | (batch.status == lay.ST_TOO_LATE))
        if len(refused):
            i = int(refused[0])
            event = events[i]
            if batch.status[i] == lay.ST_INVALID:
                error: Exception = _bad(event)
            else:
                error = TooLate(
                    f"event {event.event_id} is older than the newest event by more than the lateness allowed"
                )
            error.index = i
            raise error
        return batch.features

    def _outcomes(self, events: list[Event], batch, hwm: int | None) -> list[Outcome]:
        """Each event's ``Outcome``; ``hwm`` the newest time before the batch: a too-late event's reason
        names its distance to the newest event ingested before it, as ``ingest`` one at a time does."""
        names = lay.STATUSES
        rows = batch.features.tolist()
        out = []
        for e, status, row in zip(events, batch.status.tolist(), rows, strict=True):
            eid = e.event_id
            if status == lay.ST_INGESTED or status == lay.ST_LATE:
                hwm = e.ts if hwm is None else max(hwm, e.ts)
                out.append(Outcome(names[status], eid, tuple(row)))
            elif status == lay.ST_DUPLICATE:
                out.append(Outcome("duplicate", eid))
            elif status == lay.ST_TOO_LATE:
                late = f"{(hwm - e.ts) / 1e6:.0f} s older than the newest event"
                out.append(Outcome("too_late", eid, None, late))
            else:
                out.append(Outcome("invalid", str(eid), None, str(_bad(e))))
        return out

    # ---------------------------------------------------------------- size

    def memory_bytes(self) -> dict[str, int]:
        """Bytes of the state: the ring of retained events, each kind's entity arrays, the distinct
        counters (typed dict: ~3 words an entry) and the retained events' ids (Python dict and strings)."""
        out = {
            "ring": self.R.nbytes + self.RT.nbytes + self.RF.nbytes + self.ring_eid.nbytes,
            "template": self.T.nbytes,
            "quiet_country": self.Q.nbytes + self.CL.nbytes,
            "user": self.U.nbytes + self.UF.nbytes,
            "session": self.S.nbytes,
            "ip": self.A.nbytes,
            "network": self.N.nbytes,
            "service": self.V.nbytes + self.VX.nbytes + self.VR.nbytes,
            "distinct": 24 * len(self.pairs),
            # the dict's own table, and each id's str (49 bytes plus one per character, for ASCII ids)
            "events": sys.getsizeof(self.seen) + sum(len(e) + 49 for e in self.seen),
        }
        out["total"] = sum(out.values())
        return out

    def entity_counts(self) -> dict[str, int]:
        """Entities of each kind with retained events."""
        return {kind: len(ids.ids) for kind, ids in self.ids.items()}


def _well_typed(event: Event) -> bool:
    try:
        check(event)
    except BadEvent:
        return False
    return True


def _bad(event: Event) -> BadEvent:
    """Why ``event`` is refused (``prepare``'s checks, with their messages)."""
    try:
        check(event)
        metric_values(str(event.event_id), event.metrics)
    except BadEvent as error:
        return error
    return BadEvent("invalid", f"{event.event_id}: refused")
