"""The online engine's state at the end of a published day, built from the warehouse (no Dagster here).

The API restores its online state from the newest checkpoint it has; the pipeline publishes one with
each snapshot, so a fresh API (or one whose own checkpoint is older) starts from the state the
warehouse's validated events give, not from nothing. A snapshot's tables alone lack the messages,
locations and metrics the state needs: the engine is fed ``validated_logs`` itself.

What the state at the end of day D needs is every event a later event's windows can reach: the
features look back at most 24 hours (docs/features.md), so D's validated events and the tail of D-1
from 24 hours before D's last event on, fed in the one order ``(ts, event_id)``.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import duckdb
import orjson

from bankanom_pipeline.online.events import Event
from bankanom_pipeline.online.schema import HORIZON
from bankanom_pipeline.warehouse.frames import table_exists

BATCH_ROWS = 65_536

# the tail of the day before and the whole day, in the engine's order; ts as epoch microseconds
_QUERY = """
WITH day AS (SELECT max(epoch_us(ts)) AS last_us FROM validated_logs WHERE partition_date = $day)
SELECT event_id, epoch_us(ts), source_service, log_level, message, correlation_id, user_id, ip_address,
       geo_location, metrics
FROM validated_logs, day
WHERE partition_date = $day
   OR (partition_date = $previous AND epoch_us(ts) >= day.last_us - $horizon)
ORDER BY ts, event_id
"""


def build(con: duckdb.DuckDBPyConnection, day: dt.date, path: Path) -> dict | None:
    """Feed a fresh engine day ``day``'s validated events (and the previous day's tail), checkpoint it to
    ``path``; what the publisher records about it (high-water mark, events fed, feature-set version,
    seconds taken),
    or None when the warehouse has no validated events for ``day``."""
    if not table_exists(con, "validated_logs"):
        return None
    # imported here: the engine's kernel is numba, which imports scipy; the code location imports this
    # module and must load without either (tests/test_import_cost.py)
    from bankanom_pipeline.online.engine import OnlineEngine

    began = time.perf_counter()
    engine = OnlineEngine()
    cursor = con.cursor()
    fed = 0
    try:
        cursor.execute(_QUERY, {"day": day, "previous": day - dt.timedelta(days=1), "horizon": HORIZON})
        while rows := cursor.fetchmany(BATCH_ROWS):
            engine.ingest_many(
                Event(
                    r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], orjson.loads(r[9]) if r[9] else None
                )
                for r in rows
            )
            fed += len(rows)
    finally:
        cursor.close()
    if engine.high_water_mark is None:
        return None
    engine.checkpoint(path)
    return {
        "high_water": list(engine.high_water_mark),
        "events": fed,
        "feature_set_version": engine.FEATURE_SET_VERSION,
        "seconds": round(time.perf_counter() - began, 2),
    }
