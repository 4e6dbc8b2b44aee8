"""The stream scorer's live results beside the batch snapshot: scores and incidents read from the live
store (``live_dir()/live.sqlite``, SQLite in WAL mode, opened read-only: the API never waits for the
stream's commits nor they for the API), and the rule that decides what of them is shown.

The merge rule. The batch run is the system of record: for every event the published snapshot holds,
its row is served and the live one is not; a live incident is hidden once the snapshot holds its first
event (the batch then says which incident, if any, that event belongs to; with the stable ids of
``detection/incident_ids`` a live incident the batch confirms keeps its id). Live rows fill the rest:
days the snapshot does not cover, and events of covered days it does not hold (lines delivered after
the batch read the day). Incidents merged into an older one (``merged_into``) are never listed. Each
row is marked ``live``: true from the live store, false from the snapshot.

Which live events the snapshot holds is worked out once per snapshot and then for new live rows only,
and the live side's totals are kept per set of filters (``live_shadow``).
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import HTTPException, status

from bankanom_api.live_shadow import Shadows, visible
from bankanom_api.merge import Key, Sorted, marked, merged_page, rows_of
from bankanom_api.responses import as_dicts
from bankanom_api.state import Snapshot
from bankanom_pipeline.live.store import LiveStore

log = logging.getLogger("bankanom_api")

STORE = "live.sqlite"
_EPOCH = dt.datetime(1970, 1, 1)
_US = dt.timedelta(microseconds=1)

_SCORE_COLUMNS = """event_id, ts, partition_date, source_service, user_id, ip_address, correlation_id,
    isolation_forest AS if_score, local_outlier_factor AS lof_score, ensemble_score, if_flag, lof_flag,
    is_anomaly, json_extract(model_versions, '$.isolation_forest') AS if_version,
    json_extract(model_versions, '$.local_outlier_factor') AS lof_version"""
_LIST_COLUMNS = ("services", "users", "ips")
INCIDENT_SUMMARY = (
    "incident_id",
    "partition_date",
    "start_ts",
    "end_ts",
    "event_count",
    "severity",
    "status",
    "reported",
    "services",
    "user_count",
    "ip_count",
    "max_score",
    "mean_score",
    "origin_service",
    "origin_entity",
    "scenario_id",
    "scenario_name",
    "scenario_confidence",
)


def micros(value: dt.datetime) -> int:
    """A naive UTC time (the snapshot's) as µs since the epoch (the live store's)."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return (value - _EPOCH) // _US


def from_micros(value: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=value)


def score_key(row: dict) -> Key:
    """``ts DESC, event_id``: newest first."""
    return (-micros(row["ts"]), row["event_id"])


def incident_key(row: dict) -> Key:
    """``start_ts DESC, incident_id``."""
    return (-micros(row["start_ts"]), row["incident_id"])


def scores_row(row: dict) -> dict:
    row["ts"] = from_micros(row["ts"])
    row["partition_date"] = dt.date.fromisoformat(row["partition_date"])
    for flag in ("if_flag", "lof_flag", "is_anomaly"):
        row[flag] = bool(row[flag])
    return row


def incident_row(row: dict) -> dict:
    """A live incident as the snapshot's ``incidents`` row reads (lists as lists, times as datetimes)."""
    for name in ("start_ts", "end_ts"):
        row[name] = from_micros(row[name])
    row["partition_date"] = dt.date.fromisoformat(row["partition_date"])
    for name in _LIST_COLUMNS:
        if name in row:
            row[name] = orjson.loads(row[name]) if row[name] else []
    row["reported"] = bool(row["reported"])
    return row


def unreadable(path: Path, error: Exception) -> HTTPException:
    log.error("the live store %s cannot be read: %s", path, error)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, f"the live store {path} cannot be read: {error}"
    )


class LiveReader:
    """The live store, read-only, for one API process (several threads)."""

    def __init__(self, live_dir: Path):
        self.path = Path(live_dir) / STORE
        self._shadows = Shadows(self._warm, self.reading)
        self._batch_ids: tuple[str, frozenset[str]] | None = None
        self._hidden: tuple[str, dict[str, bool]] | None = None

    # -- connections ---------------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection | None]:
        """A connection in one read transaction (counts and pages agree with each other), or None when
        the stream has not created its store (no live results: the snapshot alone is served)."""
        if not self.path.exists():
            yield None
            return
        try:
            store = LiveStore(self.path, readonly=True)
        except (sqlite3.Error, OSError) as error:
            raise unreadable(self.path, error) from None
        con = store.con
        con.row_factory = sqlite3.Row
        try:
            con.execute("CREATE TEMP TABLE hidden (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL)")
            con.execute("BEGIN")
            yield con
        except sqlite3.Error as error:
            raise unreadable(self.path, error) from None
        finally:
            store.close()

    def status(self) -> dict | None:
        """The stream's status as its last commit wrote it (``meta.status``), with the live incidents
        the store holds (``incidents``: not merged into another); None without a store."""
        with self.reading() as con:
            if con is None:
                return None
            row = con.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
            found = orjson.loads(row[0]) if row else {}
            if _has_incidents(con):
                found["incidents"] = con.execute(
                    "SELECT count(*) FROM incidents WHERE merged_into IS NULL"
                ).fetchone()[0]
            return found

    # -- scores --------------------------------------------------------------------------------------

    def scores(
        self, snap: Snapshot | None, where: list[tuple[str, object]], limit: int, offset: int
    ) -> tuple[int, list[dict]]:
        """The page of scored events, batch and live, newest first; ``where``: (SQL condition on the
        ScoredEvent columns with one ``?`` or none, value or None when not filtered)."""
        with self.reading() as con:
            live = None
            if con is not None:  # first: the snapshot served may be the previous one (live_shadow)
                snap, live = self._live_scores(con, snap, where)
            batch = _batch_scores(snap, where) if snap is not None and snap.has("scored_events") else None
            if batch is None and live is None:
                return 0, []
            empty = rows_of([], score_key)
            total, rows = merged_page(batch or empty, live or empty, score_key, limit, offset)
        return total, rows

    def _warm(self, con: sqlite3.Connection, snap: Snapshot, shadow) -> None:
        """The unfiltered tally of a new snapshot's shadow, before it serves (the plain /scores/latest)."""
        shown, bounds = visible(con, shadow.runs)
        oldest = con.execute("SELECT coalesce(min(seq), 0) FROM events").fetchone()[0]
        self._shadows.tally(
            con, (shadow.identity, oldest), (), f"ensemble_score IS NOT NULL AND {shown}", bounds, shadow.seq
        )

    def _live_scores(
        self, con: sqlite3.Connection, snap: Snapshot | None, where
    ) -> tuple[Snapshot | None, Sorted]:
        clauses, params, used = ["ensemble_score IS NOT NULL"], [], []
        for sql, value in where:
            if value is None:
                continue
            live_sql, live_value = _live_condition(sql, value)
            clauses.append(live_sql)
            used.append((sql, value))
            if "?" in live_sql:
                params.append(live_value)
        identity = (snap.pointer["file"] if snap is not None else "", self.path.stat().st_ino)
        if snap is not None and snap.has("scored_events"):
            snap, shadow = self._shadows.settle(con, snap, identity)
            identity = shadow.identity
            shown, bounds = visible(con, shadow.runs)
            clauses.append(shown)
            params += bounds
            upto = shadow.seq
        else:
            upto = con.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        where_sql = " AND ".join(clauses)
        oldest = con.execute("SELECT coalesce(min(seq), 0) FROM events").fetchone()[0]
        tally = self._shadows.tally(con, (identity, oldest), tuple(used), where_sql, params, upto)
        # ``+seq``: the bound is not a range of the table to SQLite, so the page walks the ts index
        # newest first (1.6 ms for 1,000 of 400,000 rows) instead of sorting every row up to ``upto``
        bounded = f"{where_sql} AND +seq <= ?"

        def fetch(limit: int, offset: int) -> list[dict]:
            found = con.execute(
                f"SELECT {_SCORE_COLUMNS} FROM events WHERE {bounded} ORDER BY ts DESC, event_id LIMIT ? OFFSET ?",
                [*params, upto, limit, offset],
            ).fetchall()
            return marked([scores_row(dict(r)) for r in found], True)

        return snap, Sorted(
            tally.count,
            fetch,
            lambda: (-tally.first[0], tally.first[1]),
            lambda: (-tally.last[0], tally.last[1]),
        )

    # -- incidents -----------------------------------------------------------------------------------

    def incidents(
        self, snap: Snapshot | None, where: list[tuple[str, object]], columns: str, limit: int, offset: int
    ) -> tuple[int, list[dict]]:
        """The page of incidents, batch and live, newest first (``where`` as for ``scores``, on the
        incidents columns)."""
        with self.reading() as con:
            batch = (
                _batch_incidents(snap, where, columns) if snap is not None and snap.has("incidents") else None
            )
            live = self._live_incidents(con, snap, where) if con is not None and _has_incidents(con) else None
            if batch is None and live is None:
                return 0, []
            empty = rows_of([], incident_key)
            return merged_page(batch or empty, live or empty, incident_key, limit, offset)

    def _live_incidents(self, con: sqlite3.Connection, snap: Snapshot | None, where) -> Sorted:
        """The live incidents the merge rule shows, as a sorted source: their keys are read (and whether
        the snapshot hides each, worked out once per snapshot and incident), the full rows of a page
        only."""
        clauses, params = ["merged_into IS NULL"], []
        for sql, value in where:
            if value is None:
                continue
            live_sql, live_value = _live_condition(sql, value)
            clauses.append(live_sql)
            if "?" in live_sql:
                params.append(live_value)
        found = con.execute(
            f"SELECT start_ts, incident_id, first_event_id FROM incidents "
            f"WHERE {' AND '.join(clauses)} ORDER BY start_ts DESC, incident_id",
            params,
        ).fetchall()
        if snap is not None and found:
            hidden = self._hidden_incidents(snap, found)
            found = [r for r in found if not hidden[r[1]]]
        keys = [(-r[0], r[1]) for r in found]

        def fetch(limit: int, offset: int) -> list[dict]:
            ids = [ident for _, ident in keys[offset : offset + limit]]
            rows: dict[str, dict] = {}
            for start in range(0, len(ids), 500):  # the console asks for every visible incident at once
                part = ids[start : start + 500]
                for r in con.execute(
                    f"SELECT {', '.join(INCIDENT_SUMMARY)} FROM incidents "
                    f"WHERE incident_id IN ({', '.join('?' * len(part))})",
                    part,
                ):
                    rows[r["incident_id"]] = incident_row(dict(r))
            return marked([rows[i] for i in ids], True)

        return Sorted(len(keys), fetch, lambda: keys[0], lambda: keys[-1])

    def _batch_incident_ids(self, snap: Snapshot) -> frozenset[str]:
        cached = self._batch_ids
        if cached is None or cached[0] != snap.pointer["file"]:
            ids = (
                frozenset(r[0] for r in snap.query("SELECT incident_id FROM incidents")[1])
                if snap.has("incidents")
                else frozenset()
            )
            cached = self._batch_ids = (snap.pointer["file"], ids)
        return cached[1]

    def _hidden_incidents(self, snap: Snapshot, found: list) -> dict[str, bool]:
        """Per live incident id, whether ``snap`` hides it (it holds the id, or the incident's first
        event): fixed for a snapshot and an incident, so only incidents not seen with this snapshot are
        looked up."""
        cached = self._hidden
        if cached is None or cached[0] != snap.pointer["file"]:
            cached = self._hidden = (snap.pointer["file"], {})
        hidden = cached[1]
        new = [r for r in found if r[1] not in hidden]
        if new:
            held_ids = self._batch_incident_ids(snap)
            held_events = _held_events(snap, [r[2] for r in new])
            for _, ident, first_event in new:
                hidden[ident] = ident in held_ids or first_event in held_events
        return hidden

    def visible_incidents(self, snap: Snapshot | None, where: list[tuple[str, object]]) -> list[dict]:
        """Every live incident the merge rule shows beside ``snap``, newest first (the console's list)."""
        with self.reading() as con:
            if con is None or not _has_incidents(con):
                return []
            found = self._live_incidents(con, snap, where)
            return found.fetch(found.total, 0)

    def event(self, event_id: str) -> tuple[dict, dict, list[str]] | None:
        """A live event as the console shows one: its scored fields, its log line's other fields and the
        live incidents holding it; None when the store does not hold it."""
        with self.reading() as con:
            if con is None:
                return None
            found = con.execute(
                f"SELECT {_SCORE_COLUMNS}, log_level, message, geo_location, metrics, status, unscored "
                "FROM events WHERE event_id = ?",
                [event_id],
            ).fetchone()
            if found is None:
                return None
            row = dict(found)
            raw = {
                k: row.pop(k)
                for k in ("log_level", "message", "geo_location", "metrics", "status", "unscored")
            }
            holding = []
            if _has_incidents(con):
                holding = [
                    r[0]
                    for r in con.execute(
                        "SELECT incident_id FROM incident_events WHERE event_id = ?", [event_id]
                    )
                ]
            row["ts"], row["partition_date"] = (
                from_micros(row["ts"]),
                dt.date.fromisoformat(row["partition_date"]),
            )
            for flag in ("if_flag", "lof_flag", "is_anomaly"):
                row[flag] = None if row[flag] is None else bool(row[flag])  # None: unscored (raw says why)
            return row, raw, holding

    def incident(self, incident_id: str, events: int = 100) -> dict | None:
        """A live incident with its first ``events`` events by time, or None; a merged one carries
        ``merged_into``."""
        with self.reading() as con:
            if con is None or not _has_incidents(con):
                return None
            found = con.execute("SELECT * FROM incidents WHERE incident_id = ?", [incident_id]).fetchone()
            if found is None:
                return None
            row = incident_row(dict(found))
            events = con.execute(
                """SELECT e.event_id, e.ts, e.source_service, e.user_id, e.ip_address, e.ensemble_score
                   FROM incident_events AS m JOIN events AS e USING (event_id)
                   WHERE m.incident_id = ? ORDER BY e.ts, e.event_id LIMIT ?""",
                [incident_id, events],
            ).fetchall()
            row["events"] = [{**dict(e), "ts": from_micros(e["ts"])} for e in events]
            return row


def _has_incidents(con: sqlite3.Connection) -> bool:
    return (
        con.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('incidents', 'incident_events')"
        ).fetchone()[0]
        == 2
    )


def _live_condition(sql: str, value: object) -> tuple[str, object]:
    """A snapshot filter as the live store reads it: times as µs, flags as 0/1."""
    if isinstance(value, dt.datetime):
        return sql, micros(value)
    if sql == "is_anomaly":
        return "is_anomaly = 1", None
    return sql, value


def _held_events(snap: Snapshot, event_ids: list[str]) -> set[str]:
    """Which of ``event_ids`` the snapshot's ``scored_events`` holds (one query, not cached: the list is
    the request's or the new live rows')."""
    if not event_ids or not snap.has("scored_events"):
        return set()
    cursor = snap.con.cursor()
    try:
        cursor.execute(
            "SELECT event_id FROM scored_events WHERE event_id IN (SELECT unnest(?::VARCHAR[]))", [event_ids]
        )
        return {r[0] for r in cursor.fetchall()}
    finally:
        cursor.close()


def _batch_source(snap: Snapshot, table: str, columns: str, where, order: str, key_columns: str) -> Sorted:
    used = [(sql, value) for sql, value in where if value is not None]
    where_sql = ("WHERE " + " AND ".join(sql for sql, _ in used)) if used else ""
    params = [value for sql, value in used if "?" in sql]
    total = snap.query(f"SELECT count(*) FROM {table} {where_sql}", params)[1][0][0]
    reverse = ", ".join(
        f"{c.split()[0]} {'ASC' if c.endswith('DESC') else 'DESC'}" for c in order.split(", ")
    )

    def fetch(limit: int, offset: int) -> list[dict]:
        names, rows = snap.query(
            f"SELECT {columns} FROM {table} {where_sql} ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return marked(as_dicts(names, rows), False)

    def extreme(by: str) -> Key:
        ts, ident = snap.query(
            f"SELECT {key_columns} FROM {table} {where_sql} ORDER BY {by} LIMIT 1", params
        )[1][0]
        return (-micros(ts), ident)

    return Sorted(total, fetch, lambda: extreme(order), lambda: extreme(reverse))


def _batch_scores(snap: Snapshot, where) -> Sorted:
    return _batch_source(snap, "scored_events", "*", where, "ts DESC, event_id ASC", "ts, event_id")


def _batch_incidents(snap: Snapshot, where, columns: str) -> Sorted:
    return _batch_source(
        snap, "incidents", columns, where, "start_ts DESC, incident_id ASC", "start_ts, incident_id"
    )


def summary_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in (*INCIDENT_SUMMARY, "live")}
