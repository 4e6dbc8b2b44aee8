"""Writing one validated partition and its quarantine, and counting them: the part of validation that
logs and transactions share (each brings its own typed rows and rules)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import duckdb

from bankanom_pipeline.validation.rules import Outcome, broken_rows
from bankanom_pipeline.warehouse.frames import rewriting


@dataclass
class ValidationCounts:
    raw: int = 0
    validated: int = 0
    quarantined: int = 0
    duplicates: int = 0
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def write_partition(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    outcomes: list[Outcome],
    *,
    raw: str,
    validated: str,
    quarantine: str,
    inserts: list[str],
) -> ValidationCounts:
    """Replace partition ``day`` of ``validated`` and ``quarantine`` with the rows ``inserts`` select, in
    one transaction; the inserts see the rows each rule failed as ``_broken`` (idx, rules). Returns the
    partition's counts, after checking raw = validated + quarantined + duplicates."""
    con.register("_broken", broken_rows(outcomes).to_arrow())
    try:
        with rewriting(con, validated, quarantine, day=day):
            for sql in inserts:
                con.execute(sql, {"day": day})
    finally:
        con.unregister("_broken")
    return reconciled_counts(con, day, raw=raw, validated=validated, quarantine=quarantine)


def reconciled_counts(
    con: duckdb.DuckDBPyConnection, day: dt.date, *, raw: str, validated: str, quarantine: str
) -> ValidationCounts:
    """The partition's counts, after checking raw = validated + quarantined + duplicates."""
    counts = partition_counts(con, day, raw=raw, validated=validated, quarantine=quarantine)
    if counts.raw != counts.validated + counts.quarantined + counts.duplicates:
        raise RuntimeError(f"{validated} {day}: counts do not reconcile: {counts.as_dict()}")
    return counts


def partition_counts(
    con: duckdb.DuckDBPyConnection, day: dt.date, *, raw: str, validated: str, quarantine: str
) -> ValidationCounts:
    def scalar(sql: str) -> int:
        return con.execute(sql, {"day": day}).fetchone()[0]

    by_rule = con.execute(
        f"SELECT rule, count(*) FROM (SELECT unnest(rules) AS rule FROM {quarantine} "
        "WHERE partition_date = $day AND kind = 'invalid') GROUP BY ALL ORDER BY 2 DESC, 1",
        {"day": day},
    ).fetchall()
    quarantined = f"SELECT count(*) FROM {quarantine} WHERE partition_date = $day AND kind = "
    return ValidationCounts(
        raw=scalar(f"SELECT count(*) FROM {raw} WHERE partition_date = $day"),
        validated=scalar(f"SELECT count(*) FROM {validated} WHERE partition_date = $day"),
        quarantined=scalar(quarantined + "'invalid'"),
        duplicates=scalar(quarantined + "'duplicate'"),
        quarantined_by_rule=dict(by_rule),
    )
