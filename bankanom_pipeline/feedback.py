"""Analyst feedback on incidents and transactions: the ``feedback`` table (no Dagster here).

The API (the analyst console and the JSON feedback routes) is the only writer, and it cannot write the
warehouse: a pipeline run may hold the warehouse's lock for minutes. So feedback is appended to its own
small DuckDB file (``data/feedback.duckdb``, ``BANKANOM_FEEDBACK_DB``), like ``alerts.duckdb``. Each write
opens the file, appends one row and closes it, under a process-wide lock (concurrent requests serialise)
and with a retry while another process (a second API worker, or the pipeline copying it) has it open. The
evaluation assets copy it into the warehouse's ``feedback`` table and measure precision on it.

Rows are never updated: an analyst who changes their mind adds a row. Each row names the person
(``analyst``, from BANKANOM_ANALYSTS) and the key they used (``key_id``), so the file is an audit trail.
The label that counts per item is the latest row across analysts (``labels``: the only way a re-ranker
gets labels); ``audit`` reports who changed their own label and which items analysts disagree on.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import duckdb
import polars as pl

from bankanom_pipeline.warehouse.frames import replace_table

KINDS = ("incident", "transaction")
LABELS = ("true_positive", "false_positive", "unsure")
LABEL_NAMES = {"true_positive": "true positive", "false_positive": "false positive", "unsure": "unsure"}
CHANNELS = ("console", "api")
# why the review queue asked about an item (None: the analyst's own pick); "random" items are the
# unbiased share a re-ranker's gate can be measured on
SELECTIONS = ("top", "uncertain", "random")

DDL = """
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id     VARCHAR PRIMARY KEY,
    created_at      TIMESTAMP NOT NULL,      -- UTC; strictly increasing in the order rows were appended
    kind            VARCHAR NOT NULL,        -- incident | transaction
    target_id       VARCHAR NOT NULL,        -- incident_id (stable) or transaction_id
    partition_date  DATE,                    -- the day of the incident / transaction
    label           VARCHAR NOT NULL,        -- true_positive | false_positive | unsure
    comment         VARCHAR NOT NULL,
    analyst         VARCHAR NOT NULL,        -- the person (BANKANOM_ANALYSTS); a key id on rows from before names
    key_id          VARCHAR,                 -- the non-secret id of the API key used
    channel         VARCHAR,                 -- console | api
    selection       VARCHAR                  -- top | uncertain | random: why the queue asked; NULL: own pick
)
"""
COLUMNS = {
    "feedback_id": pl.String,
    "created_at": pl.Datetime("us"),
    "kind": pl.String,
    "target_id": pl.String,
    "partition_date": pl.Date,
    "label": pl.String,
    "comment": pl.String,
    "analyst": pl.String,
    "key_id": pl.String,
    "channel": pl.String,
    "selection": pl.String,
}
# the columns a file written before named analysts lacks, and what its rows hold in them: the old
# ``analyst`` column held the key id, and only the console wrote feedback
_ADDED = {"key_id": "analyst", "channel": "'console'", "selection": "NULL"}
LABELS_SCHEMA = {
    "target_id": pl.String,
    "partition_date": pl.Date,
    "y": pl.Int8,
    "selection": pl.String,
    "analyst": pl.String,
    "created_at": pl.Datetime("us"),
}
MAX_COMMENT = 2000
_ATTEMPTS = 20

_write_lock = threading.Lock()


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection, retried while another process holds the file (each holder keeps it for
    milliseconds)."""
    for attempt in range(_ATTEMPTS):
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException:
            if attempt == _ATTEMPTS - 1:
                raise
            time.sleep(min(0.05 * (attempt + 1), 0.5))
    raise AssertionError("unreachable")


def _present(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The feedback table's columns (empty when there is no table)."""
    found = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'feedback'"
    ).fetchall()
    return {name for (name,) in found}


def _as_migrated(present: set[str]) -> list[str]:
    """The select list reading a table with ``present`` columns as the current schema."""
    return [c if c in present else f"{_ADDED[c]} AS {c}" for c in COLUMNS]


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Create the table, or rebuild an older file's with the columns it lacks (filled as ``_ADDED``
    says), in one transaction: a failure leaves the file as it was."""
    present = _present(con)
    if not present:
        con.execute(DDL)
        return
    if all(name in present for name in _ADDED):
        return
    select = _as_migrated(present)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("ALTER TABLE feedback RENAME TO feedback_before_analysts")
        con.execute(DDL)
        con.execute(f"INSERT INTO feedback SELECT {', '.join(select)} FROM feedback_before_analysts")
        con.execute("DROP TABLE feedback_before_analysts")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def check(kind: str, label: str, comment: str, selection: str | None = None, channel: str = "api") -> None:
    """ValueError naming what is wrong with a row's values."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    if selection is not None and selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS} or null, not {selection!r}")
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, not {channel!r}")
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"comment longer than {MAX_COMMENT} characters")


def record(
    path: Path,
    kind: str,
    target_id: str,
    label: str,
    comment: str,
    analyst: str,
    partition_date: dt.date | None = None,
    *,
    key_id: str | None = None,
    channel: str = "api",
    selection: str | None = None,
    analysts: Mapping[str, str] | None = None,
) -> dict:
    """Append one row (migrating an older file first); returns it, with ``changed`` (this analyst's own
    latest label on the item was a different one) and ``disagreement`` (the item's analysts' latest
    labels now differ), earlier rows read as ``attributed(..., analysts)`` reads them."""
    check(kind, label, comment, selection, channel)
    row = {
        "feedback_id": uuid.uuid4().hex,
        "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "kind": kind,
        "target_id": target_id,
        "partition_date": partition_date,
        "label": label,
        "comment": comment,
        "analyst": analyst,
        "key_id": key_id,
        "channel": channel,
        "selection": selection,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with _write_lock:
        con = _connect(path, read_only=False)
        try:
            _migrate(con)
            newest = con.execute("SELECT max(created_at) FROM feedback").fetchone()[0]
            if newest is not None and row["created_at"] <= newest:
                # the latest row must be the one appended last, whatever the clock did (a step back, or
                # two writes in one microsecond)
                row["created_at"] = newest + dt.timedelta(microseconds=1)
            earlier = con.execute(
                """SELECT analyst, key_id, label FROM feedback WHERE kind = ? AND target_id = ?
                   ORDER BY created_at, feedback_id""",
                [kind, target_id],
            ).fetchall()
            con.execute(
                f"INSERT INTO feedback ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                list(row.values()),
            )
        finally:
            con.close()
    before = {  # each analyst's latest label, oldest rows first so the latest wins
        (analysts or {}).get(key, name) if name == key else name: earlier_label
        for name, key, earlier_label in earlier
    }
    after = {**before, analyst: label}
    return {
        **row,
        "changed": analyst in before and before[analyst] != label,
        "disagreement": len(set(after.values())) > 1,
    }


def read(path: Path) -> pl.DataFrame:
    """Every feedback row (empty before the first), oldest first; a file from before named analysts is
    read as its migration will leave it."""
    if not path.exists():
        return pl.DataFrame(schema=COLUMNS)
    with _write_lock:  # in this process, never read while a write of ours is half done
        con = _connect(path, read_only=True)
        try:
            present = _present(con)
            if not present:
                return pl.DataFrame(schema=COLUMNS)
            select = _as_migrated(present)
            rows = con.execute(
                f"SELECT {', '.join(select)} FROM feedback ORDER BY created_at, feedback_id"
            ).fetchall()
        finally:
            con.close()
    return pl.DataFrame(rows, schema=COLUMNS, orient="row")


def attributed(frame: pl.DataFrame, analysts: Mapping[str, str] | None) -> pl.DataFrame:
    """``frame`` with each row migrated from before named analysts (its ``analyst`` is its ``key_id``,
    the only name those rows had) signed with the person ``analysts`` (key id -> name) now maps that key
    id to, so that a person relabelling such an item shows as a change of their own label, not a
    disagreement with their key's id. Other rows, and key ids mapped to nobody, are left as they are."""
    if not analysts or frame.height == 0:
        return frame
    mapped = pl.col("key_id").replace_strict(dict(analysts), default=None, return_dtype=pl.String)
    return frame.with_columns(
        analyst=pl.when((pl.col("analyst") == pl.col("key_id")) & mapped.is_not_null())
        .then(mapped)
        .otherwise(pl.col("analyst"))
    )


def latest(frame: pl.DataFrame) -> pl.DataFrame:
    """The label that counts per (kind, target_id): the latest row, whoever wrote it."""
    return frame.sort("created_at", "feedback_id").unique(
        ["kind", "target_id"], keep="last", maintain_order=True
    )


def labels(frame: pl.DataFrame, kind: str) -> pl.DataFrame:
    """The labels a re-ranker learns from, one row per item of ``kind``: the label that counts (the
    latest row across analysts) as ``y`` (1 true positive, 0 false positive), who gave it and when;
    items whose label that counts is ``unsure`` are left out. ``selection`` is why the item was first
    labelled (the queue's reason on its first row; null: an analyst's own pick): an item leaves the queue
    once labelled, so later rows are corrections, and the gate's unbiased share is the items the queue
    first asked about at random."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    rows = frame.filter(pl.col("kind") == kind).sort("created_at", "feedback_id")
    first = rows.unique("target_id", keep="first").select("target_id", "selection")
    counted = rows.unique("target_id", keep="last", maintain_order=True)
    return (
        counted.filter(pl.col("label") != "unsure")
        .drop("selection")
        .join(first, on="target_id", how="left")
        .select(
            pl.col("target_id"),
            pl.col("partition_date"),
            (pl.col("label") == "true_positive").cast(pl.Int8).alias("y"),
            pl.col("selection"),
            pl.col("analyst"),
            pl.col("created_at"),
        )
        .sort("created_at")
        .cast(LABELS_SCHEMA)
    )


def audit(frame: pl.DataFrame, kind: str | None = None) -> dict:
    """Who said what, over ``kind``'s rows (every kind when None):

    - ``analysts``: per person, rows written, items labelled, each label's count among their latest
      labels, and how many times they changed their own label;
    - ``changes``: each row where an analyst replaced their own earlier, different label on an item;
    - ``disagreements``: each item whose analysts' latest labels differ, with every analyst's latest label.
    """
    rows = frame if kind is None else frame.filter(pl.col("kind") == kind)
    rows = rows.sort("created_at", "feedback_id").with_columns(
        pl.col("label").shift(1).over("kind", "target_id", "analyst").alias("previous")
    )
    changed = rows.filter(pl.col("previous").is_not_null() & (pl.col("previous") != pl.col("label")))
    own_latest = rows.unique(["kind", "target_id", "analyst"], keep="last", maintain_order=True)
    analysts = {}
    for name in sorted(rows["analyst"].unique().to_list()):
        mine = own_latest.filter(pl.col("analyst") == name)
        analysts[name] = {
            "rows": rows.filter(pl.col("analyst") == name).height,
            "items": mine.height,
            **{label: int((mine["label"] == label).sum()) for label in LABELS},
            "changes": changed.filter(pl.col("analyst") == name).height,
        }
    disagreements = []
    for (item_kind, target_id), group in own_latest.group_by(["kind", "target_id"], maintain_order=True):
        if group["label"].n_unique() > 1:
            disagreements.append(
                {
                    "kind": item_kind,
                    "target_id": target_id,
                    "labels": [
                        {"analyst": a, "label": lab, "created_at": at}
                        for a, lab, at in group.select("analyst", "label", "created_at").iter_rows()
                    ],
                }
            )
    return {
        "analysts": analysts,
        "changes": [
            {
                "kind": r["kind"],
                "target_id": r["target_id"],
                "analyst": r["analyst"],
                "from": r["previous"],
                "to": r["label"],
                "created_at": r["created_at"],
                "feedback_id": r["feedback_id"],
            }
            for r in changed.iter_rows(named=True)
        ],
        "disagreements": disagreements,
    }


def precision(frame: pl.DataFrame, kind: str, ids: list[str] | None = None) -> dict[str, float]:
    """Analyst precision of ``kind`` (restricted to ``ids`` when given): the share marked true positive
    among those marked true or false positive (nan when none), with the counts of each label."""
    labels = latest(frame).filter(pl.col("kind") == kind)
    if ids is not None:
        labels = labels.filter(pl.col("target_id").is_in(ids))
    counts = {label: int((labels["label"] == label).sum()) for label in LABELS}
    judged = counts["true_positive"] + counts["false_positive"]
    return {
        "analyst_precision": counts["true_positive"] / judged if judged else float("nan"),
        "analyst_true_positives": float(counts["true_positive"]),
        "analyst_false_positives": float(counts["false_positive"]),
        "analyst_unsure": float(counts["unsure"]),
        "analyst_labelled": float(sum(counts.values())),
    }


def copy_to_warehouse(con: duckdb.DuckDBPyConnection, path: Path) -> pl.DataFrame:
    """Replace the warehouse's ``feedback`` table with the feedback file's rows; returns them."""
    frame = read(path)
    con.register("_feedback_rows", frame.to_arrow())
    try:
        replace_table(con, "feedback", "SELECT * FROM _feedback_rows")
    finally:
        con.unregister("_feedback_rows")
    return frame
