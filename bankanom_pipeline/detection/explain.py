"""Explaining a score: the features furthest from normal, each with its training normal.

One home for what the API's predictions, ``scored_transactions`` and incidents say about why an item is
anomalous. A deviation is the robust z of a feature in the Isolation Forest's feature space (it holds
every feature, unclipped); "normal" is the training median in raw units. Plain Python: no Dagster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from bankanom_pipeline.detection.models import Detector
from bankanom_pipeline.detection.scoring import IF, deviations
from bankanom_pipeline.detection.space import LOG_FLOOR, FeatureSpace

DEVIATION_DECIMALS = 3


def normal_values(space: FeatureSpace) -> np.ndarray:
    """The training median of each feature in raw units, from a fitted space: its centre with the
    log1p / log transform undone."""
    centre = np.asarray(space.center, dtype=float)
    transforms = np.asarray(space.transforms)
    raw = np.where(transforms == "log1p", np.sign(centre) * np.expm1(np.abs(centre)), centre)
    return np.where(transforms == "log", np.exp(centre) - LOG_FLOOR, raw)


def rank(key: np.ndarray, n: int) -> np.ndarray:
    """Per row of ``key`` (rows, features), the columns of its ``n`` largest values, largest first;
    ties keep column order."""
    return np.argsort(-key, axis=1, kind="stable")[:, :n]


@dataclass(frozen=True)
class Ranking:
    """The features furthest from normal, per row of a frame: arrays of shape (rows, n)."""

    features: np.ndarray  # feature names
    deviation: np.ndarray  # robust z, rounded to DEVIATION_DECIMALS
    value: np.ndarray | None  # the row's raw value (missing = 0), when asked for
    normal: np.ndarray | None  # the training median, when values were asked for

    def records(self) -> list[list[dict]]:
        """Per row, ``{"feature", "value", "normal", "deviation"}`` for each ranked feature (the API's
        ``top_features``)."""
        if self.value is None:
            raise ValueError("ranked without values: nothing to list beside the deviations")
        # dict literals from lists: a POST /predict batch lists thousands of events
        columns = (self.features, self.value, self.normal, self.deviation)
        return [
            [{"feature": f, "value": v, "normal": n, "deviation": d} for f, v, n, d in zip(*row, strict=True)]
            for row in zip(*(c.tolist() for c in columns), strict=True)
        ]


def furthest_from_normal(
    frame: pl.DataFrame, detectors: Mapping[str, Detector], models: Sequence[str], n: int, values: bool
) -> Ranking:
    """The ``n`` features read by any of ``models`` that deviate most from the training median (by
    absolute robust z), most deviating first, for each row of ``frame`` (``features_events`` or
    ``features_transactions`` columns). ``values``: also each feature's raw value and normal."""
    space, columns, names = _read(detectors, models)
    z = deviations(frame, detectors)[:, columns]
    raw = frame.select(names.tolist()).fill_null(0).to_numpy() if values else None
    return _ranked(space, columns, names, z, raw, n)


def furthest_from_normal_of(
    values: np.ndarray,
    columns: Sequence[str],
    detectors: Mapping[str, Detector],
    models: Sequence[str],
    n: int,
) -> Ranking:
    """``furthest_from_normal(..., values=True)`` of the rows of ``values`` (raw features, one column per
    name of ``columns``, NaN = missing) without a frame (``FeatureSpace.matrix_of``): the same ranking,
    for the API's single events."""
    space, read, names = _read(detectors, models)
    z = space.matrix_of(values, columns)[:, read]
    position = {name: i for i, name in enumerate(columns)}
    raw = np.asarray(values, dtype=np.float64)[:, [position[name] for name in names]]
    raw[np.isnan(raw)] = 0.0  # a missing value is listed as 0, as the frame's nulls are
    return _ranked(space, read, names, z, raw, n)


def _read(
    detectors: Mapping[str, Detector], models: Sequence[str]
) -> tuple[FeatureSpace, list[int], np.ndarray]:
    """The explaining space (the forest's: it holds every feature), the positions in it of the features
    any of ``models`` reads, and their names."""
    space = detectors[IF].space
    read = set().union(*(detectors[m].input_features() for m in models))
    columns = [i for i, name in enumerate(space.names) if name in read]
    return space, columns, np.asarray([space.names[i] for i in columns], dtype=object)


def _ranked(
    space: FeatureSpace, columns: list[int], names: np.ndarray, z: np.ndarray, raw: np.ndarray | None, n: int
) -> Ranking:
    order = rank(np.abs(z), n)
    picked = np.round(np.take_along_axis(z, order, axis=1), DEVIATION_DECIMALS)
    if raw is None:
        return Ranking(names[order], picked, None, None)
    normal = normal_values(space)[columns]
    return Ranking(names[order], picked, np.take_along_axis(raw, order, axis=1), normal[order])
