"""The detection settings (``detection.yaml``), validated so that a typo names its key."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PATH = Path(__file__).with_name("detection.yaml")
MODEL_NAMES = ("isolation_forest", "local_outlier_factor")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Training(_Strict):
    window_days: int = Field(ge=1, le=90)
    max_rows: int = Field(ge=1000)
    seed: int = 7


class Scaling(_Strict):
    min_scale: float = Field(gt=0, le=1)
    clip: float = Field(gt=0)


class IsolationForestParams(_Strict):
    n_estimators: int = Field(ge=10, le=2000)
    max_samples: int = Field(ge=16)
    max_features: float = Field(gt=0, le=1)
    random_state: int = 7


class LocalOutlierFactorParams(_Strict):
    pca_components: int = Field(ge=1)
    n_neighbors: int = Field(ge=2, le=500)
    train_rows: int = Field(ge=100)
    random_state: int = 7


class Thresholds(_Strict):
    isolation_forest: float = Field(gt=0, lt=1)
    local_outlier_factor: float = Field(gt=0, lt=1)
    ensemble: float = Field(gt=0, lt=1)


class DetectionConfig(_Strict):
    training: Training
    features: dict[str, Literal["none", "log1p"]] = Field(min_length=1)
    scaling: Scaling
    isolation_forest: IsolationForestParams
    local_outlier_factor: LocalOutlierFactorParams
    thresholds: Thresholds

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)


def load_detection_config(path: str | Path | None = None) -> DetectionConfig:
    path = Path(path) if path else DEFAULT_PATH
    return DetectionConfig.model_validate(yaml.safe_load(path.read_text()))


@cache
def default_detection_config() -> DetectionConfig:
    return load_detection_config()
