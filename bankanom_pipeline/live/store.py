"""The live store: the stream scorer's results in one SQLite file (``live_dir()/live.sqlite``).

One writer (``bankanom stream``) and any number of readers in other processes (the API), in WAL mode, so
a reader never waits for the writer nor the writer for a reader, and nothing touches the warehouse's lock.
Each batch is ONE transaction: its accepted events with their scores, the lines it refused and why, the
source offset it reached, the status, and whatever the incidents hook writes. A crash therefore leaves
either all of a batch or none of it, and the committed offset says exactly where the source resumes.

``synchronous=NORMAL``: a commit survives the process being killed (the WAL is in the OS's cache); a
power loss can lose the last commits, which the source then delivers again (docs/live.md).
"""

from __future__ import annotations

import calendar
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import orjson

from bankanom_pipeline.online.events import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY,
  source TEXT NOT NULL, source_offset TEXT NOT NULL,
  event_id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL, partition_date TEXT NOT NULL,
  source_service TEXT, log_level TEXT, message TEXT, correlation_id TEXT, user_id TEXT,
  ip_address TEXT, geo_location TEXT, metrics TEXT,
  status TEXT NOT NULL,
  isolation_forest REAL, local_outlier_factor REAL, ensemble_score REAL,
  if_flag INTEGER, lof_flag INTEGER, is_anomaly INTEGER,
  model_versions TEXT,
  unscored TEXT,
  emitted_at REAL, scored_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS refused (
  id INTEGER PRIMARY KEY, source TEXT NOT NULL, source_offset TEXT, event_id TEXT,
  reason TEXT NOT NULL, line TEXT, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (
  source TEXT PRIMARY KEY, source_offset TEXT NOT NULL, committed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# the columns of ``events`` in the order ``commit`` takes each row's values
EVENT_COLUMNS = (
    "seq",
    "source",
    "source_offset",
    "event_id",
    "ts",
    "partition_date",
    "source_service",
    "log_level",
    "message",
    "correlation_id",
    "user_id",
    "ip_address",
    "geo_location",
    "metrics",
    "status",
    "isolation_forest",
    "local_outlier_factor",
    "ensemble_score",
    "if_flag",
    "lof_flag",
    "is_anomaly",
    "model_versions",
    "unscored",
    "emitted_at",
    "scored_at",
)
REFUSED_COLUMNS = ("source", "source_offset", "event_id", "reason", "line", "at")

_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
_INSERT_REFUSED = (
    f"INSERT INTO refused ({', '.join(REFUSED_COLUMNS)}) VALUES ({', '.join('?' * len(REFUSED_COLUMNS))})"
)


class LiveStoreError(RuntimeError):
    """The live store cannot be opened as asked (a reader before any writer created it)."""


def _text(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


class LiveStore:
    """The live store at ``path``: the writer (creates the file and schema) or, ``readonly``, a reader.

    ``extra_schema``: DDL of tables other modules write in the same transactions (live incidents).
    A connection is not shared between threads at the same time: the writer's caller serializes
    commits (the scorer's lock); a reader per thread, or one guarded by the caller.
    """

    def __init__(
        self,
        path: str | Path,
        readonly: bool = False,
        extra_schema: str | None = None,
        wal_checkpoint_every_s: float | None = None,
    ):
        """``wal_checkpoint_every_s`` (the writer): copy the WAL back into the database from a thread of
        its own at that interval instead of inside the commit that crosses SQLite's threshold (1,000
        pages), which then waited for the copy and its fsync (None: SQLite's own, in the commit)."""
        self.path, self.readonly = Path(path), readonly
        self._checkpointer: _WalCheckpointer | None = None
        if readonly:
            if not self.path.exists():
                raise LiveStoreError(f"no live store at {self.path}: start bankanom stream")
            self.con = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            self.con.execute("PRAGMA busy_timeout=5000")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.con.execute("PRAGMA busy_timeout=5000")
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.executescript(SCHEMA + (extra_schema or ""))
        if wal_checkpoint_every_s is not None:
            self.con.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = _WalCheckpointer(self.path, wal_checkpoint_every_s)
            self._checkpointer.start()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.con.close()

    def wal_checkpoints(self) -> dict | None:
        """The background WAL checkpoints' figures (None when SQLite runs them in the commits)."""
        return None if self._checkpointer is None else self._checkpointer.describe()

    def __enter__(self) -> LiveStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the writer ----------------------------------------------------------------------------------

    def commit(
        self,
        rows: Sequence[Sequence],
        refused: Sequence[Sequence] = (),
        offsets: Mapping[str, str] | None = None,
        meta: Mapping[str, object] | None = None,
        extra: Callable[[sqlite3.Cursor], None] | None = None,
    ) -> None:
        """One transaction: ``rows`` (values in ``EVENT_COLUMNS`` order), ``refused`` (``REFUSED_COLUMNS``
        order), the sources' new ``offsets``, ``meta`` values (text, or JSON-encoded) and ``extra``'s
        writes. All of it lands or none of it does."""
        if self.readonly:
            raise LiveStoreError("a read-only live store cannot commit")
        now = time.time()
        cur = self.con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                cur.executemany(_INSERT_EVENT, rows)
            if refused:
                cur.executemany(_INSERT_REFUSED, refused)
            if offsets:
                cur.executemany(
                    "INSERT INTO offsets (source, source_offset, committed_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(source) DO UPDATE SET source_offset = excluded.source_offset, "
                    "committed_at = excluded.committed_at",
                    [(name, offset, now) for name, offset in offsets.items()],
                )
            if meta:
                cur.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [(key, _text(value)) for key, value in meta.items()],
                )
            if extra is not None:
                extra(cur)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            cur.close()

    def prune(
        self, before_date: str, extra: Callable[[sqlite3.Cursor, str], dict[str, int]] | None = None
    ) -> dict[str, int]:
        """Delete the events of days before ``before_date`` (YYYY-MM-DD) and the refused lines older
        than its midnight, and whatever ``extra`` deletes for that date in the same transaction (the live
        incidents): the live store holds the live days, the warehouse the history. Returns how many rows
        went from each table. ``seq`` is never handed out again: the highest one is kept in ``meta``."""
        if self.readonly:
            raise LiveStoreError("a read-only live store cannot prune")
        cur = self.con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(
                "INSERT OR REPLACE INTO meta (key, value) SELECT 'seq_floor', CAST(max(seq) AS TEXT) FROM events "
                "HAVING max(seq) IS NOT NULL"
            )
            events = cur.execute("DELETE FROM events WHERE partition_date < ?", (before_date,)).rowcount
            midnight = calendar.timegm(time.strptime(before_date, "%Y-%m-%d"))
            refused = cur.execute("DELETE FROM refused WHERE at < ?", (midnight,)).rowcount
            counts = {"events": events, "refused": refused, **(extra(cur, before_date) if extra else {})}
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return counts

    # -- reads (writer and readers) ------------------------------------------------------------------

    def offset(self, source: str) -> str | None:
        """The offset of ``source`` the last commit reached, or None if nothing was committed from it."""
        row = self.con.execute("SELECT source_offset FROM offsets WHERE source = ?", (source,)).fetchone()
        return None if row is None else row[0]

    def last_seq(self) -> int:
        """The highest ``seq`` ever committed (0 for a new store), pruned rows included."""
        return self.con.execute(
            "SELECT max(coalesce((SELECT max(seq) FROM events), 0), "
            "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'seq_floor'), 0))"
        ).fetchone()[0]

    def meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def meta_json(self, key: str) -> object | None:
        value = self.meta(key)
        return None if value is None else orjson.loads(value)

    def events_after(self, seq: int, batch: int = 10_000) -> Iterator[tuple[int, Event]]:
        """``(seq, Event)`` of every committed event after ``seq``, in commit order (the order the engine
        ingested them), read ``batch`` rows at a time so a long tail is never held in memory at once."""
        fields = ", ".join(Event._fields)
        while True:
            rows = self.con.execute(
                f"SELECT seq, {fields} FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, batch)
            ).fetchall()
            for row in rows:
                metrics = row[10]
                yield row[0], Event(*row[1:10], None if metrics is None else orjson.loads(metrics))
            if len(rows) < batch:
                return
            seq = rows[-1][0]

    def counts(self) -> dict[str, int]:
        """Rows per table of the store's own: events, refused."""
        events = self.con.execute("SELECT count(*) FROM events").fetchone()[0]
        refused = self.con.execute("SELECT count(*) FROM refused").fetchone()[0]
        return {"events": events, "refused": refused}


class _WalCheckpointer(threading.Thread):
    """``PRAGMA wal_checkpoint(PASSIVE)`` every ``every_s`` on a connection of its own: it copies what no
    reader still needs from the WAL into the database (and fsyncs it) while the writer goes on committing
    (the sqlite3 module lets go of the GIL while SQLite works). PASSIVE never waits for a reader or the
    writer; what it could not copy is copied by the next one, and the WAL restarts from its beginning
    once a checkpoint has copied all of it. A kill leaves the WAL as it was: the next open replays it."""

    def __init__(self, path: Path, every_s: float):
        super().__init__(name="bankanom-live-wal-checkpoint", daemon=True)
        self.path, self.every_s = path, every_s
        self._stop_event = threading.Event()
        self.runs, self.seconds, self.max_s, self.errors = 0, 0.0, 0.0, 0
        self.last: tuple[int, int, int] | None = None  # (busy, WAL pages, pages copied) of the last run

    def run(self) -> None:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            con.execute("PRAGMA busy_timeout=0")
            while not self._stop_event.wait(self.every_s):
                began = time.perf_counter()
                try:
                    self.last = tuple(con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())
                except sqlite3.Error as error:  # busy: another checkpoint; the next run retries
                    self.errors += 1
                    logging.getLogger("bankanom.stream").debug("WAL checkpoint: %s", error)
                    continue
                took = time.perf_counter() - began
                self.runs, self.seconds, self.max_s = (
                    self.runs + 1,
                    self.seconds + took,
                    max(self.max_s, took),
                )
        finally:
            con.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(30)

    def describe(self) -> dict:
        return {
            "every_s": self.every_s,
            "runs": self.runs,
            "seconds": round(self.seconds, 3),
            "max_s": round(self.max_s, 4),
            "errors": self.errors,
            "last_busy_wal_pages_copied": self.last,
        }
