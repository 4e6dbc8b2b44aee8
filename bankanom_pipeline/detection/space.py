"""The feature space both models share: transform, robust scaling, and per-feature deviations.

Fitted on the training window and stored as plain numbers in each model version's manifest (no pickle),
so the pipeline and the API build exactly the same matrix from the same ``features_events`` columns.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class FeatureSpace:
    names: list[str]
    transforms: list[str]  # "none" | "log1p" | "log", one per name
    center: list[float]  # median of the transformed training values
    scale: list[float]  # IQR of the transformed training values (or a fallback, see fit)
    clip: float | None  # scaled values are clipped to +-clip (None: not clipped)

    @classmethod
    def fit(
        cls, frame: pl.DataFrame, features: dict[str, str], min_scale: float, clip: float | None
    ) -> FeatureSpace:
        names = list(features)
        transforms = [features[n] for n in names]
        values = _transform(_raw(frame, names), transforms)
        q25, q50, q75 = np.quantile(values, [0.25, 0.5, 0.75], axis=0)
        iqr = q75 - q25
        # mostly-constant features (a count that is usually 0) have no IQR: a share of their spread
        # keeps a rare non-zero value visible without making it infinite
        fallback = np.maximum(values.std(axis=0) * min_scale, 1e-9)
        scale = np.where(iqr > 0, iqr, np.where(values.std(axis=0) > 0, fallback, 1.0))
        return cls(names, transforms, q50.tolist(), scale.tolist(), clip)

    def matrix(self, frame: pl.DataFrame, features: list[str] | None = None) -> np.ndarray:
        """Scaled features, one row per event (float64, C order); ``features``: only these columns of
        the space, in that order (each column is computed on its own, so they are the same numbers)."""
        at = self._at(features)
        raw = _raw(frame, [self.names[i] for i in at])
        return self._scaled(
            raw, [self.transforms[i] for i in at], np.asarray(self.center)[at], np.asarray(self.scale)[at]
        )

    def matrix_of(
        self, values: np.ndarray, columns: Sequence[str], features: Sequence[str] | None = None
    ) -> np.ndarray:
        """``matrix`` of the rows of ``values`` (raw feature values, float64, one column per name of
        ``columns``; NaN = missing), without a frame: the same arithmetic on the same numbers, for the
        API's single events, where building a polars frame cost more than scoring."""
        take, transforms, center, scale = self._plan(
            tuple(columns), None if features is None else tuple(features)
        )
        raw = np.asarray(values, dtype=np.float64)[:, take]  # a C-ordered copy
        raw[np.isnan(raw)] = 0.0
        return self._scaled(raw, transforms, center, scale)

    def _plan(self, columns: tuple[str, ...], features: tuple[str, ...] | None) -> tuple:
        """What ``matrix_of`` reads for these input columns and features, worked out once per pair (the
        API asks with the same pair for every request)."""
        plan = self._plans.get((columns, features))
        if plan is None:
            at = self._at(features)
            position = {name: i for i, name in enumerate(columns)}
            missing = [self.names[i] for i in at if self.names[i] not in position]
            if missing:
                raise ValueError(f"features missing from the input: {', '.join(missing)}")
            take = np.asarray([position[self.names[i]] for i in at], dtype=np.intp)
            transforms = [self.transforms[i] for i in at]
            plan = (take, transforms, np.asarray(self.center)[at], np.asarray(self.scale)[at])
            self._plans[(columns, features)] = plan
        return plan

    @functools.cached_property
    def _plans(self) -> dict:
        return {}

    def _at(self, features: Sequence[str] | None) -> list[int]:
        return list(range(len(self.names))) if features is None else [self.names.index(f) for f in features]

    def _scaled(
        self, raw: np.ndarray, transforms: list[str], center: np.ndarray, scale: np.ndarray
    ) -> np.ndarray:
        values = _transform(raw, transforms)
        values -= center
        values /= scale
        if self.clip is None:
            return values
        return np.clip(values, -self.clip, self.clip, out=values)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpace:
        return cls(**data)


def _raw(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(f"features missing from the input: {', '.join(missing)}")
    # one cast of the whole selection, then NaN/null -> 0 in numpy: a per-column expression each cost
    # ~0.1 ms, most of the time for the API's single events
    values = np.array(frame.select(names).cast(pl.Float64).to_numpy(), dtype=np.float64, order="C")
    values[np.isnan(values)] = 0.0
    return values


def _transform(values: np.ndarray, transforms: list[str]) -> np.ndarray:
    logged = [i for i, t in enumerate(transforms) if t == "log1p"]
    if logged:
        part = values[:, logged]
        values[:, logged] = np.sign(part) * np.log1p(np.abs(part))
    # "log": for shares in 0..1 whose informative end is near 0 (a user's share of events from this
    # country): log1p would leave 0.01 and 0.1 almost equal, ln spreads them
    ln = [i for i, t in enumerate(transforms) if t == "log"]
    if ln:
        values[:, ln] = np.log(np.maximum(values[:, ln], 0.0) + LOG_FLOOR)
    return values


LOG_FLOOR = 1e-3
