"""Scoring a day in batches: bounded batches, and the same scores and decisions as scoring it whole."""

import duckdb
import numpy as np
import polars as pl

from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.models import TRAINERS
from bankanom_pipeline.detection.scoring import score, score_batches
from bankanom_pipeline.detection.space import FeatureSpace
from bankanom_pipeline.warehouse.frames import read_batches


def _detectors(frame: pl.DataFrame, config):
    out = {}
    for name, train in TRAINERS.items():
        space = FeatureSpace.fit(
            frame, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
        )
        out[name] = train(space.matrix(frame), space, config)
    return out


def test_batches_are_bounded_and_score_like_the_whole_day():
    config = default_detection_config()
    rng = np.random.default_rng(3)
    n = 5000
    values = rng.normal(10, 1, (n, len(config.feature_names)))
    values[:200, :6] += 15  # a few far-out rows, so some events are flagged
    frame = pl.DataFrame(values, schema=config.feature_names).with_columns(
        event_id=pl.Series([f"e{i}" for i in range(n)])
    )
    detectors = _detectors(frame, config)
    con = duckdb.connect()
    con.register("features", frame.to_arrow())
    sizes = [b.height for b in read_batches(con, "SELECT * FROM features ORDER BY event_id", rows=1024)]
    assert max(sizes) <= 1024 and sum(sizes) == n and len(sizes) >= 5

    batches = read_batches(con, "SELECT * FROM features ORDER BY event_id", rows=1024)
    scored = score_batches(batches, detectors, config, ["event_id"])
    whole = pl.concat([frame.select("event_id"), score(frame, detectors, config).frame()], how="horizontal")
    assert scored.height == n
    assert scored.sort("event_id").equals(whole.sort("event_id"))
    assert 0 < scored["is_anomaly"].sum() < n
