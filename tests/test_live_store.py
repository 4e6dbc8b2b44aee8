"""The live store: one transaction per batch, offsets with results, readers beside the writer."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import orjson
import pytest

from bankanom_pipeline.live.store import EVENT_COLUMNS, LiveStore, LiveStoreError
from bankanom_pipeline.online.events import Event

DAY_US = 86_400 * 1_000_000
T0 = 1_767_225_600 * 1_000_000  # 2026-01-01 00:00 UTC


def _event(i: int, ts: int | None = None) -> Event:
    return Event(
        event_id=f"E{i:06d}",
        ts=T0 + i * 1_000_000 if ts is None else ts,
        source_service="auth",
        log_level="INFO",
        message=f"login ok for USR-{i}",
        correlation_id=None,
        user_id=f"USR-{i % 7}",
        ip_address="10.0.0.1",
        geo_location="EU-West",
        metrics={"response_time_ms": 12.5 + i} if i % 2 else None,
    )


def _row(seq: int, e: Event, offset: str) -> tuple:
    values = {
        "seq": seq,
        "source": "mock",
        "source_offset": offset,
        "partition_date": time.strftime("%Y-%m-%d", time.gmtime(e.ts // 1_000_000)),
        "status": "ingested",
        "metrics": None if e.metrics is None else orjson.dumps(e.metrics).decode(),
        "scored_at": time.time(),
        **{k: v for k, v in e._asdict().items() if k != "metrics"},
    }
    return tuple(values.get(c) for c in EVENT_COLUMNS)


def test_round_trip(tmp_path):
    path = tmp_path / "live.sqlite"
    events = [_event(i) for i in range(25)]
    with LiveStore(path) as store:
        assert store.offset("mock") is None and store.last_seq() == 0
        store.commit(
            [_row(i + 1, e, str(i)) for i, e in enumerate(events[:10])],
            refused=[("mock", "10", "E-bad", "invalid: log_level", '{"x":1}', time.time())],
            offsets={"mock": "9"},
            meta={"status": {"events": 10}, "feature_set_version": "abc"},
        )
        store.commit([_row(i + 1, e, str(i)) for i, e in enumerate(events[10:], 10)], offsets={"mock": "24"})
    with LiveStore(path) as store:  # reopened: everything was durable
        assert store.offset("mock") == "24"
        assert store.last_seq() == 25
        assert store.meta("feature_set_version") == "abc"
        assert store.meta_json("status") == {"events": 10}
        assert store.counts() == {"events": 25, "refused": 1}
        assert [e for _, e in store.events_after(0, batch=7)] == events  # paged reads join up
        assert [s for s, _ in store.events_after(20)] == [21, 22, 23, 24, 25]


def test_a_failing_batch_leaves_nothing(tmp_path):
    with LiveStore(tmp_path / "live.sqlite") as store:
        store.commit([_row(1, _event(1), "1")], offsets={"mock": "1"})

        def extra(cur: sqlite3.Cursor) -> None:
            raise RuntimeError("incidents failed")

        with pytest.raises(RuntimeError):
            store.commit([_row(2, _event(2), "2")], offsets={"mock": "2"}, meta={"k": "v"}, extra=extra)
        assert store.offset("mock") == "1" and store.last_seq() == 1 and store.meta("k") is None
        with pytest.raises(sqlite3.IntegrityError):  # the same event twice is a bug, never a second row
            store.commit([_row(3, _event(1), "3")], offsets={"mock": "3"})
        assert store.offset("mock") == "1" and store.counts()["events"] == 1


def test_reader_in_another_process_while_the_writer_commits(tmp_path):
    path = tmp_path / "live.sqlite"
    writer = LiveStore(path)
    writer.commit([_row(1, _event(1), "1")], offsets={"mock": "1"})
    reader_code = f"""
import sys, time
from bankanom_pipeline.live.store import LiveStore
r = LiveStore({str(path)!r}, readonly=True)
seen = []
print("ready", flush=True)
deadline = time.time() + 20
while time.time() < deadline:
    # one statement is one snapshot: results and offset come from the same commit
    n, offset = r.con.execute(
        "SELECT (SELECT max(seq) FROM events), (SELECT source_offset FROM offsets WHERE source = 'mock')"
    ).fetchone()
    assert offset == str(n), (offset, n)   # results and offset always agree
    seen.append(n)
    if n >= 200: break
print(min(seen), max(seen), len(set(seen)))
"""
    proc = subprocess.Popen([sys.executable, "-c", reader_code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    for i in range(2, 201):
        writer.commit([_row(i, _event(i), str(i))], offsets={"mock": str(i)})
        if i % 20 == 0:
            time.sleep(0.01)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    _, high, distinct = map(int, out.split())
    assert high == 200 and distinct > 1  # it read while commits went on, never a half batch
    reader = LiveStore(path, readonly=True)
    with pytest.raises(LiveStoreError):
        reader.commit([], offsets={"mock": "x"})
    with pytest.raises(sqlite3.OperationalError):  # read-only at the SQLite level too
        reader.con.execute("DELETE FROM events")
    writer.close()


def test_reader_needs_the_file(tmp_path):
    with pytest.raises(LiveStoreError, match="start bankanom stream"):
        LiveStore(tmp_path / "absent.sqlite", readonly=True)


def test_prune_keeps_the_live_days(tmp_path):
    with LiveStore(tmp_path / "live.sqlite") as store:
        rows = [_row(i + 1, _event(i, T0 + i * DAY_US), str(i)) for i in range(3)]
        store.commit(rows, refused=[("mock", "0", None, "future", "{}", T0 / 1e6)])
        assert store.prune("2026-01-02") == {"events": 1, "refused": 1}
        assert [e.event_id for _, e in store.events_after(0)] == ["E000001", "E000002"]
        seen = []
        assert store.prune("2026-02-01", extra=lambda cur, day: seen.append(day) or {"mine": 0}) == {
            "events": 2,
            "refused": 0,
            "mine": 0,
        }
        assert seen == ["2026-02-01"] and store.counts()["events"] == 0
        assert store.last_seq() == 3  # a seq is never handed out twice, even once its rows are gone


def test_the_wal_is_copied_back_by_a_thread_not_inside_the_commits(tmp_path):
    """With ``wal_checkpoint_every_s`` the writer's commits never checkpoint (SQLite's autocheckpoint is
    off); a thread of the store copies the WAL back while commits go on, and a reader sees every commit."""
    path = tmp_path / "live.sqlite"
    events = [_event(i) for i in range(3000)]
    with LiveStore(path, wal_checkpoint_every_s=0.02) as store:
        assert store.con.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        for k in range(0, 3000, 300):
            store.commit([_row(i + 1, e, str(i)) for i, e in enumerate(events[k : k + 300], k)])
            time.sleep(0.03)
        # two runs after the last commit: the first of them copies whatever was left (on a slow machine
        # earlier runs may have copied it all, so the last run's own counts can be 0 of 0)
        after_commits = store.wal_checkpoints()["runs"]
        deadline = time.monotonic() + 30
        while store.wal_checkpoints()["runs"] < max(3, after_commits + 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        figures = store.wal_checkpoints()
        assert figures["runs"] >= max(3, after_commits + 2) and figures["errors"] == 0
        busy, wal_pages, copied = figures["last_busy_wal_pages_copied"]
        assert busy == 0 and copied == wal_pages  # no reader held it back: all of it copied
        # so the database file alone, without its WAL, holds every commit
        alone = tmp_path / "alone.sqlite"
        alone.write_bytes(path.read_bytes())
        assert sqlite3.connect(alone).execute("SELECT count(*) FROM events").fetchone()[0] == 3000
        with LiveStore(path, readonly=True) as reader:
            assert reader.counts()["events"] == 3000
    assert LiveStore(path).wal_checkpoints() is None  # without the option: SQLite's own, in the commit
