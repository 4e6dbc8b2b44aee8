"""The detection settings (``detection.yaml``), validated so that a typo names its key."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PATH = Path(__file__).with_name("detection.yaml")
MODEL_NAMES = ("isolation_forest", "local_outlier_factor")
# detectors a source may add beside the two (its config has a section for each it trains)
OPTIONAL_MODELS = ("ecod",)


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
    # the subset of ``features`` this model sees (None: all of them)
    features: list[str] | None = None
    # scaled values clipped to +-clip (None: no clipping; the forest splits uniformly between a node's
    # min and max, so clipping shrinks exactly the gaps that isolate an extreme value)
    clip: float | None = Field(default=None, gt=0)
    n_estimators: int = Field(ge=10, le=2000)
    max_samples: int = Field(ge=16)
    max_features: float = Field(gt=0, le=1)
    random_state: int = 7


class LocalOutlierFactorParams(_Strict):
    features: list[str] | None = None  # the subset of ``features`` this model sees (None: all)
    pca_components: int = Field(ge=1)
    n_neighbors: int = Field(ge=2, le=500)
    train_rows: int = Field(ge=100)
    random_state: int = 7


class EcodHourPrior(_Strict):
    # features ECOD reads: the account's earlier transactions near this hour of the day, all of them,
    # and the hour of the day (each with transform none)
    count: str
    total: str
    hour: str
    window: int = Field(default=2, ge=0, le=11)
    weight: float = Field(default=2.0, gt=0)


class EcodStudentTail(_Strict):
    # features ECOD reads (transform none): a z-score against the account's own history, and how many
    # earlier items that history holds
    value: str
    count: str


class EcodDebitPrior(_Strict):
    # features ECOD reads (transform none): the debit's z it replaces, the log amount, whether it is a
    # credit, the number of earlier debits and their log amounts' mean and standard deviation
    value: str
    log_amount: str
    credit: str
    count: str
    mean: str
    sd: str
    strength: float = Field(default=3.0, gt=0)


class EcodParams(_Strict):
    # the subset of ``features`` ECOD reads (None: all); its distributions are frozen at training
    features: list[str] | None = None
    # per feature, the tail that counts (ecod.py): both (ECOD's rule, the default), left or right;
    # none: read only as an input of hour_prior; geometric: a count's tail above its usual value
    tails: dict[str, Literal["both", "left", "right", "none", "geometric"]] = {}
    # the score adds this many times its most extreme feature to the sum over features
    max_weight: float = Field(default=0.0, ge=0)
    # each feature counts only its outlyingness beyond this many nats (ecod.py)
    excess: float = Field(default=0.0, ge=0)
    # an hour-of-day count scored as the hour's surprise under the account's habit (ecod.HourPrior)
    hour_prior: EcodHourPrior | None = None
    # a z-score's tail also read as Student's t for the length of its history (ecod.StudentTail)
    student: EcodStudentTail | None = None
    # that z worked out with the training population's debits as a prior (ecod.DebitPrior)
    debit_prior: EcodDebitPrior | None = None
    # values rounded to this many decimals (of the scaled feature) before ECOD counts or scores them, so
    # that last-bit differences between the API's and the pipeline's features land on the same step
    decimals: int | None = Field(default=9, ge=0, le=15)
    # training rows its per-feature distributions are counted on (a seeded sample of the window)
    train_rows: int = Field(default=200_000, ge=1000)
    random_state: int = 7


class Thresholds(_Strict):
    isolation_forest: float = Field(gt=0, lt=1)
    local_outlier_factor: float = Field(gt=0, lt=1)
    # the ensemble (see models.ensemble): anomalous when IF >= ensemble, or IF >= ensemble_lof_floor and
    # LOF >= ensemble_lof
    ensemble: float = Field(gt=0, lt=1)
    ensemble_lof_floor: float = Field(gt=0, lt=1)
    ensemble_lof: float = Field(gt=0, lt=1)
    # with an ECOD detector: its own flag, and the ensemble's ECOD term (see models.ensemble_with_ecod)
    ecod: float | None = Field(default=None, gt=0, lt=1)
    ensemble_ecod_weight: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _floor_below_cut(self) -> Thresholds:
        if self.ensemble_lof_floor > self.ensemble:
            raise ValueError("thresholds.ensemble_lof_floor must not be above thresholds.ensemble")
        return self


class Scoring(_Strict):
    # scored_events scores a day in batches of this many rows (bounded memory whatever the day's size)
    chunk_rows: int = Field(default=200_000, ge=1000)


class DetectionConfig(_Strict):
    training: Training
    features: dict[str, Literal["none", "log1p", "log"]] = Field(min_length=1)
    scaling: Scaling
    isolation_forest: IsolationForestParams
    local_outlier_factor: LocalOutlierFactorParams
    thresholds: Thresholds
    scoring: Scoring = Scoring()
    ecod: EcodParams | None = None  # a third detector for single-feature extremes (transactions)

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)

    @property
    def model_names(self) -> tuple[str, ...]:
        """The detectors this source trains and promotes together: IF and LOF, plus each optional one
        its config has a section for."""
        return MODEL_NAMES + tuple(n for n in OPTIONAL_MODELS if getattr(self, n) is not None)

    @model_validator(mode="after")
    def _subsets_known(self) -> DetectionConfig:
        for name in self.model_names:
            unknown = set(getattr(self, name).features or []) - set(self.features)
            if unknown:
                raise ValueError(f"{name}.features not in features: {', '.join(sorted(unknown))}")
        t = self.thresholds
        if (self.ecod is None) != (t.ecod is None) or (self.ecod is None) != (t.ensemble_ecod_weight is None):
            raise ValueError(
                "an ecod section needs thresholds.ecod and thresholds.ensemble_ecod_weight, and only it"
            )
        if self.ecod is not None:
            unknown = set(self.ecod.tails) - set(self.model_features("ecod"))
            if unknown:
                raise ValueError(
                    f"ecod.tails names features ECOD does not read: {', '.join(sorted(unknown))}"
                )
            ecod_features = self.model_features("ecod")
            for key, option in (
                ("hour_prior", self.ecod.hour_prior),
                ("student", self.ecod.student),
                ("debit_prior", self.ecod.debit_prior),
            ):
                if option is None:
                    continue
                names = {v for v in option.model_dump().values() if isinstance(v, str)}  # the features
                if names - set(ecod_features) or any(ecod_features[f] != "none" for f in names):
                    raise ValueError(
                        f"ecod.{key}'s features must be features ECOD reads, with transform none"
                    )
        return self

    def model_features(self, name: str) -> dict[str, str]:
        """The feature space (name -> transform) of model ``name``. The Isolation Forest's space holds
        every feature (deviations and attributions are reported in it) and the forest itself reads only
        ``isolation_forest.features``; LOF's space is its own subset."""
        subset = None if name == "isolation_forest" else getattr(self, name).features
        return {f: t for f, t in self.features.items() if subset is None or f in subset}

    def model_clip(self, name: str) -> float | None:
        if name == "ecod":
            return None  # ECOD ranks values: clipping would tie the extremes it tells apart
        return self.isolation_forest.clip if name == "isolation_forest" else self.scaling.clip


def load_detection_config(path: str | Path | None = None) -> DetectionConfig:
    path = Path(path) if path else DEFAULT_PATH
    return DetectionConfig.model_validate(yaml.safe_load(path.read_text()))


@cache
def default_detection_config() -> DetectionConfig:
    return load_detection_config()
