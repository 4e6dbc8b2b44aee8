"""Analyst feedback on incidents and flagged transactions: the ``feedback`` table (no Dagster here).

The API (the analyst console) is the only writer, and it cannot write the warehouse: a pipeline run may
hold the warehouse's lock for minutes. So feedback is appended to its own small DuckDB file
(``data/feedback.duckdb``, ``BANKANOM_FEEDBACK_DB``), like ``alerts.duckdb``. Each write opens the file,
appends one row and closes it, under a process-wide lock (concurrent requests serialise) and with a
retry while another process (a second API worker, or the pipeline copying it) has it open. The
evaluation assets copy it into the warehouse's ``feedback`` table and measure precision on it.

Rows are never updated: an analyst who changes their mind adds a row, and the latest row per
(kind, target_id) is the label that counts.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from pathlib import Path

import duckdb
import polars as pl

from bankanom_pipeline.warehouse.frames import replace_table

KINDS = ("incident", "transaction")
LABELS = ("true_positive", "false_positive", "unsure")
LABEL_NAMES = {"true_positive": "true positive", "false_positive": "false positive", "unsure": "unsure"}

DDL = """
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id     VARCHAR PRIMARY KEY,
    created_at      TIMESTAMP NOT NULL,      -- UTC
    kind            VARCHAR NOT NULL,        -- incident | transaction
    target_id       VARCHAR NOT NULL,        -- incident_id or transaction_id
    partition_date  DATE,                    -- the day of the incident / transaction
    label           VARCHAR NOT NULL,        -- true_positive | false_positive | unsure
    comment         VARCHAR NOT NULL,
    analyst         VARCHAR NOT NULL         -- a non-secret id of the API key used
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


def record(
    path: Path,
    kind: str,
    target_id: str,
    label: str,
    comment: str,
    analyst: str,
    partition_date: dt.date | None = None,
) -> dict:
    """Append one row; returns it."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"comment longer than {MAX_COMMENT} characters")
    row = {
        "feedback_id": uuid.uuid4().hex,
        "created_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "kind": kind,
        "target_id": target_id,
        "partition_date": partition_date,
        "label": label,
        "comment": comment,
        "analyst": analyst,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with _write_lock:
        con = _connect(path, read_only=False)
        try:
            con.execute(DDL)
            con.execute("INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?)", list(row.values()))
        finally:
            con.close()
    return row


def read(path: Path) -> pl.DataFrame:
    """Every feedback row (empty before the first), oldest first."""
    if not path.exists():
        return pl.DataFrame(schema=COLUMNS)
    with _write_lock:  # in this process, never read while a write of ours is half done
        con = _connect(path, read_only=True)
        try:
            if not con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'feedback'"
            ).fetchone()[0]:
                return pl.DataFrame(schema=COLUMNS)
            rows = con.execute(
                f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY created_at, feedback_id"
            ).fetchall()
        finally:
            con.close()
    return pl.DataFrame(rows, schema=COLUMNS, orient="row")


def latest(frame: pl.DataFrame) -> pl.DataFrame:
    """The label that counts per (kind, target_id): the latest row."""
    return frame.sort("created_at", "feedback_id").unique(
        ["kind", "target_id"], keep="last", maintain_order=True
    )


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
