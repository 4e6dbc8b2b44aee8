"""The naive baseline of a source (``Source.baseline``), scored beside the real models in evaluation."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl

from bankanom_pipeline.detection.sources import Source
from bankanom_pipeline.warehouse.frames import read_frame

# IsolationForest.score_samples is -1 * the paper's score s(x); s(x) > 0.5 is the paper's (and sklearn's
# contamination="auto") cut between normal and anomalous
BASELINE_THRESHOLD = 0.5
TRAINING_ROWS = 200_000


class BaselineMismatch(ValueError):
    """The baseline's table lacks some of the scored items: the scores are older than the features."""


def baseline_scores(
    con: duckdb.DuckDBPyConnection, source: Source, day: str, keys: pl.Series, window: dict | None = None
) -> np.ndarray:
    """The baseline's scores of the items ``keys`` (values of ``source.baseline.key``) of ``day``, in
    that order: a default IsolationForest trained on ``window`` ({"start", "end"}: the promoted models'
    training window) when the baseline trains on one, else on a seeded sample of the day."""
    from sklearn.ensemble import IsolationForest

    baseline = source.baseline
    columns = ", ".join(baseline.columns)
    day_rows = read_frame(
        con,
        f"SELECT {baseline.key}, {columns} FROM {baseline.table} WHERE partition_date = ?"
        + (f" ORDER BY {baseline.key}" if baseline.trained_on_window else ""),
        [day],
    )
    if baseline.trained_on_window:
        if window is None:
            raise ValueError(f"the {source.name} baseline trains on the promoted models' window: give it")
        train = read_frame(
            con,
            # the key is a hash: its smallest values are a fixed pseudo-random sample of the window, and
            # in key order the forest's subsamples depend on the rows only, not on the storage's scan order
            f"SELECT {columns} FROM {baseline.table} WHERE partition_date BETWEEN ? AND ? "
            f"ORDER BY {baseline.key} LIMIT {TRAINING_ROWS}",
            [window["start"], window["end"]],
        )
    else:
        train = day_rows.sample(min(day_rows.height, TRAINING_ROWS), seed=7).drop(baseline.key)
    model = IsolationForest(random_state=7, n_jobs=-1).fit(train.to_numpy())
    ordered = pl.DataFrame({baseline.key: keys}).join(
        day_rows, on=baseline.key, how="left", maintain_order="left"
    )
    if baseline.trained_on_window and day_rows.height != len(keys):
        raise BaselineMismatch(
            f"{baseline.table} and {source.scored_table} disagree on {day}'s rows: rerun {source.scored_table}"
        )
    return -model.score_samples(ordered.drop(baseline.key).to_numpy())
