"""The API's online feature state: the ``OnlineEngine`` that ``POST /events`` feeds and ``/predict``
reads, made durable by a journal and checkpoints.

Layout of the online folder (``BANKANOM_ONLINE_DIR``, ``data/online`` by default)::

    journal-<n>.jsonl        the posted events, one JSON line each, in the order they were ingested
    checkpoint-<n>.ckpt      the engine's state after every journal file numbered below n
    state.json               {"checkpoint", "journal_from", "high_water", "feature_set_version"}
    owner.lock               held (flock) by the one process that may ingest

A request's events are appended to the current journal file and fsynced before the engine ingests them
and before the answer goes out, so an answered event survives a crash. Every ``checkpoint_events``
ingested events, and at shutdown, the state is checkpointed and a new journal file begun; journal files
the checkpoint covers are then deleted.

On start the newest of two checkpoints, by high-water mark (the newest event time it holds), is
restored: the API's own (``state.json``) or the one the pipeline published with the current snapshot
(``current.json``'s ``checkpoint``, verified by its sha256). The journal is then re-applied: after the
API's own checkpoint, the files it does not cover, in order, which reproduces the same state and
counters exactly; after the snapshot's, every journal file left, whose events the snapshot already
holds come back as duplicates (not counted again) and the rest are ingested.

The engine is not safe for concurrent use: one lock guards it, held for an ingest or a peek (micro- to
milliseconds); a second lock keeps the journal's order the engine's order, held over the fsync and while
a checkpoint is written (nothing ingests then, so the state does not change under it), which predictions
do not wait for.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

from bankanom_api.schemas import LogEvent
from bankanom_pipeline.files import write_atomic
from bankanom_pipeline.online.engine import OnlineEngine, Outcome, TooLate
from bankanom_pipeline.online.events import METRIC_INDEX, BadEvent, Event, from_micros, to_micros
from bankanom_pipeline.serving import snapshot as snapshots

log = logging.getLogger("bankanom_api")

STATE = "state.json"
LOCK = "owner.lock"
_JOURNAL = re.compile(r"journal-(\d{8})\.jsonl")
_CHECKPOINT = "checkpoint-{:08d}.ckpt"


class OnlineStateError(RuntimeError):
    """The online folder cannot be used (another process owns it, or its checkpoint is unusable)."""


class OutOfContext(ValueError):
    """A posted event the online state cannot give features to; ``detail`` is its 422 error entry."""

    def __init__(self, index: int, error: Exception):
        super().__init__(str(error))
        too_late = isinstance(error, TooLate)
        self.detail = {
            "loc": ["body", "events", index, "timestamp" if too_late else "metrics"],
            "msg": (
                f"{error}: its context is no longer kept; ask with context=false" if too_late else str(error)
            ),
            "type": "too_late" if too_late else getattr(error, "reason", "invalid"),
        }


def as_event(event: LogEvent) -> Event:
    """A validated posted event as the engine reads it (``validated_logs``' columns)."""
    return Event(
        event_id=event.event_id,
        ts=to_micros(event.utc_timestamp()),
        source_service=event.source_service,
        log_level=event.log_level,
        message=event.message,
        correlation_id=event.correlation_id,
        user_id=event.user_id,
        ip_address=event.ip_address,
        geo_location=event.geo_location,
        metrics=known_metrics(event.metrics),
    )


def known_metrics(metrics: dict | None) -> dict | None:
    """The metrics the features read (the SQL's fixed schema ignores the others): an unknown field may
    hold any JSON value, such as an integer too large to journal, and would only be carried along."""
    kept = {name: value for name, value in (metrics or {}).items() if name in METRIC_INDEX}
    return kept or None


def _line(event: Event) -> bytes:
    return orjson.dumps(event._asdict()) + b"\n"


def _journal_files(directory: Path) -> list[tuple[int, Path]]:
    found = [
        (int(m.group(1)), p) for p in directory.glob("journal-*.jsonl") if (m := _JOURNAL.fullmatch(p.name))
    ]
    return sorted(found)


def _read_journal(path: Path) -> Iterator[Event]:
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                # a line cut short by a crash during its write was never fsynced, so never answered
                log.warning("%s: line %d is incomplete (a write cut short): ignored", path.name, number)
                return
            yield Event.from_row(orjson.loads(line))


def _mark(value: list | None) -> tuple:
    """A high-water mark as recorded in JSON (``[ts µs, event_id]`` or null), comparable."""
    return (-1, "") if value is None else (int(value[0]), str(value[1]))


class OnlineState:
    """The engine, its journal and its checkpoints, for one API process."""

    def __init__(
        self,
        directory: Path,
        snapshots_dir: Path,
        checkpoint_events: int,
        owner: bool,
        max_future_s: float = 300.0,
    ):
        """``owner``: this process ingests (it takes the folder's lock, writes the journal and its own
        checkpoints); otherwise it restores the state read-only and only peeks. Events dated more than
        ``max_future_s`` ahead of this process's clock are refused, neither journaled nor ingested."""
        self.directory, self.snapshots_dir = Path(directory), Path(snapshots_dir)
        self.checkpoint_events, self.owner = checkpoint_events, owner
        self.max_future_s = max_future_s
        self.refused_future = 0
        self.engine = OnlineEngine()
        self.restored_from = "nothing (empty state)"
        self._engine_lock = threading.Lock()
        self._journal_lock = threading.Lock()
        self._journal = None
        self._journal_number = 0
        self._since_checkpoint = 0
        self._lock_file = None

    # -- start and stop ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.owner:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._own()
        own, covered = self._own_checkpoint()
        published = self._published_checkpoint()
        candidates = sorted(
            (c for c in (own, published) if c is not None), key=lambda c: c[0], reverse=True
        )  # newest high-water mark first; a tie keeps the API's own (it knows its journal position)
        for high_water, path, kind in candidates:
            try:
                engine = OnlineEngine.restore(path)
            except Exception as error:  # a damaged file or another feature-set version: the next one
                log.error("could not restore the online state from %s (%s): %s", kind, path, error)
                continue
            self.engine, self.restored_from = engine, f"{kind} {path.name} (high-water {high_water})"
            break
        else:
            kind = None
        journal = _journal_files(self.directory) if self.directory.exists() else []
        if kind == "its own checkpoint":
            journal = [(n, p) for n, p in journal if n >= covered]
        replayed = self._replay(journal, dedup=kind == "the snapshot's checkpoint")
        log.info("online state restored from %s; %d journal events re-applied", self.restored_from, replayed)
        if self.owner:  # a file of its own: the last one may end in a line a crash cut short
            self._journal_number = max([covered, *(n for n, _ in journal)], default=0) + 1
            self._open_journal()

    def stop(self) -> None:
        """Checkpoint what was ingested since the last checkpoint, then release the folder."""
        if not self.owner:
            return
        with self._journal_lock, self._engine_lock:
            if self._since_checkpoint:
                self._checkpoint()
            if self._journal is not None:
                self._journal.close()
                self._journal = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _own(self) -> None:
        handle = (self.directory / LOCK).open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OnlineStateError(
                f"another process owns the online state in {self.directory}: POST /events needs a single "
                "API process (bankanom api --workers 1) or an online folder of its own (BANKANOM_ONLINE_DIR)"
            ) from None
        self._lock_file = handle

    def _own_checkpoint(self) -> tuple[tuple | None, int]:
        path = self.directory / STATE
        if not path.exists():
            return None, 0
        state = orjson.loads(path.read_bytes())
        own = (_mark(state["high_water"]), self.directory / state["checkpoint"], "its own checkpoint")
        return own, state["journal_from"]

    def _published_checkpoint(self) -> tuple | None:
        publisher = snapshots.SnapshotPublisher(self.snapshots_dir)
        try:
            pointer = publisher.current()
            if pointer is None or "checkpoint" not in pointer:
                return None
            path = publisher.verified_checkpoint(pointer)
        except Exception as error:
            log.error("the snapshot's online checkpoint is unusable: %s", error)
            return None
        return _mark(pointer["checkpoint"]["high_water"]), path, "the snapshot's checkpoint"

    def _replay(self, journal: list[tuple[int, Path]], dedup: bool) -> int:
        engine, replayed = self.engine, 0
        before = engine.counters.get("duplicate", 0)
        for _, path in journal:
            for event in _read_journal(path):
                engine.ingest(event)
                replayed += 1
        if dedup:  # events the snapshot's state already held are not new duplicates
            engine.counters["duplicate"] = before
        return replayed

    # -- ingest, peek, checkpoint --------------------------------------------------------------------

    def ingest(self, events: list[Event]) -> list:
        """Journal the events (fsynced), then fold them into the state in order; the engine's outcome for
        each."""
        if not self.owner:
            raise OnlineStateError("this process does not own the online state")
        horizon = to_micros(dt.datetime.now(dt.UTC)) + round(self.max_future_s * 1e6)
        future = {i for i, e in enumerate(events) if e.ts > horizon}
        accepted = [e for i, e in enumerate(events) if i not in future]
        data = b"".join(_line(e) for e in accepted)
        with self._journal_lock:
            if data:
                self._journal.write(data)
                self._journal.flush()
                os.fsync(self._journal.fileno())
            with self._engine_lock:
                folded = iter([self.engine.ingest(e) for e in accepted])
                self.refused_future += len(future)
            outcomes = [
                Outcome(
                    "invalid",
                    e.event_id,
                    reason=f"future: dated more than {self.max_future_s:g} s ahead of this server's clock",
                )
                if i in future
                else next(folded)
                for i, e in enumerate(events)
            ]
            self._since_checkpoint += len(accepted)
            if self._since_checkpoint >= self.checkpoint_events:
                # with the journal's lock alone: nothing ingests meanwhile, so the state is a consistent
                # cut, and predictions (which only read it) go on while it is written
                self._checkpoint()
        return outcomes

    def peek(self, events: list[Event]) -> np.ndarray:
        """Each event's point-in-time features against the current state, without changing it: one row
        per event in ``OnlineEngine.FEATURES`` order (NaN where a feature has no value). ``OutOfContext``
        for an event the state cannot place (older than the allowed lateness, or refused by the engine)."""
        peek, rows = self.engine.peek, []
        with self._engine_lock:
            for i, event in enumerate(events):
                try:
                    rows.append(peek(event))
                except (TooLate, BadEvent) as error:
                    raise OutOfContext(i, error) from None
        return np.asarray(rows, dtype=np.float64).reshape(len(events), len(self.engine.FEATURES))

    def counters(self) -> dict[str, int]:
        return {**self.engine.counters, "future": self.refused_future}

    def describe(self) -> dict:
        """What /ready says about the state."""
        with self._engine_lock:
            mark = self.engine.high_water_mark
            counters = self.counters()
        return {
            "restored_from": self.restored_from,
            "feature_set_version": self.engine.FEATURE_SET_VERSION,
            "ingesting": self.owner,
            "high_water": None
            if mark is None
            else {"ts": from_micros(mark[0]).isoformat() + "Z", "event_id": mark[1]},
            "counters": counters,
        }

    def _checkpoint(self) -> None:
        """With the journal's lock held: checkpoint the state as of the end of the current journal file, begin the
        next file and delete what the checkpoint covers."""
        number = self._journal_number + 1
        name = _CHECKPOINT.format(number)
        temporary = self.directory / f".{name}.tmp"
        self.engine.checkpoint(temporary)
        with temporary.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(temporary, self.directory / name)
        state = {
            "checkpoint": name,
            "journal_from": number,
            "high_water": self.engine.high_water_mark,
            "feature_set_version": self.engine.FEATURE_SET_VERSION,
        }
        write_atomic(self.directory / STATE, orjson.dumps(state))
        if self._journal is not None:
            self._journal.close()
        self._journal_number = number
        self._open_journal()
        self._since_checkpoint = 0
        for n, path in _journal_files(self.directory):
            if n < number:
                path.unlink()
        for path in self.directory.glob("checkpoint-*.ckpt"):
            if path.name != name:
                path.unlink()

    def _open_journal(self) -> None:
        self._journal = (self.directory / f"journal-{self._journal_number:08d}.jsonl").open("ab")
