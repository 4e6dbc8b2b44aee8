"""Training a detector on a window of a source's feature table and the checks that gate its promotion."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from bankanom_pipeline.detection.config import DetectionConfig
from bankanom_pipeline.detection.models import ALL_TRAINERS, Detector, calibration_rows
from bankanom_pipeline.detection.registry import FeatureSetMismatch, Registry, Version, check_feature_set
from bankanom_pipeline.detection.sources import LOGS, Source
from bankanom_pipeline.detection.space import FeatureSpace
from bankanom_pipeline.warehouse.frames import read_frame

# a promoted candidate may lose at most this much PR-AUC against the current model on the same data
QUALITY_TOLERANCE = 0.02
# flagged share of the training window at the model's threshold: outside this the scores are broken
SANE_FLAG_SHARE = (0.002, 0.15)
# rows scored for that check: ~200 above a 0.99 threshold, enough to tell a sane share from a broken one
SANITY_ROWS = 20_000


@dataclass
class Trained:
    version: Version
    detector: Detector
    train_scores: np.ndarray


def latest_partition(con: duckdb.DuckDBPyConnection, source: Source = LOGS) -> str:
    row = con.execute(f"SELECT max(partition_date) FROM {source.features_table}").fetchone()
    if row is None or row[0] is None:
        raise ValueError(
            f"{source.features_table} is empty: run the pipeline for at least one day before training"
        )
    return row[0].isoformat()


def load_window(
    con: duckdb.DuckDBPyConnection, end_day: str, config: DetectionConfig, source: Source = LOGS
) -> tuple[pl.DataFrame, str]:
    """A seeded uniform sample (at most training.max_rows) of the window's feature rows, and its start."""
    end = dt.date.fromisoformat(end_day)
    start = (end - dt.timedelta(days=config.training.window_days - 1)).isoformat()
    columns = ", ".join(config.feature_names)
    table, key = source.features_table, source.order_key
    where = "partition_date BETWEEN ? AND ?"
    # the sample is drawn from the ordered keys alone, then only its rows are read, in the sample's
    # order: the same frame as sampling the whole window read in key order (a sample's positions depend
    # on the row count and seed only), without reading and gathering 57 columns of every row
    keys = read_frame(con, f"SELECT {key} FROM {table} WHERE {where} ORDER BY {key}", [start, end_day])
    if keys.height < 1000:
        raise ValueError(f"only {keys.height} feature rows in {start}..{end_day}: too few to train on")
    whole = f"SELECT {columns} FROM {table} WHERE {where} ORDER BY {key}"
    if keys.height <= config.training.max_rows:
        return read_frame(con, whole, [start, end_day]), start
    picked = keys.sample(config.training.max_rows, seed=config.training.seed).with_row_index("_sample_row")
    con.register("_training_sample", picked.to_arrow())
    try:
        frame = read_frame(
            con,
            f"SELECT {columns} FROM {table} JOIN _training_sample USING ({key}) WHERE {where} "
            "ORDER BY _sample_row",
            [start, end_day],
        )
    finally:
        con.unregister("_training_sample")
    if frame.height != picked.height:  # a key that is not unique: sample the whole window as read
        frame = read_frame(con, whole, [start, end_day]).sample(
            config.training.max_rows, seed=config.training.seed
        )
    return frame, start


def train(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    config: DetectionConfig,
    end_day: str,
    source: Source = LOGS,
) -> Trained:
    frame, start = load_window(con, end_day, config, source)
    began = time.perf_counter()
    space = FeatureSpace.fit(
        frame, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
    )
    matrix = space.matrix(frame)
    detector = ALL_TRAINERS[name](matrix, space, config)
    seconds = time.perf_counter() - began
    # the sanity check needs the distribution, not every row: a seeded sample of the window, smaller than
    # the calibration's (it looks for broken scores, not the tail, and LOF's scoring is costly)
    raw = detector.raw_scores(calibration_rows(matrix, config.training.seed, SANITY_ROWS))
    scores = detector.normalise(raw)
    threshold = getattr(config.thresholds, name)
    metrics = {
        "fit_seconds": round(seconds, 2),
        "train_flagged_share": float((scores >= threshold).mean()),
        "raw_score_p50": float(np.quantile(raw, 0.5)),
    }
    params = getattr(config, name).model_dump()
    version = registry.save(
        detector,
        params=params,
        window=(start, end_day),
        rows=frame.height,
        metrics=metrics,
        features_table=source.features_table,
    )
    return Trained(version, detector, scores)


def distribution_problems(scores: np.ndarray, threshold: float) -> list[str]:
    """Why a score distribution is not sane (empty list = sane)."""
    problems = []
    if not np.isfinite(scores).all():
        problems.append("non-finite scores")
    share = float((scores >= threshold).mean()) if len(scores) else 0.0
    low, high = SANE_FLAG_SHARE
    if not low <= share <= high:
        problems.append(
            f"flags {share:.2%} of the training window at threshold {threshold} (sane: {low:.1%}..{high:.0%})"
        )
    if len(scores) and np.ptp(scores) < 0.5:
        problems.append("scores barely spread: the model cannot tell events apart")
    return problems


def labelled_quality(
    con: duckdb.DuckDBPyConnection, detector: Detector, day: str, source: Source = LOGS
) -> float | None:
    """PR-AUC of a detector on a day with ground truth (evaluation only: labels never train); None when
    the day has no labels."""
    columns = ", ".join(detector.space.names)
    frame = read_frame(
        con,
        f"""SELECT {columns}, l.{source.label_column} AS _label FROM {source.features_table} f
            JOIN {source.labels_table} l USING (partition_date, {source.key}) WHERE f.partition_date = ?""",
        [day],
    )
    if frame.height == 0 or frame["_label"].n_unique() < 2:
        return None
    if frame.height > 200_000:
        frame = frame.sample(200_000, seed=11)
    # scikit-learn where it is used: every process loading the code location imports this module
    from sklearn.metrics import average_precision_score

    scores = detector.scores(detector.space.matrix(frame))
    return float(average_precision_score(frame["_label"].to_numpy(), scores))


@dataclass(frozen=True)
class Gate:
    """The promotion gate's verdict on a candidate: a sane score distribution on its training window, and
    a PR-AUC on the window's last labelled day at most ``QUALITY_TOLERANCE`` below the promoted model's."""

    problems: list[str]
    candidate_quality: float | None
    current_quality: float | None
    current_version: str | None
    # the promoted version was trained on other features: nothing to compare with (it cannot score them)
    current_stale: bool = False

    @property
    def not_worse(self) -> bool:
        return (
            self.candidate_quality is None
            or self.current_quality is None
            or self.candidate_quality >= self.current_quality - QUALITY_TOLERANCE
        )

    @property
    def passed(self) -> bool:
        return not self.problems and self.not_worse

    @property
    def note(self) -> str:
        if self.current_stale:
            return f"the promoted {self.current_version} was trained on another feature-set version: passes"
        if self.candidate_quality is None:
            return "no labelled day in the window: nothing to compare, passes"
        if self.current_quality is None:
            return "no promoted model yet: passes"
        return f"candidate PR-AUC {self.candidate_quality:.4f} vs current {self.current_quality:.4f}"


def gate(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    trained: Trained,
    config: DetectionConfig,
    end_day: str,
    source: Source = LOGS,
) -> Gate:
    """Judge the candidate ``trained`` against the promoted ``name`` model of ``registry``."""
    problems = distribution_problems(trained.train_scores, getattr(config.thresholds, name))
    candidate = labelled_quality(con, trained.detector, end_day, source)
    current = registry.current().get(name)
    stale = False
    if current:
        try:
            check_feature_set(registry.manifest(current))
        except FeatureSetMismatch:
            stale = True
    promoted = (
        labelled_quality(con, registry.load(current), end_day, source)
        if current and candidate and not stale
        else None
    )
    return Gate(problems, candidate, promoted, current, stale)
