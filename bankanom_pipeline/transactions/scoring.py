"""What transaction scoring adds to the shared scoring code: the features behind each flagged
transaction, kept with its scores so that incidents and the API can say why."""

from __future__ import annotations

import numpy as np
import polars as pl

from bankanom_pipeline.detection.models import Detector
from bankanom_pipeline.detection.scoring import IF, deviations

TOP_FEATURES = 3
TOP_FEATURES_TYPE = pl.List(pl.Struct({"feature": pl.String, "deviation": pl.Float64}))


def top_features(frame: pl.DataFrame, detectors: dict[str, Detector], n: int = TOP_FEATURES) -> pl.Series:
    """The ``n`` features the forest reads that deviate most from the training normal (robust z), per row
    of ``frame``, most deviating first."""
    names = detectors[IF].space.names
    read = [names.index(f) for f in detectors[IF].input_features()]
    if frame.height == 0:
        return pl.Series("top_features", [], dtype=TOP_FEATURES_TYPE)
    z = deviations(frame, detectors)[:, read]
    order = np.argsort(-np.abs(z), axis=1, kind="stable")[:, :n]
    rows = [
        [{"feature": names[read[j]], "deviation": round(float(z[i, j]), 3)} for j in order[i]]
        for i in range(len(z))
    ]
    return pl.Series("top_features", rows, dtype=TOP_FEATURES_TYPE)
