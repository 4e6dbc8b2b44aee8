"""Append one landing file to its day in ``raw_logs``, validated, at a cost in proportion to the file.

The live day grows a file at a time (a rotation of the mock server or a bank's shipper); the stream
(``bankanom stream``) scores it event by event, so the warehouse only has to keep every line accounted for
until the day closes and the whole-day pipeline (the system of record) re-reads it. Per file, in one
transaction: the file's earlier lines, if it was delivered before, are deleted (a re-delivered file
replaces its own lines, never the day); its lines are parsed exactly as ``load_partition`` parses a day
(unusable ones to ``raw_logs_rejected``); its rows are validated with the declared rules
(``log_rules.yaml``) into ``quarantine_logs``; and its raw load is marked validated, so ``validated_logs``
shows its other rows at once. Nothing reads more of the day than its event ids (a repeated id is a
duplicate of the line the day already holds, as a whole-day validation finds it for files in delivery
order; a re-delivered file whose id a later file repeats is the duplicate until the day closes, when the
whole-day run keeps the line first in file order instead: the counts are the same).

Validation's SQL reads ``raw_logs`` by name; here a temporary table of that name, holding only the
file's rows, stands in front of the warehouse's for the transaction, so the very statements of the
whole-day validation (``validation/logs.py``) see the file alone. The warehouse's own table is then
named with its catalog: in DuckDB ``main.raw_logs`` would still resolve to the temporary one.

Rules are evaluated by ``rules.failing_rows``, the evaluator that decides quarantine in the whole-day
validation too (Great Expectations reports on the day when it closes). Embedded warehouse only: the
published copy (``warehouse/published.py``) and the lake hold one file per partition, which an append
would have to rewrite whole; the live day's raw rows are published when the day closes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from bankanom_pipeline.ingest.raw_logs import (
    INSERT_SQL,
    PARSE_SQL,
    REJECT_SQL,
    read_lines,
    relative_name,
    signature,
)
from bankanom_pipeline.validation import logs as validation
from bankanom_pipeline.validation.rules import (
    Check,
    Outcome,
    broken_rows,
    build_checks,
    failing_rows,
    load_rules,
)

# the tables a file's lines end up in, each keyed by (partition_date, source_file, line_no)
_FILE_TABLES = ("raw_logs", "raw_logs_rejected", "quarantine_logs")


@dataclass
class AppendCounts:
    """One file's lines: read = loaded + rejected, and loaded = validated + quarantined + duplicates."""

    file: str
    signature: str
    replaced: int = 0  # lines of an earlier delivery of the same file, deleted
    lines_read: int = 0
    loaded: int = 0
    rejected: int = 0
    validated: int = 0
    quarantined: int = 0
    duplicates: int = 0
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def append_file(
    con: duckdb.DuckDBPyConnection, landing_logs: Path, path: Path, service_sources: list[str]
) -> AppendCounts:
    """Append ``path`` (a file of ``landing_logs/<day>/``) to its day, replacing an earlier delivery of it."""
    day = dt.date.fromisoformat(path.parent.name)
    name = relative_name(path, landing_logs)
    counts = AppendCounts(file=name, signature=signature(path))  # signed before reading, as load_partition
    lines = read_lines([path], landing_logs)
    counts.lines_read = lines.num_rows
    warehouse = con.execute("SELECT current_database()").fetchone()[0]
    main = f'"{warehouse}".main'
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    con.register("_landing_lines", lines)
    try:
        con.execute(PARSE_SQL)
        con.execute("BEGIN TRANSACTION")
        try:
            counts.replaced = _delete_file(con, main, day, name)
            con.execute(f"CREATE TEMP TABLE raw_logs AS SELECT * FROM {main}.raw_logs LIMIT 0")
            con.execute(INSERT_SQL, [day])  # into the temporary raw_logs: the file's rows only
            con.execute(REJECT_SQL, [day])
            _validate(con, main, day, service_sources)
            con.execute(f"INSERT INTO {main}.raw_logs SELECT * FROM temp.main.raw_logs")
            con.execute("DROP TABLE temp.main.raw_logs")  # validated_logs reads raw_logs by name too
            _count(con, main, day, counts)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("_landing_lines")
        con.execute("DROP TABLE IF EXISTS _parsed")
        con.execute("DROP TABLE IF EXISTS temp.main.raw_logs")
    return counts


def _delete_file(con: duckdb.DuckDBPyConnection, main: str, day: dt.date, name: str) -> int:
    """Delete an earlier delivery's lines; returns how many lines it had (0 for a new file)."""
    replaced = 0
    for table in _FILE_TABLES:
        deleted = con.execute(
            f"DELETE FROM {main}.{table} WHERE partition_date = ? AND source_file = ?", [day, name]
        ).fetchone()[0]
        if table != "quarantine_logs":  # quarantined lines are raw lines too: counted once
            replaced += deleted
    return replaced


def _validate(con: duckdb.DuckDBPyConnection, main: str, day: dt.date, service_sources: list[str]) -> None:
    """The whole-day validation's statements on the file's rows, with duplicates of earlier files."""
    start = pd.Timestamp(day.isoformat(), tz="UTC")
    params = {
        "partition_start": start,
        "partition_end": start + pd.Timedelta(days=1),
        "service_sources": list(service_sources),
    }
    checks = build_checks(load_rules(), params)
    con.execute(validation.TYPED_SQL, {"day": day})
    try:
        # an id the day already holds (another file's line) makes every line of this file with it a
        # duplicate: the whole-day validation keeps the first line in file order, the earlier file's
        con.execute(
            f"""UPDATE _typed SET is_duplicate = true
                FROM temp.main.raw_logs r
                WHERE _typed.source_file = r.source_file AND _typed.line_no = r.line_no
                  AND r.event_id IN (SELECT event_id FROM {main}.raw_logs WHERE partition_date = $day)""",
            {"day": day},
        )
        outcomes = DeclaredRules().run(validation._rule_frames(con, day, checks), checks)
        con.register("_broken", broken_rows(outcomes).to_arrow())
        try:
            for statement in (validation._QUARANTINE, validation._MARK):
                con.execute(statement, {"day": day})
        finally:
            con.unregister("_broken")
    finally:
        con.execute("DROP TABLE IF EXISTS _typed")


class DeclaredRules:
    """The declared rules evaluated row by row without Great Expectations (``quarantine.RuleEngine``):
    which rows break each check, no report. The whole-day validation quarantines by the same evaluator."""

    def load(self) -> None:
        pass

    def run(self, frames: dict[str, pd.DataFrame], checks: list[Check]) -> list[Outcome]:
        outcomes = []
        for check in checks:
            frame = frames[check.frame]
            rows = failing_rows(frame, check)
            share = 100.0 * len(rows) / len(frame) if len(frame) else 0.0
            outcomes.append(Outcome(check, len(rows), share, [], rows))
        return outcomes


def _count(con: duckdb.DuckDBPyConnection, main: str, day: dt.date, counts: AppendCounts) -> None:
    """The file's counts, read back inside the transaction; a file whose lines do not reconcile is
    rolled back whole."""

    def scalar(sql: str) -> int:
        return con.execute(sql, {"day": day, "file": counts.file}).fetchone()[0]

    mine = "partition_date = $day AND source_file = $file"
    counts.loaded = scalar(f"SELECT count(*) FROM {main}.raw_logs WHERE {mine}")
    counts.rejected = scalar(f"SELECT count(*) FROM {main}.raw_logs_rejected WHERE {mine}")
    counts.validated = scalar(f"SELECT count(*) FROM validated_logs WHERE {mine}")
    quarantined = f"SELECT count(*) FROM {main}.quarantine_logs WHERE {mine} AND kind = "
    counts.quarantined = scalar(quarantined + "'invalid'")
    counts.duplicates = scalar(quarantined + "'duplicate'")
    counts.quarantined_by_rule = dict(
        con.execute(
            f"SELECT rule, count(*) FROM (SELECT unnest(rules) AS rule FROM {main}.quarantine_logs "
            f"WHERE {mine} AND kind = 'invalid') GROUP BY ALL ORDER BY 2 DESC, 1",
            {"day": day, "file": counts.file},
        ).fetchall()
    )
    if counts.loaded + counts.rejected != counts.lines_read or counts.loaded != (
        counts.validated + counts.quarantined + counts.duplicates
    ):
        raise RuntimeError(f"raw_logs {day} {counts.file}: counts do not reconcile: {counts.as_dict()}")
