"""Scoring events with the promoted detectors, and explaining a score feature by feature.

One implementation for the pipeline (``scored_events``) and the API (``POST /predict``): both hand a
frame with ``features_events`` columns to ``score``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from bankanom_pipeline.detection.config import DetectionConfig, default_detection_config
from bankanom_pipeline.detection.models import Detector, ensemble, ensemble_with_ecod
from bankanom_pipeline.detection.row_blocks import map_in_order

IF, LOF = "isolation_forest", "local_outlier_factor"
ECOD = "ecod"


@dataclass
class Scores:
    isolation_forest: np.ndarray
    local_outlier_factor: np.ndarray
    ensemble: np.ndarray
    if_flag: np.ndarray
    lof_flag: np.ndarray
    is_anomaly: np.ndarray
    # a source with an ECOD detector (transactions): its score and flag; None for logs
    ecod: np.ndarray | None = None
    ecod_flag: np.ndarray | None = None

    def frame(self) -> pl.DataFrame:
        columns = {
            "if_score": self.isolation_forest,
            "lof_score": self.local_outlier_factor,
            "ensemble_score": self.ensemble,
            "if_flag": self.if_flag,
            "lof_flag": self.lof_flag,
            "is_anomaly": self.is_anomaly,
        }
        if self.ecod is not None:
            columns |= {"ecod_score": self.ecod, "ecod_flag": self.ecod_flag}
        return pl.DataFrame(columns)


def score(frame: pl.DataFrame, detectors: dict[str, Detector], config: DetectionConfig) -> Scores:
    """Both models' normalised scores, flags and the ensemble decision for each row of ``frame``."""
    s_if = detectors[IF].frame_scores(frame)
    s_lof = detectors[LOF].frame_scores(frame)
    s_ecod = _ecod(detectors, config).frame_scores(frame) if config.ecod is not None else None
    return _decide(s_if, s_lof, s_ecod, config)


def _ecod(detectors: dict[str, Detector], config: DetectionConfig) -> Detector:
    detector = detectors.get(ECOD)
    if detector is None:
        # the ensemble's thresholds were chosen for the three detectors: IF and LOF alone would be
        # judged by a rule that does not fit them
        raise ValueError(
            "no promoted ECOD model for a source whose ensemble reads one: train the models again"
        )
    return detector


def _decide(
    s_if: np.ndarray, s_lof: np.ndarray, s_ecod: np.ndarray | None, config: DetectionConfig
) -> Scores:
    t = config.thresholds
    s_ens = ensemble(s_if, s_lof, t)
    ecod_flag = None
    if s_ecod is not None:
        s_ens = ensemble_with_ecod(s_ens, s_ecod, t)
        ecod_flag = s_ecod >= t.ecod
    return Scores(
        s_if,
        s_lof,
        s_ens,
        s_if >= t.isolation_forest,
        s_lof >= t.local_outlier_factor,
        s_ens >= t.ensemble,
        s_ecod,
        ecod_flag,
    )


def score_values(
    values: np.ndarray, columns: Sequence[str], detectors: dict[str, Detector], config: DetectionConfig
) -> Scores:
    """``score`` of the rows of ``values`` (raw features, one column per name of ``columns``) without a
    polars frame (``Detector.array_scores``): the same numbers, for the API's single events."""
    s_if = detectors[IF].array_scores(values, columns)
    s_lof = detectors[LOF].array_scores(values, columns)
    s_ecod = _ecod(detectors, config).array_scores(values, columns) if config.ecod is not None else None
    return _decide(s_if, s_lof, s_ecod, config)


def score_batches(
    batches: Iterable[pl.DataFrame],
    detectors: dict[str, Detector],
    config: DetectionConfig,
    keep: Sequence[str],
) -> pl.DataFrame:
    """``keep`` columns of every row with its scores (``Scores.frame``), a batch per core at a time
    (``map_in_order``): the feature matrices of a whole day never sit in memory together, and one
    batch's single-threaded steps overlap another's. The decision is per event, so batching does not
    change it."""

    def scored(batch: pl.DataFrame) -> pl.DataFrame:
        return pl.concat([batch.select(keep), score(batch, detectors, config).frame()], how="horizontal")

    parts = list(map_in_order(scored, (batch for batch in batches if batch.height)))
    if not parts:
        raise ValueError("nothing to score")
    return pl.concat(parts)


def deviations(frame: pl.DataFrame, detectors: dict[str, Detector]) -> np.ndarray:
    """Robust z of each feature (in the Isolation Forest's feature space, which holds every feature):
    how far from the normal."""
    return detectors[IF].space.matrix(frame)


# rows per model call in explain: ~30 MB of occluded rows. Small calls are dominated by each model's
# per-call overhead (joblib dispatch per tree and per neighbour query)
EXPLAIN_BATCH = 65_536


def explain(frame: pl.DataFrame, detectors: dict[str, Detector], batch: int = EXPLAIN_BATCH) -> np.ndarray:
    """Per-feature attribution of the ensemble score for each row: the drop in the score when that one
    feature is put back to its training median (occlusion). Positive = makes the event anomalous.
    A model is re-scored only for the features it reads (occluding any other leaves its score as it
    is): the forest reads 23 of the 57 features and LOF 27, so this costs len(frame) x 50 model
    evaluations, not x 114. LOF only counts where the forest's score reaches the ensemble's floor (see
    ``ensemble``), so an occluded row whose forest score falls below it is not scored by LOF at all:
    its ensemble score is the forest's whatever LOF says. Meant for a few rows (an incident's peak
    event)."""
    n = len(frame)
    names = detectors[IF].space.names
    thresholds = default_detection_config().thresholds  # one reading for the floor and every ensemble
    matrices = {name: d.space.matrix(frame) for name, d in detectors.items()}
    base = {name: detectors[name].scores(matrix) for name, matrix in matrices.items()}
    base_ensemble = ensemble(base[IF], base[LOF], thresholds)
    out = np.empty((n, len(names)))
    for start in range(0, n, max(1, batch // len(names))):
        rows = np.arange(start, min(n, start + max(1, batch // len(names))))
        per_model = {}
        for name in (IF, LOF):
            detector, matrix = detectors[name], matrices[name]
            position = {f: i for i, f in enumerate(detector.space.names)}
            read = set(detector.input_features())
            occlude = np.array([j for j, feature in enumerate(names) if feature in read], dtype=np.int64)
            scores = np.repeat(base[name][rows, None], len(names), axis=1)
            # (row, feature) pairs to score: every one for the forest; for LOF those it can lift
            wanted = np.ones((len(rows), len(occlude)), dtype=bool)
            if name == LOF:
                wanted = per_model[IF][:, occlude] >= thresholds.ensemble_lof_floor
            row, k = np.nonzero(wanted)  # row-major: row r, then each feature it reads occluded
            if len(row):
                block = matrix[rows[row]]
                columns = np.array([position[names[j]] for j in occlude])[k]
                block[np.arange(len(row)), columns] = 0.0  # 0 = the median after scaling
                scores[row, occlude[k]] = detector.scores(block)
            per_model[name] = scores
        occluded = ensemble(per_model[IF].ravel(), per_model[LOF].ravel(), thresholds).reshape(
            len(rows), len(names)
        )
        out[rows] = base_ensemble[rows, None] - occluded
    return out
