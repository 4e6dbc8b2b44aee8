"""The feature SQL run on posted batches (sqlmodels/inmemory.py): the prepared, reused plan must give
what a one-shot run of the same query gives, whatever batches came before."""

from __future__ import annotations

import datetime as dt
import json
import random

import duckdb
import polars as pl
import pytest

from bankanom_pipeline.sqlmodels.inmemory import SOURCE_SCHEMA, FeatureBuilder

SERVICES = ["auth-service", "payment-service", "db-service", "api-gateway"]
MESSAGES = [
    "User {user} logged in successfully from {ip}",
    "Failed login attempt for user {user} from {ip}",
    "Payment TXN-{n} processed for {user} amount {amount}",
    "Query executed in {amount} ms",
]


def batch(day: dt.date, n: int, seed: int) -> pl.DataFrame:
    """``n`` log events of ``day`` shaped like validated_logs (without partition_date)."""
    rng = random.Random(seed)
    start = dt.datetime.combine(day, dt.time())
    rows = []
    for i in range(n):
        user, ip = f"USR-{rng.randrange(40):05d}", f"10.0.{rng.randrange(8)}.{rng.randrange(30)}"
        amount = round(rng.uniform(1, 5000), 2)
        rows.append(
            {
                "event_id": f"{seed}-{i}",
                "ts": start + dt.timedelta(seconds=rng.uniform(0, 86_399)),
                "source_service": rng.choice(SERVICES),
                "log_level": rng.choice(["DEBUG", "INFO", "INFO", "WARN", "ERROR"]),
                "message": rng.choice(MESSAGES).format(
                    user=user, ip=ip, n=rng.randrange(10**6), amount=amount
                ),
                "correlation_id": None if rng.random() < 0.3 else f"c-{rng.randrange(50)}",
                "user_id": None if rng.random() < 0.1 else user,
                "ip_address": ip,
                "geo_location": rng.choice(["GB-LON", "GB-MAN", "US-NYC", "DE-BER", "RU-MOW"]),
                "metrics": json.dumps(
                    {"response_time_ms": rng.uniform(5, 900), "success_rate": rng.random(), "amount": amount}
                ),
            }
        )
    schema = {k: v for k, v in SOURCE_SCHEMA.items() if k != "partition_date"}
    return pl.DataFrame(rows, schema=schema)


def one_shot(builder: FeatureBuilder, events: pl.DataFrame) -> pl.DataFrame:
    """The query planned and run once on a fresh connection (as the pipeline runs it: statistics on)."""
    day = events["ts"].min().date()
    frame = events.with_columns(pl.lit(day).alias("partition_date")).select(list(SOURCE_SCHEMA))
    con = duckdb.connect(":memory:")
    try:
        for name in builder._chain:
            if builder.project.models[name].is_seed:
                builder.project.materialize(con, name)
        con.register(builder.source, frame.cast(SOURCE_SCHEMA).to_arrow())
        return con.execute(builder._query(day)).pl()
    finally:
        con.close()


def test_a_reused_plan_gives_what_a_fresh_one_gives_whatever_came_before():
    builder = FeatureBuilder()
    monday, tuesday = dt.date(2026, 1, 5), dt.date(2026, 1, 6)
    # the first batch of a day is prepared on an empty table; then sizes, days and value ranges change
    batches = [
        batch(monday, 1, 1),
        batch(monday, 400, 2),
        batch(tuesday, 3, 3),
        batch(monday, 1, 4),
        batch(tuesday, 250, 5),
        batch(monday, 40, 6),
    ]
    for events in batches:
        got, expected = builder.features(events), one_shot(builder, events)
        assert got.height == events.height
        assert got.columns == expected.columns
        for column in got.columns:
            if got[column].dtype.is_float():
                assert got[column].to_list() == pytest.approx(
                    expected[column].to_list(), abs=1e-9, nan_ok=True
                )
            else:
                assert got[column].to_list() == expected[column].to_list(), column


def test_each_day_is_planned_once_per_session_and_nothing_is_left_in_the_table():
    builder = FeatureBuilder()
    day = dt.date(2026, 1, 5)
    for seed in range(5):
        builder.features(batch(day, 1 + seed * 10, seed))
    session = builder._idle.get_nowait()
    assert builder._idle.empty()  # requests one after another share one session
    assert session.con.execute("SELECT count(*) FROM duckdb_prepared_statements()").fetchone()[0] == 1
    assert session.con.execute(f'SELECT count(*) FROM "{builder.source}"').fetchone()[0] == 0
