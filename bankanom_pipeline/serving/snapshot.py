"""Read-only snapshots of the warehouse for the API (no Dagster here).

DuckDB lets one process write a file or many read it, never both, so the API cannot read the live
warehouse while a run writes it. Instead the pipeline publishes a snapshot: a new, complete DuckDB file
with what the API serves, then points ``current.json`` at it with an atomic rename. Readers open the
file ``current.json`` names, read-only; a file is never modified once published, and old ones are
pruned only after newer ones exist (a reader that still has one open keeps its data: unlinking an open
file on POSIX leaves it readable until closed). ``current.json`` records the file's sha256: a reader
verifies it before use, because DuckDB opens a file with damaged data blocks and counts its rows, and
fails only on the query that reads the damaged block.

Layout under the snapshots root (``data/snapshots`` by default)::

    snapshot-<utc time>-<hex>.duckdb   one published snapshot
    checkpoint-<utc time>-<hex>.ckpt   the online engine's state at the end of ``through`` (online_checkpoint)
    current.json                       {"file", "sha256", "published_at", "through", "days", "rows": {table: n},
                                        "checkpoint": {"file", "sha256", "through", "high_water", "events",
                                                       "feature_set_version"}}

A publication asked for no checkpoint (``transaction_snapshot``) keeps the current one when it serves
the same day; the API reads it only when it starts (online.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Callable
from pathlib import Path

import duckdb

from bankanom_pipeline.files import write_atomic
from bankanom_pipeline.warehouse.frames import table_exists

CURRENT = "current.json"
PATTERN = "snapshot-*.duckdb"
CHECKPOINTS = "checkpoint-*.ckpt"
KEEP = 3  # published files kept (the current one and two before it, for readers still on them)

# table -> (query over the warehouse, sort order); {start} / {end} bound the partitions served
_TABLES = {
    "scored_events": (
        """SELECT partition_date, event_id, ts, source_service, user_id, ip_address, correlation_id,
                  if_score, lof_score, ensemble_score, if_flag, lof_flag, is_anomaly, if_version, lof_version
           FROM scored_events WHERE partition_date BETWEEN $start AND $end""",
        "ts, event_id",
    ),
    "incidents": ("SELECT * FROM incidents WHERE partition_date BETWEEN $start AND $end", "start_ts"),
    "incident_events": (
        # with the raw log line (level, message, metrics): the console's "raw event" view
        """SELECT ie.partition_date, ie.incident_id, ie.event_id, s.ts, s.source_service, s.user_id,
                  s.ip_address, s.ensemble_score, v.log_level, v.message, v.geo_location, v.metrics
           FROM incident_events AS ie
           JOIN scored_events AS s USING (partition_date, event_id)
           -- only the window's days of the view (over raw_logs: other days would be read to be dropped)
           LEFT JOIN (SELECT * FROM validated_logs WHERE partition_date BETWEEN $start AND $end) AS v
               ON v.partition_date = ie.partition_date AND v.event_id = ie.event_id
           WHERE ie.partition_date BETWEEN $start AND $end""",
        "incident_id, ts",
    ),
    # the incident re-ranker's scores and cut (issue 26): the console shows before and after, the
    # feedback queue asks about the incidents it is least sure of
    "incident_reranks": (
        "SELECT * FROM incident_reranks WHERE partition_date BETWEEN $start AND $end",
        "partition_date, incident_id",
    ),
    "model_registry": ("SELECT * FROM model_registry", "created_at"),
    "evaluation_metrics": (
        "SELECT * FROM evaluation_metrics WHERE partition_date BETWEEN $start AND $end",
        "partition_date, model, metric",
    ),
    # transactions: all of them, with their scores. The API reads an account's rows as the history it
    # computes a posted transaction's features from, so this is every partition, not the last days.
    "transactions": (
        """SELECT v.* EXCLUDE (extra, source_file, line_no),
                  s.if_score, s.lof_score, s.ensemble_score, s.if_flag, s.lof_flag, s.is_anomaly,
                  s.top_features, s.if_version, s.lof_version{optional}
           FROM validated_transactions AS v
           LEFT JOIN scored_transactions AS s USING (partition_date, transaction_id)""",
        "account_id, ts, transaction_id",
    ),
    "transaction_incidents": ("SELECT * FROM transaction_incidents", "start_ts"),
    # precision-recall curves (at most 200 points per model and day): the console draws them
    "evaluation_curves": (
        "SELECT * FROM evaluation_curves WHERE partition_date BETWEEN $start AND $end",
        "partition_date, model, point",
    ),
    "transaction_evaluation_curves": (
        "SELECT * FROM transaction_evaluation_curves",
        "partition_date, model, point",
    ),
    "transaction_evaluation_metrics": (
        "SELECT * FROM transaction_evaluation_metrics",
        "partition_date, model, metric",
    ),
}
# columns a query copies when its warehouse has them ({optional} in the query): the transaction
# re-ranker's, which scored_transactions written before issue 26 part 2 lack
_OPTIONAL = {
    "transactions": ("scored_transactions", "s", ("rerank_score", "ensemble_flag", "reranker_version"))
}
# a table is published only when every table its query reads exists
_NEEDS = {
    "incident_events": ("incident_events", "scored_events", "validated_logs"),
    "transactions": ("validated_transactions", "scored_transactions"),
}


def latest_scored_day(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    """The latest partition of scored_events (None before the first): what a snapshot published for
    another reason serves of the logs."""
    if not table_exists(con, "scored_events"):
        return None
    return con.execute("SELECT max(partition_date) FROM scored_events").fetchone()[0]


def _optional_columns(con: duckdb.DuckDBPyConnection, source: str, alias: str, names: tuple[str, ...]) -> str:
    """``, alias.name`` for each of ``names`` that ``source`` has (an empty string when none)."""
    present = {
        name
        for (name,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
            "AND table_catalog = current_database() AND table_schema = 'main'",
            [source],
        ).fetchall()
    }
    return "".join(f", {alias}.{name}" for name in names if name in present)


class SnapshotError(Exception):
    """A published snapshot that is missing, damaged or named outside the snapshots folder."""


def sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class SnapshotPublisher:
    """The snapshots under ``root``: publishing a new one, and finding and verifying the current one."""

    def __init__(self, root: str | Path, keep: int = KEEP):
        self.root = Path(root)
        self.keep = keep  # published files kept (the current one and those before it, for readers on them)

    def publish(
        self,
        con: duckdb.DuckDBPyConnection,
        through: dt.date,
        days: int,
        checkpoint: Callable[[Path], dict | None] | None = None,
    ) -> dict:
        """Write a snapshot of the ``days`` partitions up to ``through`` and make it current; returns the
        pointer written. Tables the warehouse does not have yet are left out. ``checkpoint``: writes the
        online engine's state at the end of ``through`` to the path given, returning what to record
        (``online_checkpoint.build``), or None when there is nothing to checkpoint."""
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        published = dt.datetime.now(dt.UTC)
        stamp = f"{published:%Y%m%dT%H%M%S%f}-{secrets.token_hex(3)}"
        name = f"snapshot-{stamp}.duckdb"
        start = through - dt.timedelta(days=days - 1)
        rows: dict[str, int] = {}
        con.execute(f"ATTACH '{root / name}' AS snap")
        try:
            for table, (query, order) in _TABLES.items():
                if not all(table_exists(con, t) for t in _NEEDS.get(table, (table,))):
                    continue
                if table in _OPTIONAL:
                    query = query.replace("{optional}", _optional_columns(con, *_OPTIONAL[table]))
                con.execute(
                    f"CREATE TABLE snap.{table} AS SELECT * FROM ({query}) ORDER BY {order}",
                    {"start": start, "end": through} if "$start" in query else {},
                )
                rows[table] = con.execute(f"SELECT count(*) FROM snap.{table}").fetchone()[0]
        finally:
            con.execute("DETACH snap")
        existing = self.current()
        if existing and dt.date.fromisoformat(existing["through"]) > through:
            # A newer window was published meanwhile (runs of several days finish in any order, at once
            # in lake mode): going back would hide the latest scores from the API, so this one is dropped.
            (root / name).unlink(missing_ok=True)
            return {**existing, "superseded": name}
        pointer = {
            "file": name,
            "sha256": sha256(root / name),
            "published_at": published.isoformat(),
            "through": through.isoformat(),
            "days": days,
            "rows": rows,
        }
        state = self._checkpoint(con, through, stamp, checkpoint, existing)
        if state is not None:
            pointer["checkpoint"] = state
        write_atomic(root / CURRENT, json.dumps(pointer, indent=2).encode())
        self.prune()
        return pointer

    def _checkpoint(
        self,
        con: duckdb.DuckDBPyConnection,
        through: dt.date,
        stamp: str,
        checkpoint: Callable[[Path], dict | None] | None,
        existing: dict | None,
    ) -> dict | None:
        if checkpoint is None:  # the current one still holds for the same day
            kept = (existing or {}).get("checkpoint")
            return kept if kept and kept.get("through") == through.isoformat() else None
        name = f"checkpoint-{stamp}.ckpt"
        recorded = checkpoint(self.root / name)
        if recorded is None:
            return None
        return {"file": name, "sha256": sha256(self.root / name), "through": through.isoformat(), **recorded}

    def verified_checkpoint(self, pointer: dict) -> Path:
        """The online checkpoint ``pointer`` names, once its sha256 matches; SnapshotError otherwise."""
        entry = pointer.get("checkpoint") or {}
        return self._verified(str(entry.get("file", "")), CHECKPOINTS, entry.get("sha256"), "checkpoint")

    def current(self) -> dict | None:
        """The pointer to the current snapshot, or None before the first publication."""
        path = self.root / CURRENT
        return json.loads(path.read_text()) if path.exists() else None

    def verified(self, pointer: dict) -> Path:
        """The file ``pointer`` names, once its sha256 matches the one recorded at publication;
        SnapshotError otherwise. A pointer from before checksums were recorded has none to check (the
        file is used as is)."""
        return self._verified(str(pointer.get("file", "")), PATTERN, pointer.get("sha256"), "snapshot")

    def _verified(self, name: str, pattern: str, expected: str | None, kind: str) -> Path:
        path = self.root / name
        if path.parent != self.root or not path.match(pattern):
            raise SnapshotError(f"{name!r} is not a {kind} file of {self.root}: refused")
        if not path.exists():
            raise SnapshotError(f"{name} is missing")
        if expected is not None and (actual := sha256(path)) != expected:
            raise SnapshotError(
                f"{name} failed its checksum (sha256 {actual[:16]}…, current.json records {expected[:16]}…): "
                "the file is damaged, refused"
            )
        return path

    def prune(self) -> list[Path]:
        """Delete all but the newest ``keep`` snapshot files (never the current one); returns the deleted."""
        pointer = self.current() or {}
        current = {pointer.get("file"), (pointer.get("checkpoint") or {}).get("file")}
        doomed = []
        for pattern in (PATTERN, CHECKPOINTS):
            files = sorted(self.root.glob(pattern), key=lambda p: p.name, reverse=True)
            doomed += [p for p in files[self.keep :] if p.name not in current]
        for path in doomed:
            path.unlink(missing_ok=True)
            path.with_name(path.name + ".wal").unlink(missing_ok=True)
        return doomed
