"""Writing one validated partition and its quarantine, and counting them: the part of validation that
logs and transactions share (each brings its own typed rows and rules)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Protocol

import duckdb
import pandas as pd

from bankanom_pipeline.validation.rules import Check, Outcome, broken_rows
from bankanom_pipeline.warehouse.frames import rewriting


class RuleEngine(Protocol):
    """What evaluates the declared checks on a partition's frames (Great Expectations in the pipeline:
    ``bankanom_pipeline.defs.validation.gx.GX``)."""

    def load(self) -> None:
        """Import the engine (seconds): started on a thread while DuckDB types the rows."""

    def run(self, frames: dict[str, pd.DataFrame], checks: list[Check]) -> list[Outcome]:
        """Each check's outcome, with the rows that failed it."""


@dataclass
class ValidationCounts:
    raw: int = 0
    validated: int = 0
    quarantined: int = 0
    duplicates: int = 0
    quarantined_by_rule: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def validate_partition(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    *,
    typed: tuple[str, str],
    frames: Callable[[duckdb.DuckDBPyConnection], dict[str, pd.DataFrame]],
    checks: list[Check],
    engine: RuleEngine,
    tables: dict[str, str],
    written: tuple[str, ...],
    while_checking: tuple[str, ...] = (),
    after_checking: tuple[str, ...],
) -> tuple[ValidationCounts, list[Outcome]]:
    """Replace partition ``day`` of the ``written`` tables in one transaction, and check that
    raw = validated + quarantined + duplicates (``tables`` names the three).

    ``typed`` is (the statement that creates the typed temporary table, its name), ``frames`` what the
    rule ``engine`` (GX) checks, read from it. GX's import (seconds) starts on a thread while DuckDB
    types the rows. GX (Python, one core) then runs ``checks`` on that thread while DuckDB (which lets go
    of the GIL) runs the ``while_checking`` statements; the ``after_checking`` ones then see the rows GX
    found broken as ``_broken`` (idx, rules)."""
    create_typed, typed_table = typed
    with ThreadPoolExecutor(1) as pool:
        pool.submit(engine.load)
        con.execute("SET TimeZone = 'UTC'")
        con.execute(create_typed, {"day": day})
        try:
            checked_frames = frames(con)
            with rewriting(con, *written, day=day):
                checked = pool.submit(engine.run, checked_frames, checks)
                for statement in while_checking:
                    con.execute(statement, {"day": day})
                outcomes = checked.result()
                con.register("_broken", broken_rows(outcomes).to_arrow())
                try:
                    for statement in after_checking:
                        con.execute(statement, {"day": day})
                finally:
                    con.unregister("_broken")
        finally:
            con.execute(f"DROP TABLE IF EXISTS {typed_table}")
    return reconciled_counts(con, day, **tables), outcomes


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
