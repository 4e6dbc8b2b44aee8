"""One day of a source scored and baselined by the plain code the scoring and evaluation assets call,
on small generated features: the order transactions are scored in, their explained flags, and the
baseline's alignment with the scored items."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.detection.baseline import BaselineMismatch, baseline_scores
from bankanom_pipeline.detection.models import ALL_TRAINERS
from bankanom_pipeline.detection.partition_scoring import (
    ECOD_COLUMNS,
    SCORE_COLUMNS,
    NothingToScore,
    score_frames,
    score_partition,
)
from bankanom_pipeline.detection.sources import LOGS, TRANSACTIONS
from bankanom_pipeline.detection.space import FeatureSpace

DAY = "2026-01-06"
N = 3000


def _features(config) -> pl.DataFrame:
    rng = np.random.default_rng(5)
    values = rng.normal(10, 1, (N, len(config.feature_names)))
    values[:60, :4] += 12  # far-out rows, so that some transactions are flagged
    start = dt.datetime(2026, 1, 6, tzinfo=dt.UTC)
    ids = {
        "partition_date": [dt.date(2026, 1, 6)] * N,
        "transaction_id": [f"t{i:05d}" for i in range(N)],
        "account_id": [f"a{i % 40}" for i in range(N)],
        # several transactions share a second: the order is (ts, transaction_id), not ts alone
        "ts": [start + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 600, N)],
        "amount": rng.uniform(1, 500, N),
        **{c: ["x"] * N for c in ("transaction_type", "channel", "location", "device_id")},
        "ip_address": ["10.0.0.1"] * N,
        "merchant_id": ["m"] * N,
    }
    return pl.DataFrame(ids).with_columns(pl.DataFrame(values, schema=config.feature_names))


def _detectors(frame: pl.DataFrame, config) -> dict:
    detectors = {}
    for name in config.model_names:
        train = ALL_TRAINERS[name]
        space = FeatureSpace.fit(
            frame, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
        )
        detectors[name] = train(space.matrix(frame), space, config)
        detectors[name].version = f"{name}-test"
    return detectors


@pytest.fixture(scope="module")
def transactions():
    config = TRANSACTIONS.config
    frame = _features(config)
    return frame, _detectors(frame, config), config


def test_transactions_are_scored_in_their_order_whatever_order_they_arrive(transactions):
    frame, detectors, config = transactions
    config = config.model_copy(update={"scoring": config.scoring.model_copy(update={"chunk_rows": 700})})
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1)
    scored = score_frames(TRANSACTIONS, shuffled.iter_slices(500), detectors, config)
    ordered = score_frames(TRANSACTIONS, [frame.sort("ts", "transaction_id")], detectors, config)
    assert scored.columns == [
        *TRANSACTIONS.scored_columns,
        *SCORE_COLUMNS,
        *ECOD_COLUMNS,
        "top_features",
        "evidence",
    ]
    assert scored.equals(ordered)
    assert scored.select("ts", "transaction_id").equals(
        frame.select("ts", "transaction_id").sort("ts", "transaction_id")
    )
    flagged = scored["is_anomaly"]
    assert 0 < flagged.sum() < N
    assert scored["top_features"].is_not_null().equals(flagged)  # explained: the anomalous ones only
    assert scored["evidence"].is_not_null().equals(flagged)


def test_logs_keep_their_columns_and_are_not_explained(transactions):
    frame, detectors, config = transactions
    logs = dataclasses.replace(LOGS, scored_columns=("transaction_id",))  # logs' rules, these features
    scored = score_frames(logs, frame.iter_slices(1000), detectors, config)
    assert scored.columns == [
        "transaction_id",
        *SCORE_COLUMNS,
        *ECOD_COLUMNS,
    ]  # the config's ECOD still scores
    assert scored["transaction_id"].equals(frame["transaction_id"])  # as read, not re-sorted


def test_a_day_is_written_once_with_its_counts_and_a_day_without_features_is_refused(transactions):
    frame, detectors, _ = transactions
    con = duckdb.connect()
    con.register("_features", frame.to_arrow())
    con.execute("CREATE TABLE features_transactions AS SELECT * FROM _features")
    for _ in range(2):  # a re-run replaces the day
        day = score_partition(con, TRANSACTIONS, DAY, detectors)
    assert day.rows == day.stored == day.features_rows == N
    assert (
        day.flagged == con.execute("SELECT count(*) FROM scored_transactions WHERE is_anomaly").fetchone()[0]
    )
    assert 0 < day.flagged < N and day.if_version == "isolation_forest-test"
    with pytest.raises(NothingToScore, match="features_transactions has no rows for 2026-01-07"):
        score_partition(con, TRANSACTIONS, "2026-01-07", detectors)


def _baseline_table(con, source, keys: list[str], days: list[str]) -> None:
    rng = np.random.default_rng(2)
    columns = {c: rng.normal(0, 1, len(keys) * len(days)) for c in source.baseline.columns}
    table = pl.DataFrame(
        {
            "partition_date": [dt.date.fromisoformat(d) for d in days for _ in keys],
            source.baseline.key: keys * len(days),
            **columns,
        }
    )
    con.register("_rows", table.to_arrow())
    con.execute(f"CREATE TABLE {source.baseline.table} AS SELECT * FROM _rows")


def test_the_baseline_scores_the_items_in_the_order_asked():
    con = duckdb.connect()
    keys = [f"t{i:04d}" for i in range(400)]
    _baseline_table(con, TRANSACTIONS, keys, [DAY])
    forward = baseline_scores(con, TRANSACTIONS, DAY, pl.Series(keys))
    backward = baseline_scores(con, TRANSACTIONS, DAY, pl.Series(keys[::-1]))
    assert np.array_equal(forward, backward[::-1])
    assert forward.std() > 0


def test_the_logs_baseline_trains_on_the_window_and_refuses_items_it_lacks():
    con = duckdb.connect()
    keys = [f"k{i:04d}" for i in range(300)]
    _baseline_table(con, LOGS, keys, ["2026-01-05", DAY])
    window = {"start": "2026-01-05", "end": "2026-01-05"}
    scores = baseline_scores(con, LOGS, DAY, pl.Series(sorted(keys)), window)
    assert len(scores) == len(keys) and scores.std() > 0
    with pytest.raises(BaselineMismatch):
        baseline_scores(con, LOGS, DAY, pl.Series(sorted(keys)[:-1]), window)
    with pytest.raises(ValueError, match="window"):
        baseline_scores(con, LOGS, DAY, pl.Series(sorted(keys)))
