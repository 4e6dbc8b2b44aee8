"""The training sample read from the sampled keys is the frame sampled from the whole ordered window."""

import datetime as dt

import duckdb
import numpy as np
import polars as pl

from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.training import load_window


def test_sampled_rows_and_their_order_are_those_of_sampling_the_whole_window():
    base = default_detection_config()
    config = base.model_copy(update={"training": base.training.model_copy(update={"max_rows": 1500})})
    rng = np.random.default_rng(4)
    n = 5000
    frame = pl.DataFrame(rng.normal(size=(n, len(config.feature_names))), schema=config.feature_names)
    frame = frame.with_columns(
        event_key=pl.Series(rng.permutation(n) * 7919, dtype=pl.UInt64),  # stored in no particular order
        partition_date=pl.lit(dt.date(2026, 1, 5)),
    )
    con = duckdb.connect()
    con.execute("CREATE TABLE features_events AS SELECT * FROM frame")
    sampled, start = load_window(con, "2026-01-05", config)
    whole = frame.sort("event_key").select(config.feature_names)
    assert start == "2026-01-05"
    assert sampled.equals(whole.sample(1500, seed=config.training.seed))
    # a window at most max_rows long is read whole, in key order
    small = base.model_copy(update={"training": base.training.model_copy(update={"max_rows": n})})
    assert load_window(con, "2026-01-05", small)[0].equals(whole)
