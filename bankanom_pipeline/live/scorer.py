"""``LiveScorer``: the one owner of the online engine's state while the stream runs.

Each batch: every line is validated (ground truth dropped first), folded into the engine in order,
the accepted events are scored together by the promoted pair (``scoring.score_values``), the live
incidents are updated from the flagged ones, and all of it, with the source's offset, is committed to
the live store in one transaction. The engine is checkpointed every ``checkpoint_events`` accepted
events; on start the newest usable checkpoint is restored and the events the store holds after it are
folded in again (not written again), which rebuilds the state the stream had when it stopped, however
it stopped. docs/live.md.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import gc
import logging
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson

from bankanom_pipeline.detection.config import DetectionConfig, default_detection_config
from bankanom_pipeline.detection.scoring import IF, LOF, Scores, score_values
from bankanom_pipeline.live.lines import Refused, check_not_future, from_line, now_us, validated
from bankanom_pipeline.live.models import ModelWatcher, Pair
from bankanom_pipeline.live.store import LiveStore
from bankanom_pipeline.live.timings import STAGES, Timings
from bankanom_pipeline.online.engine import OnlineEngine, TooLate
from bankanom_pipeline.online.events import BadEvent, Event, from_micros, template
from bankanom_pipeline.serving import snapshot as snapshots

log = logging.getLogger("bankanom.stream")

STORE = "live.sqlite"
LOCK = "owner.lock"
_CHECKPOINT = re.compile(r"engine-(\d{12})\.ckpt")
API = "api"  # the store's source name of events posted to the API (POST /events)
# seconds between two collections + freezes of what survived (LiveScorer._freeze); checkpoints too
FREEZE_EVERY_S = 5.0
LINE_LIMIT = 8192  # characters of a refused line kept in the store: enough to see what was wrong


class Entry(NamedTuple):
    """One thing to ingest: a source's line (bytes) or a posted event (a decoded JSON object)."""

    offset: str | None
    payload: bytes | dict
    emitted_at: float | None = None


class LiveStateError(RuntimeError):
    """The live folder cannot be used: another stream owns it, or a commit failed (restart to recover)."""


class PeekRefused(ValueError):
    """An event ``peek`` cannot give features to: ``detail`` is the API's error entry, ``status`` its code
    (409 for one older than the state keeps, 422 for one the rules refuse)."""

    def __init__(self, index: int, reason: str, kind: str, status: int, field: str):
        super().__init__(reason)
        self.status = status
        self.detail = {"loc": ["body", "events", index, field], "msg": reason, "type": kind}


# the engine's BadEvent reasons that name an event's metrics (the others name its other fields)
_METRIC_REASONS = frozenset({"bad_metrics", "non_finite"})


def _kind(reason: str) -> str:
    return reason.split(":", 1)[0]


def _line_text(payload: bytes | dict) -> str:
    text = (
        payload.decode("utf-8", "replace") if isinstance(payload, bytes) else orjson.dumps(payload).decode()
    )
    return text[:LINE_LIMIT]


class LiveScorer:
    """Validate → engine → score → incidents → one commit, for batches from any source and the API."""

    def __init__(
        self,
        directory: Path,
        models_dir: Path,
        snapshots_dir: Path,
        *,
        checkpoint_events: int = 200_000,
        max_future_s: float = 300.0,
        incidents: Any = None,
        config: DetectionConfig | None = None,
        model_poll_s: float = 2.0,
        retention_days: int | None = 2,
        background_checkpoints: bool = True,
        wal_checkpoint_every_s: float | None = 1.0,
        freeze_state: bool = True,
    ):
        """``incidents``: the live incidents (``LiveIncidents``) whose tables the store holds and whose
        writes go into each batch's transaction; None keeps no incidents. ``retention_days``: days of
        event time the store keeps, the newest one included (None: all). ``wal_checkpoint_every_s``:
        the store's WAL is copied back by a thread at that interval, not inside a batch's commit (None:
        by SQLite in the commit). ``freeze_state``: the state restored, and later what survives to each
        checkpoint or minute, is moved out of the garbage collector's full passes (``_freeze``)."""
        if retention_days is not None and retention_days < 1:
            raise ValueError("retention_days must be at least 1 (the live day)")
        self.retention_days, self._kept_from = retention_days, None
        self.background_checkpoints = background_checkpoints
        self._pending: tuple[int, int, Path, float] | None = None  # a background checkpoint's child
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.checkpoint_events, self.max_future_s = checkpoint_events, max_future_s
        self.snapshots_dir = Path(snapshots_dir)
        self.config = config or default_detection_config()
        self.incidents = incidents
        self.lock = threading.Lock()  # the engine, the store's connection and the counters
        self.timings = Timings()
        self._owner = self._own()
        self.store = LiveStore(
            self.directory / STORE,
            extra_schema=getattr(incidents, "SCHEMA", None) if incidents else None,
            wal_checkpoint_every_s=wal_checkpoint_every_s,
        )
        self.models = ModelWatcher(Path(models_dir), OnlineEngine.FEATURE_SET_VERSION, model_poll_s)
        self.models.check()
        self.models.take()
        self.broken: str | None = None
        self.lag: tuple[int, float] | None = None
        self.started_at = time.time()
        self.refused = Counter(self._refused_so_far())
        self.since_checkpoint = 0
        self.checkpoint_seq: int | None = None
        self.engine, self.restored_from, self.seq = self._restore()
        if incidents is not None:
            pair = self.models.scoring()
            incidents.restore(self.store.con, pair.detectors if pair else None)
        self.freeze_state, self._frozen_at = freeze_state, time.monotonic()
        if freeze_state:
            self._freeze()  # once, at the start: what is left is the state
        self.timings.watch_gc()  # from here: the restore's own collections are not the stream's pauses

    # -- owning the folder ---------------------------------------------------------------------------

    def _own(self):
        handle = (self.directory / LOCK).open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LiveStateError(
                f"another bankanom stream owns {self.directory}: one stream per live folder "
                "(BANKANOM_LIVE_DIR)"
            ) from None
        return handle

    def close(self, checkpoint: bool = True) -> None:
        """Checkpoint what was accepted since the last checkpoint (so a restart replays nothing), then
        release the folder."""
        self.models.stop()
        self.timings.unwatch_gc()
        if self.freeze_state:
            gc.unfreeze()  # the process may go on without this state (tests, a restart in process)
        with self.lock:
            pair = self.models.scoring()
            if self.incidents is not None and pair is not None and self.broken is None:
                # the rows of large groups, recomputed at most every few seconds, brought up to date
                self.store.commit([], extra=self.incidents.settle(pair.detectors, time.time()))
            if self.broken is None:
                self._reap(block=True)
                if checkpoint and self.since_checkpoint:
                    self._checkpoint()
            elif self._pending is not None:  # the store may be what failed: the file is not adopted
                os.waitpid(self._pending[0], 0)
                self._pending[2].unlink(missing_ok=True)
            self.store.close()
        self._owner.close()

    def _refused_so_far(self) -> dict[str, int]:
        con = sqlite3.connect(f"file:{self.directory / STORE}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT substr(reason, 1, instr(reason || ':', ':') - 1), count(*) FROM refused GROUP BY 1"
            ).fetchall()
        except sqlite3.OperationalError:  # no store yet
            rows = []
        finally:
            con.close()
        return dict(rows)

    # -- restore and checkpoints ---------------------------------------------------------------------

    def _own_checkpoints(self) -> list[tuple[int, Path]]:
        found = [
            (int(m.group(1)), p)
            for p in self.directory.glob("engine-*.ckpt")
            if (m := _CHECKPOINT.fullmatch(p.name))
        ]
        return sorted(found, reverse=True)

    def _remove_partial_checkpoints(self) -> None:
        # a checkpoint still being written when the process died: never adopted, never read
        for path in self.directory.glob(".engine-*.ckpt.tmp"):
            path.unlink(missing_ok=True)

    def _restore(self) -> tuple[OnlineEngine, str, int]:
        self._remove_partial_checkpoints()
        last = self.store.last_seq()
        engine, base, kind = None, 0, "nothing (empty state)"
        for seq, path in self._own_checkpoints():
            if seq > last:  # covers commits the store does not hold (lost with a power cut): unusable
                log.warning(
                    "%s covers events the store does not hold (up to seq %d): ignored", path.name, last
                )
                continue
            try:
                engine, base, kind = OnlineEngine.restore(path), seq, f"its own checkpoint {path.name}"
                self.checkpoint_seq = seq
                break
            except Exception as error:  # damaged, or another feature-set version: an older one, or replay
                log.error("could not restore %s: %s", path.name, error)
        dedup = False
        if engine is None and (published := self._published_checkpoint()) is not None:
            engine, kind, dedup = published[0], published[1], True
        if engine is None:
            engine = OnlineEngine()
        duplicates = engine.counters["duplicate"]
        outcomes: Counter = Counter()
        chunk: list[Event] = []
        for _, event in self.store.events_after(base):  # a chunk at a time: the engine's batch path
            chunk.append(event)
            if len(chunk) == 10_000:
                outcomes.update(o.status for o in engine.ingest_many(chunk))
                chunk = []
        outcomes.update(o.status for o in engine.ingest_many(chunk))
        if dedup:  # the snapshot's state already held some of the store's events: not new duplicates
            engine.counters["duplicate"] = duplicates
        elif outcomes.keys() - {"ingested", "late"}:
            log.error("replay after %s refused events it had accepted: %s", kind, dict(outcomes))
        log.info("live state restored from %s; %d stored events folded in again", kind, outcomes.total())
        self.since_checkpoint = last - base
        return engine, kind, last

    def _published_checkpoint(self) -> tuple[OnlineEngine, str] | None:
        publisher = snapshots.SnapshotPublisher(self.snapshots_dir)
        try:
            pointer = publisher.current()
            if pointer is None or "checkpoint" not in pointer:
                return None
            path = publisher.verified_checkpoint(pointer)
            return OnlineEngine.restore(path), f"the snapshot's checkpoint {path.name}"
        except Exception as error:
            log.error("the snapshot's online checkpoint is unusable: %s", error)
            return None

    def checkpoint(self) -> None:
        """Checkpoint now and wait for it (a background one under way is finished first)."""
        with self.lock:
            self._checkpoint()

    def wait_for_checkpoint(self) -> None:
        """Wait for the background checkpoint under way, if any, and adopt it."""
        with self.lock:
            self._reap(block=True)

    def _checkpoint(self) -> None:
        """With the lock held: the engine's state as of ``seq`` to ``engine-<seq>.ckpt``, written here
        while ingest waits (at a stop, before a prune)."""
        self._reap(block=True)
        seq, started = self.seq, time.perf_counter()
        temporary = self.directory / f".engine-{seq:012d}.ckpt.tmp"
        _write_checkpoint(self.engine, temporary)
        self._adopt(seq, temporary, started)

    def _checkpoint_in_background(self) -> None:
        """With the lock held: fork, and let the child write the state as of ``seq`` (copy-on-write:
        the child sees the engine exactly as it is now while the parent goes on ingesting), so ingest
        does not pause for the seconds a day's state takes to write. The child only runs the
        checkpoint writer and leaves with ``os._exit``: no lock, logger or connection of the parent's."""
        seq = self.seq
        temporary = self.directory / f".engine-{seq:012d}.ckpt.tmp"
        if self.freeze_state:  # before the fork: the child's collections then touch none of the heap
            self._freeze()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                # none of the parent's files: a child outliving a killed parent must not keep its port,
                # its store or its folder lock held against the restarted stream
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                # the lowest priority: on a busy machine the scoring it runs beside is what is waited
                # for (a full day's state is ~40 CPU-s; at normal priority on two cores it held events
                # up to 10 s behind their emission at 1,000 events/s)
                os.nice(19)
                _write_checkpoint(self.engine, temporary)
                code = 0
            finally:
                os._exit(code)
        self._pending = (pid, seq, temporary, time.perf_counter())
        self.since_checkpoint = self.seq - seq

    def _freeze(self) -> None:
        """With the lock held, between two batches: a full collection of what is not frozen yet (the
        objects of the last few seconds: cheap), then what survived it, mostly state (new entities,
        open incidents), leaves the collector's passes for good. A full pass walks every tracked
        object while holding the GIL, every thread of the process waiting: ~1 s per million objects
        (a default day's restored state holds 1.1 M), up to 4 s seen at 1,000 events/s on the loaded
        2-core machine, each time the heap had grown by a quarter. Frozen objects are still freed when
        their last reference goes; only a reference cycle among them that becomes garbage later would
        stay (the state makes none)."""
        gc.collect()
        gc.freeze()
        self._frozen_at = time.monotonic()

    def _reap(self, block: bool = False) -> None:
        """Adopt the background checkpoint once its child is done (waiting for it with ``block``)."""
        if self._pending is None:
            return
        pid, seq, temporary, started = self._pending
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if done == 0:
            return
        self._pending = None
        if os.waitstatus_to_exitcode(status) != 0:
            temporary.unlink(missing_ok=True)
            log.error(
                "the background checkpoint at seq %d failed (exit %s): retried after %d more events",
                seq,
                os.waitstatus_to_exitcode(status),
                self.checkpoint_events,
            )
            return
        self._adopt(seq, temporary, started)

    def _adopt(self, seq: int, temporary: Path, started: float) -> None:
        """A written checkpoint becomes the one a restart uses: renamed, recorded, the older ones gone."""
        name = f"engine-{seq:012d}.ckpt"
        os.replace(temporary, self.directory / name)
        self.store.commit([], meta={"checkpoint": {"file": name, "seq": seq}})
        for other_seq, path in self._own_checkpoints():
            if other_seq != seq:
                path.unlink(missing_ok=True)
        self.since_checkpoint, self.checkpoint_seq = self.seq - seq, seq
        log.info("checkpoint %s written in %.1f s", name, time.perf_counter() - started)

    # -- ingest --------------------------------------------------------------------------------------

    def process(self, items: Sequence, source: str, lag: tuple[int, float] | None = None) -> list[dict]:
        """Ingest a source's fetched batch (``Item``s: offset, line, emitted_at), score it and commit it
        with the source's offset; returns each item's result."""
        entries = [Entry(i.offset, i.line, i.emitted_at) for i in items]
        offsets = {source: entries[-1].offset} if entries else {}
        return self.ingest(entries, source, offsets, lag)

    def ingest_posted(self, events: list[dict]) -> dict:
        """``POST /ingest``: events posted to the API, ingested in the posted order and committed before
        the answer; the body the API's ``POST /events`` returns."""
        results = self.ingest([Entry(None, e) for e in events], API)
        pair = self.models.scoring()
        return {
            "versions": pair.versions if pair else None,
            "unscored": None if pair else self.models.problem,
            "feature_set_version": OnlineEngine.FEATURE_SET_VERSION,
            "results": results,
        }

    def ingest(
        self,
        entries: Sequence[Entry],
        source: str,
        offsets: dict[str, str] | None = None,
        lag: tuple[int, float] | None = None,
    ) -> list[dict]:
        with self.lock:
            if self.broken is not None:
                raise LiveStateError(f"the stream stopped ingesting after a failed commit: {self.broken}")
            self.models.take()
            if lag is not None:
                self.lag = lag
            try:
                return self._ingest(entries, source, offsets or {})
            except LiveStateError:
                raise
            except Exception as error:
                # whatever failed, the engine may hold events the store does not: only a restart
                # (restore + replay of what the store holds) makes them agree again
                self.broken = f"{type(error).__name__}: {error}"
                raise LiveStateError(self.broken) from error

    def _ingest(self, entries: Sequence[Entry], source: str, offsets: dict[str, str]) -> list[dict]:
        clock = time.perf_counter
        began, cpu_began, gc_began = clock(), time.thread_time(), self.timings.gc_seconds()
        stages = dict.fromkeys(STAGES, 0.0)
        now = time.time()
        horizon = now_us() + round(self.max_future_s * 1e6)
        engine = self.engine
        results: list[dict] = []
        refused: list[tuple] = []
        accepted: list[tuple[int, Event, Entry, str]] = []  # (result index, event, entry, status)
        features: list = []
        t0 = clock()
        # each entry's event, or the Refused that names why it is not one
        checked: list[Event | Refused] = []
        for entry in entries:
            payload = entry.payload
            try:
                event = from_line(payload) if isinstance(payload, bytes) else validated(dict(payload))
                check_not_future(event, horizon, self.max_future_s)
            except Refused as r:
                checked.append(r)
                continue
            checked.append(event)
        t1 = clock()
        # the batch's events in one call: the outcomes ingest gives them one at a time
        outcomes = iter(engine.ingest_many([e for e in checked if not isinstance(e, Refused)]))
        t2 = clock()
        for entry, event in zip(entries, checked, strict=True):
            payload = entry.payload
            if isinstance(event, Refused):
                event_id = event.event_id
                if event_id is None and isinstance(payload, dict):
                    event_id = str(payload.get("event_id"))
                results.append(_result(event_id, "invalid", event.reason))
                refused.append((source, entry.offset, event_id, event.reason, _line_text(payload), now))
                continue
            outcome = next(outcomes)
            if outcome.features is None:
                reason = outcome.status if outcome.reason is None else f"{outcome.status}: {outcome.reason}"
                results.append(_result(event.event_id, outcome.status, outcome.reason))
                refused.append((source, entry.offset, event.event_id, reason, _line_text(payload), now))
                continue
            accepted.append((len(results), event, entry, outcome.status))
            results.append(_result(event.event_id, outcome.status, None))
            features.append(outcome.features)
        stages["validate"], stages["engine"] = t1 - t0, t2 - t1
        t = clock()
        values = np.asarray(features, dtype=np.float64).reshape(len(accepted), len(engine.FEATURES))
        pair = self.models.scoring()
        scores = (
            score_values(values, engine.FEATURES, pair.detectors, self.config) if pair and accepted else None
        )
        stages["score"], t = clock() - t, clock()
        rows = self._rows(accepted, source, scores, pair, now)
        if scores is not None:
            _fill(results, [a[0] for a in accepted], scores)
        stages["rows"], t = clock() - t, clock()
        extra = self._incident_writes(accepted, values, scores, pair, now)
        rca_s = self.incidents.took_rca() if self.incidents is not None else 0.0
        stages["incidents"], stages["rca"] = clock() - t - rca_s, rca_s
        kinds = Counter(_kind(r[3]) for r in refused)
        status = self._status(now, kinds, len(accepted))
        t = clock()
        try:
            self.store.commit(rows, refused, offsets, {"status": status}, extra)
        except Exception:
            log.exception("live store commit failed: the stream must restart")
            raise
        stages["commit"], t = clock() - t, clock()
        self.seq += len(accepted)
        self.refused.update(kinds)
        self.since_checkpoint += len(accepted)
        self._reap()
        if self.since_checkpoint >= self.checkpoint_events and self._pending is None:
            if self.background_checkpoints:
                self._checkpoint_in_background()
            else:
                self._checkpoint()
        if self.freeze_state and time.monotonic() - self._frozen_at >= FREEZE_EVERY_S:
            self._freeze()
        stages["checkpoint"], t = clock() - t, clock()
        self._retain()
        stages["retain"] = clock() - t
        batch = self.timings.record(
            len(entries),
            stages,
            began,
            clock(),
            time.thread_time() - cpu_began,
            self.timings.gc_seconds() - gc_began,
        )
        if batch["wall_s"] >= self.timings.slow_s:
            log.warning("slow batch: %s", batch)
        return results

    def _retain(self) -> None:
        """Once per new day of event time: drop the days older than ``retention_days`` (the warehouse
        holds them; the API serves a day from here only until the batch snapshot covers it)."""
        mark = self.engine.high_water_mark
        if mark is None or self.retention_days is None:
            return
        keep_from = (from_micros(mark[0]).date() - dt.timedelta(days=self.retention_days - 1)).isoformat()
        if keep_from == self._kept_from:
            return
        doomed = self.store.con.execute(
            "SELECT max(seq) FROM events WHERE partition_date < ?", (keep_from,)
        ).fetchone()[0]
        if doomed is not None and doomed > (self.checkpoint_seq or 0):
            self._checkpoint()  # a restart must never need to replay the rows about to go
        prune = None
        if self.incidents is not None:  # the incidents' tables go in the same transaction
            from bankanom_pipeline.live.incidents import prune
        removed = self.store.prune(keep_from, extra=prune)
        self._kept_from = keep_from
        if any(removed.values()):
            log.info("retention: days before %s removed from the live store: %s", keep_from, removed)

    def _rows(
        self,
        accepted: list[tuple[int, Event, Entry, str]],
        source: str,
        scores: Scores | None,
        pair: Pair | None,
        now: float,
    ) -> list[tuple]:
        if scores is not None:
            listed = (
                scores.isolation_forest.tolist(),
                scores.local_outlier_factor.tolist(),
                scores.ensemble.tolist(),
                scores.if_flag.astype(int).tolist(),
                scores.lof_flag.astype(int).tolist(),
                scores.is_anomaly.astype(int).tolist(),
            )
            versions = orjson.dumps({IF: pair.versions[IF], LOF: pair.versions[LOF]}).decode()
            unscored = None
        else:
            listed = ((None,) * len(accepted),) * 6
            versions, unscored = None, self.models.problem
        rows = []
        seq = self.seq
        for k, (_, e, entry, status) in enumerate(accepted):
            seq += 1
            rows.append(
                (
                    seq,
                    source,
                    entry.offset if entry.offset is not None else str(seq),
                    e.event_id,
                    e.ts,
                    from_micros(e.ts).date().isoformat(),
                    e.source_service,
                    e.log_level,
                    e.message,
                    e.correlation_id,
                    e.user_id,
                    e.ip_address,
                    e.geo_location,
                    None if e.metrics is None else orjson.dumps(e.metrics).decode(),
                    status,
                    *(column[k] for column in listed),
                    versions,
                    unscored,
                    entry.emitted_at,
                    now,
                )
            )
        return rows

    def _incident_writes(
        self,
        accepted: list[tuple[int, Event, Entry, str]],
        values: np.ndarray,
        scores: Scores | None,
        pair: Pair | None,
        now: float,
    ) -> Callable[[sqlite3.Cursor], None] | None:
        """The incidents hook: the live incidents' writes for this batch's flagged events (None without
        incidents or scores)."""
        if self.incidents is None or pair is None:
            return None
        # an empty batch too: the incidents close the groups time has moved past
        flagged = np.flatnonzero(scores.is_anomaly) if scores is not None else np.empty(0, dtype=np.int64)
        frame = flagged_frame([accepted[i][1] for i in flagged], values[flagged], scores, flagged)
        return self.incidents.update(frame, values[flagged], pair.detectors, now)

    # -- reads ---------------------------------------------------------------------------------------

    def committed_offset(self, source: str) -> str | None:
        """Where ``source`` resumes: the offset the last commit of its events reached."""
        with self.lock:
            return self.store.offset(source)

    def peek(self, events: list[dict]) -> np.ndarray:
        """Each posted event's point-in-time features against the current state, without changing it:
        one row per event in ``OnlineEngine.FEATURES`` order (NaN: no value). ``PeekRefused`` for an
        event the rules refuse (422) or the state can no longer place (409)."""
        parsed = []
        for i, obj in enumerate(events):
            try:
                parsed.append(validated(dict(obj)))
            except Refused as r:
                raise PeekRefused(i, r.reason, "invalid", 422, "event") from None
        return self.peek_validated(parsed)

    def peek_validated(self, events: list[Event], wait: bool = True) -> np.ndarray | None:
        """``peek`` of events already validated by the same rules (``live.lines.as_event`` of a
        ``LogEvent``: what the API, holding the stream's key, sends), not validated again; the engine
        still refuses a field of the wrong type (``BadEvent``: 422). ``wait=False``: None at once when the
        state's lock is held (a batch, a checkpoint), so a caller on an event loop can peek a few events
        in place and hand the rest to a thread."""
        if not self.lock.acquire(blocking=wait):
            return None
        try:
            # one kernel call for the batch: each event peeked against the same state, as alone
            rows = self.engine.peek_many(events) if events else np.zeros((0, len(OnlineEngine.FEATURES)))
        except TooLate as error:
            msg = f"{error}: its context is no longer kept; ask with context=false"
            raise PeekRefused(error.index, msg, "too_late", 409, "timestamp") from None
        except BadEvent as error:
            field = "metrics" if error.reason in _METRIC_REASONS else "event"
            raise PeekRefused(error.index, str(error), error.reason, 422, field) from None
        finally:
            self.lock.release()
        return np.asarray(rows, dtype=np.float64).reshape(len(events), len(OnlineEngine.FEATURES))

    def _status(self, now: float, kinds: Counter, accepted: int) -> dict:
        mark = self.engine.high_water_mark
        pair = self.models.scoring()
        return {
            "lag_events": None if self.lag is None else self.lag[0],
            "lag_seconds": None if self.lag is None else self.lag[1],
            "high_water_ts": None if mark is None else mark[0],
            "high_water_event_id": None if mark is None else mark[1],
            "events": self.seq + accepted,
            "refused": dict(self.refused + kinds),
            "models": pair.versions if pair else None,
            "unscored": None if pair else self.models.problem,
            "open_incidents": None if self.incidents is None else self.incidents.open_incidents(),
            "waiting_template_events": None
            if self.incidents is None
            else self.incidents.waiting_template_events(),
            "timings": {**self.timings.summary(), **self._elsewhere()},
            "at": now,
        }

    def _elsewhere(self) -> dict:
        """The figures of the work done beside the batches: the store's WAL checkpoints and the live
        incidents' background root-cause passes."""
        figures = getattr(self.incidents, "background_figures", None)
        return {
            "wal_checkpoints": self.store.wal_checkpoints(),
            "rca_in_background": None if figures is None else {k: round(v, 3) for k, v in figures.items()},
        }

    def status(self) -> dict:
        """What ``GET /status`` answers."""
        with self.lock:
            described = self._status(time.time(), Counter(), 0)
            described.update(
                {
                    "feature_set_version": OnlineEngine.FEATURE_SET_VERSION,
                    "engine_counters": dict(self.engine.counters),
                    "checkpoint_seq": self.checkpoint_seq,
                    "since_checkpoint": self.since_checkpoint,
                    "restored_from": self.restored_from,
                    "model_swaps": self.models.swaps,
                    "broken": self.broken,
                    "started_at": self.started_at,
                    "timings": {**self.timings.describe(), **self._elsewhere()},
                }
            )
        return described


def _write_checkpoint(engine: OnlineEngine, path: Path) -> None:
    engine.checkpoint(path)
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _result(event_id: str | None, outcome: str, reason: str | None) -> dict:
    return {
        "event_id": event_id,
        "outcome": outcome,
        "reason": reason,
        "isolation_forest": None,
        "local_outlier_factor": None,
        "ensemble": None,
        "if_flag": None,
        "lof_flag": None,
        "is_anomaly": None,
    }


def _fill(results: list[dict], at: Iterable[int], scores: Scores) -> None:
    columns = {
        "isolation_forest": scores.isolation_forest.tolist(),
        "local_outlier_factor": scores.local_outlier_factor.tolist(),
        "ensemble": scores.ensemble.tolist(),
        "if_flag": scores.if_flag.tolist(),
        "lof_flag": scores.lof_flag.tolist(),
        "is_anomaly": scores.is_anomaly.tolist(),
    }
    for k, i in enumerate(at):
        results[i].update({name: values[k] for name, values in columns.items()})


def flagged_frame(events: list[Event], values: np.ndarray, scores: Scores | None, at: np.ndarray):
    """The flagged events as the incident grouping reads them (``build_incidents``' columns)."""
    import polars as pl

    if scores is None:
        scores = Scores(*(np.empty(0),) * 6)
    frame = pl.DataFrame(
        {
            "partition_date": [from_micros(e.ts).date() for e in events],
            "ts": pl.Series([e.ts for e in events], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "event_id": [e.event_id for e in events],
            "source_service": [e.source_service for e in events],
            "user_id": [e.user_id for e in events],
            "ip_address": [e.ip_address for e in events],
            "correlation_id": [e.correlation_id for e in events],
            "template": [template(e.message) for e in events],
        },
        schema_overrides={"partition_date": pl.Date},
    )
    features = pl.DataFrame(values, schema=list(OnlineEngine.FEATURES), orient="row")
    scored = pl.DataFrame(
        {
            "ensemble_score": scores.ensemble[at],
            "isolation_forest": scores.isolation_forest[at],
            "local_outlier_factor": scores.local_outlier_factor[at],
        }
    )
    return pl.concat([frame, features, scored], how="horizontal")
