"""Scoring a day in batches: bounded batches, and the same scores and decisions as scoring it whole."""

import duckdb
import numpy as np
import polars as pl

from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.models import TRAINERS, ensemble
from bankanom_pipeline.detection.scoring import explain, score, score_batches
from bankanom_pipeline.detection.space import FeatureSpace
from bankanom_pipeline.warehouse.frames import read_batches


def _detectors(frame: pl.DataFrame, config):
    out = {}
    for name, train in TRAINERS.items():
        space = FeatureSpace.fit(
            frame, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
        )
        out[name] = train(space.matrix(frame), space, config)
    return out


def test_batches_are_bounded_and_score_like_the_whole_day():
    config = default_detection_config()
    rng = np.random.default_rng(3)
    n = 2600
    values = rng.normal(10, 1, (n, len(config.feature_names)))
    values[:100, :6] += 15  # a few far-out rows, so some events are flagged
    frame = pl.DataFrame(values, schema=config.feature_names).with_columns(
        event_id=pl.Series([f"e{i}" for i in range(n)])
    )
    detectors = _detectors(frame, config)
    con = duckdb.connect()
    con.register("features", frame.to_arrow())
    sizes = [b.height for b in read_batches(con, "SELECT * FROM features ORDER BY event_id", rows=512)]
    assert max(sizes) <= 512 and sum(sizes) == n and len(sizes) >= 5

    batches = read_batches(con, "SELECT * FROM features ORDER BY event_id", rows=512)
    scored = score_batches(batches, detectors, config, ["event_id"])
    whole = pl.concat([frame.select("event_id"), score(frame, detectors, config).frame()], how="horizontal")
    assert scored.height == n
    assert scored.sort("event_id").equals(whole.sort("event_id"))
    assert 0 < scored["is_anomaly"].sum() < n


def test_explain_is_the_occlusion_of_each_feature_in_every_model_that_reads_it():
    config = default_detection_config()
    rng = np.random.default_rng(5)
    values = rng.normal(10, 1, (3000, len(config.feature_names)))
    values[:20, :6] += 15
    frame = pl.DataFrame(values, schema=config.feature_names)
    detectors = _detectors(frame, config)
    rows = frame.head(25)
    got = explain(rows, detectors)
    # reference: re-score both models with each feature put back to its median (0 after scaling)
    names = detectors["isolation_forest"].space.names
    matrices = {n: d.space.matrix(rows) for n, d in detectors.items()}
    base = ensemble(*(detectors[n].scores(matrices[n]) for n in ("isolation_forest", "local_outlier_factor")))
    for j, feature in enumerate(names):
        occluded = {}
        for n, d in detectors.items():
            m = matrices[n].copy()
            if feature in d.space.names:
                m[:, d.space.names.index(feature)] = 0.0
            occluded[n] = d.scores(m)
        want = base - ensemble(occluded["isolation_forest"], occluded["local_outlier_factor"])
        np.testing.assert_allclose(got[:, j], want, atol=1e-12)
    unread = set(names) - set(detectors["isolation_forest"].input_features())
    unread -= set(detectors["local_outlier_factor"].input_features())
    assert unread and (got[:, [names.index(f) for f in unread]] == 0).all()
    assert (got != 0).any()


def test_scores_from_a_frame_build_only_what_the_model_reads_and_give_the_same_numbers():
    config = default_detection_config()
    rng = np.random.default_rng(5)
    values = rng.lognormal(1, 1, (3000, len(config.feature_names)))
    frame = pl.DataFrame(values, schema=config.feature_names)
    detectors = _detectors(frame, config)
    forest = detectors["isolation_forest"]
    assert len(forest.input_features()) < len(forest.space.names)  # the forest reads a subset
    for detector in detectors.values():
        matrix = detector.space.matrix(frame)
        got = detector.frame_scores(frame)
        assert np.array_equal(got, detector.scores(matrix))
        sklearn = detector.normalise(-detector.estimator.score_samples(matrix))
        if detector.name == "isolation_forest":
            assert np.array_equal(got, sklearn)
        else:  # the LOF's PCA is summed feature by feature (neighbour_lof.py), BLAS's product in its order
            np.testing.assert_allclose(got, sklearn, rtol=1e-12, atol=0)
