"""Training and scoring of the two detectors, and the normalised 0..1 score they share.

Both estimators score "higher = more normal" (``score_samples``); we negate so that higher = more
anomalous, then map raw scores through the training window's empirical CDF: 0.97 means "scores higher
than 97% of the training events". That makes IF and LOF comparable and thresholds readable.

scikit-learn (and the fast scorers built on it) is imported inside the functions that train or score:
every process loading the code location imports this module, and most never touch a model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from bankanom_pipeline.detection.config import DetectionConfig, Thresholds, default_detection_config
from bankanom_pipeline.detection.space import FeatureSpace

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import Pipeline

    from bankanom_pipeline.detection.ecod import FrozenEcod
    from bankanom_pipeline.detection.neighbour_lof import NeighbourLof
    from bankanom_pipeline.detection.packed_forest import PackedForest

# CDF knots: dense in the tail, where thresholds live
_PROBS = np.unique(
    np.concatenate([np.linspace(0, 0.9, 91), np.linspace(0.9, 0.999, 991), np.linspace(0.999, 1, 101)])
)


@dataclass
class Detector:
    """A fitted estimator with the feature space and score calibration it was trained with."""

    name: str
    estimator: IsolationForest | Pipeline | FrozenEcod  # LOF: PCA then LocalOutlierFactor(novelty=True);
    # IF: the forest, or column selection then the forest; ECOD: its frozen per-feature distributions
    space: FeatureSpace
    knots: list[float]  # raw score at each of _PROBS over the training rows
    version: str = ""  # the registry version it was loaded from ("" while training)

    def input_features(self) -> list[str]:
        """The features the estimator reads: its space, or the forest's column selection from it."""
        from sklearn.pipeline import Pipeline

        if isinstance(self.estimator, Pipeline) and "select" in self.estimator.named_steps:
            keep = self.estimator.named_steps["select"].transformers_[0][2]
            return [self.space.names[i] for i in keep]
        return list(self.space.names)

    def raw_scores(self, matrix: np.ndarray) -> np.ndarray:
        if self._fast is not None:
            return -self._fast.score_samples(matrix)
        return -self.estimator.score_samples(matrix)

    @functools.cached_property
    def _fast(self) -> PackedForest | NeighbourLof | None:
        """The estimator's ``score_samples``, same numbers, faster (see packed_forest.py and
        neighbour_lof.py): on both cores and, for the API's small batches, without sklearn's per-call
        overhead. None for an estimator neither knows."""
        from bankanom_pipeline.detection.neighbour_lof import NeighbourLof
        from bankanom_pipeline.detection.packed_forest import PackedForest

        return PackedForest.of(self.estimator) or NeighbourLof.of(self.estimator)

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        knots = self._knots
        return np.interp(raw, knots, _PROBS[: len(knots)], left=0.0, right=1.0)

    @property
    def _knots(self) -> np.ndarray:
        # an array kept beside the list it was made from (converting ~1,200 floats cost as much as
        # scoring one event); rebuilt if the list is replaced, as training does after calibrating
        cached = self.__dict__.get("_knots_of")
        if cached is None or cached[0] is not self.knots:
            cached = (self.knots, np.asarray(self.knots))
            self.__dict__["_knots_of"] = cached
        return cached[1]

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        return self.normalise(self.raw_scores(matrix))

    def frame_scores(self, frame: pl.DataFrame) -> np.ndarray:
        """``scores(space.matrix(frame))``, building only the columns the estimator reads: the forest's
        space holds all 57 features (for explanations) and it reads 23."""
        if self._scores_selected:
            return self.normalise(-self._fast.score_selected(self.space.matrix(frame, self._inputs)))
        return self.scores(self.space.matrix(frame))

    def frame_columns(self) -> list[str]:
        """The feature columns ``frame_scores`` reads from its frame."""
        return list(self._inputs) if self._scores_selected else list(self.space.names)

    @property
    def _scores_selected(self) -> bool:
        from bankanom_pipeline.detection.packed_forest import PackedForest

        return isinstance(self._fast, PackedForest) and self._fast.columns is not None

    def array_scores(self, values: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """``frame_scores`` of the rows of ``values`` (raw features, one column per name of ``columns``),
        built with ``space.matrix_of``: the same numbers without a polars frame."""
        if self._scores_selected:
            selected = self.space.matrix_of(values, columns, self._inputs)
            return self.normalise(-self._fast.score_selected(selected))
        return self.scores(self.space.matrix_of(values, columns))

    @functools.cached_property
    def _inputs(self) -> list[str]:
        return self.input_features()


def calibrate(raw: np.ndarray) -> list[float]:
    """Knots of the empirical CDF of training scores, made strictly increasing for interpolation."""
    knots = np.quantile(raw, _PROBS)
    bump = np.arange(len(knots)) * 1e-12  # ties (flat stretches) would make np.interp ambiguous
    return (np.maximum.accumulate(knots) + bump).tolist()


def train_isolation_forest(matrix: np.ndarray, space: FeatureSpace, config: DetectionConfig) -> Detector:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import IsolationForest
    from sklearn.pipeline import Pipeline

    p = config.isolation_forest
    forest = IsolationForest(
        n_estimators=p.n_estimators,
        max_samples=min(p.max_samples, len(matrix)),
        max_features=p.max_features,
        random_state=p.random_state,
        n_jobs=-1,
    )
    estimator: IsolationForest | Pipeline = forest
    if p.features is not None:
        # the forest reads only its subset: every extra feature is a split that isolates nothing for
        # most anomalies, so a scenario's one extreme feature would be picked too rarely
        keep = [i for i, n in enumerate(space.names) if n in p.features]
        estimator = Pipeline(
            [
                ("select", ColumnTransformer([("keep", "passthrough", keep)], remainder="drop")),
                ("forest", forest),
            ]
        )
    estimator.fit(matrix)
    detector = Detector("isolation_forest", estimator, space, [])
    detector.knots = calibrate(detector.raw_scores(calibration_rows(matrix, p.random_state)))
    return detector


# 100,000 rows put ~100 training scores above the 0.999 knot: enough for the thresholds we use, and
# scoring all of a large window just to calibrate would cost as much as scoring a whole day
CALIBRATION_ROWS = 100_000


def calibration_rows(matrix: np.ndarray, seed: int, size: int = CALIBRATION_ROWS) -> np.ndarray:
    if len(matrix) <= size:
        return matrix
    rows = np.random.default_rng(seed).choice(len(matrix), size, replace=False)
    return matrix[np.sort(rows)]


def train_local_outlier_factor(matrix: np.ndarray, space: FeatureSpace, config: DetectionConfig) -> Detector:
    from sklearn.decomposition import PCA
    from sklearn.neighbors import LocalOutlierFactor
    from sklearn.pipeline import make_pipeline

    p = config.local_outlier_factor
    rng = np.random.default_rng(p.random_state)
    rows = rng.choice(len(matrix), min(p.train_rows, len(matrix)), replace=False)
    # duplicates (infrastructure lines whose features are all at their medians) would give LOF
    # infinite local densities: fit on distinct rows
    fit_on = np.unique(matrix[np.sort(rows)], axis=0)
    estimator = make_pipeline(
        PCA(min(p.pca_components, matrix.shape[1]), random_state=p.random_state),
        LocalOutlierFactor(n_neighbors=min(p.n_neighbors, len(fit_on) - 1), novelty=True, n_jobs=-1),
    ).fit(fit_on)
    detector = Detector("local_outlier_factor", estimator, space, [])
    # calibrated on training rows LOF did not fit on: its own points would look too normal
    held_out = np.setdiff1d(np.arange(len(matrix)), rows)
    if len(held_out) > 2 * len(rows):
        held_out = rng.choice(held_out, 2 * len(rows), replace=False)
    detector.knots = calibrate(detector.raw_scores(matrix[held_out] if len(held_out) else fit_on))
    return detector


def train_ecod(matrix: np.ndarray, space: FeatureSpace, config: DetectionConfig) -> Detector:
    """ECOD on a seeded sample of the window (``ecod.train_rows``), its distributions frozen: a row's
    score never depends on the rows scored with it (see ecod.py)."""
    from bankanom_pipeline.detection.ecod import DebitPrior, FrozenEcod, HourPrior, StudentTail

    p = config.ecod
    if p is None:
        raise ValueError("this source's detection config has no ecod section")
    fit_on = calibration_rows(matrix, p.random_state, p.train_rows)
    tails = [p.tails.get(name, "both") for name in space.names]
    prior = None
    if p.hour_prior is not None:
        at = [space.names.index(n) for n in (p.hour_prior.count, p.hour_prior.total, p.hour_prior.hour)]
        center = tuple(space.center[j] for j in at)
        prior = HourPrior(
            *at, center, tuple(space.scale[j] for j in at), p.hour_prior.window, p.hour_prior.weight
        )
    student = None
    if p.student is not None:
        at = [space.names.index(n) for n in (p.student.value, p.student.count)]
        student = StudentTail(*at, tuple(space.center[j] for j in at), tuple(space.scale[j] for j in at))
    debit = None
    if p.debit_prior is not None:
        names = ("value", "log_amount", "credit", "count", "mean", "sd")
        at = [space.names.index(getattr(p.debit_prior, n)) for n in names]
        center, scale = tuple(space.center[j] for j in at), tuple(space.scale[j] for j in at)
        debit = DebitPrior(*at, center, scale, p.debit_prior.strength)
    estimator = FrozenEcod(tails, p.max_weight, p.decimals, p.excess, prior, student, debit).fit(fit_on)
    detector = Detector("ecod", estimator, space, [])
    detector.knots = calibrate(detector.raw_scores(calibration_rows(matrix, p.random_state)))
    return detector


TRAINERS = {"isolation_forest": train_isolation_forest, "local_outlier_factor": train_local_outlier_factor}
# the detectors a source adds when its config has a section for them (DetectionConfig.model_names)
OPTIONAL_TRAINERS = {"ecod": train_ecod}
ALL_TRAINERS = {**TRAINERS, **OPTIONAL_TRAINERS}


def ensemble(
    if_scores: np.ndarray, lof_scores: np.ndarray, thresholds: Thresholds | None = None
) -> np.ndarray:
    """The ensemble score: the Isolation Forest's, lifted by (ensemble - ensemble_lof_floor) where LOF
    reaches ensemble_lof and IF the floor, so ``ensemble >= thresholds.ensemble`` is the rule "IF >= ensemble, or IF >=
    ensemble_lof_floor and LOF >= ensemble_lof" (see docs/detection.md, "Scores").

    LOF can only lower IF's cutoff, and never below the floor: whatever LOF does on a day (its density
    estimate does not transfer across populations the way the forest's does), the decision is never
    looser than "IF >= ensemble_lof_floor", whose false positives are bounded on the validation days."""
    t = thresholds or default_detection_config().thresholds
    if_scores = np.asarray(if_scores, dtype=float)
    agrees = (np.asarray(lof_scores) >= t.ensemble_lof) & (if_scores >= t.ensemble_lof_floor)
    # max(): at the floor itself, float rounding of floor + (cut - floor) must not land below the cut
    lifted = np.maximum(if_scores + (t.ensemble - t.ensemble_lof_floor), t.ensemble)
    return np.where(agrees, np.minimum(1.0, lifted), if_scores)


def ensemble_with_ecod(base: np.ndarray, ecod_scores: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """The ensemble of a source with an ECOD detector: the IF/LOF ensemble (``ensemble``) and ECOD's
    score, averaged with ECOD's weight ``ensemble_ecod_weight``. The forest isolates combinations of
    features and ECOD single-feature extremes; both scores are training-window quantiles, so the average
    is a quantile-like score in 0..1 and ``thresholds.ensemble`` is its cut."""
    w = thresholds.ensemble_ecod_weight
    if w is None:
        raise ValueError("thresholds.ensemble_ecod_weight is not set: this source has no ECOD term")
    return (1.0 - w) * np.asarray(base, dtype=float) + w * np.asarray(ecod_scores, dtype=float)
