"""The packed Isolation Forest gives sklearn's scores exactly, for the shapes bankanom uses."""

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline

from bankanom_pipeline.detection.packed_forest import LEVELWISE_MAX_ROWS, PackedForest


def data(seed: int, rows: int, columns: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, columns))
    x[:, 0] = rng.integers(0, 3, rows)  # ties and repeated values, like counts
    x[: rows // 20] *= 25  # a few extreme rows
    return x


@pytest.mark.parametrize("max_features", [1.0, 0.5])
def test_bare_forest_matches_score_samples_bit_for_bit(max_features):
    forest = IsolationForest(n_estimators=50, max_samples=256, max_features=max_features, random_state=3)
    forest.fit(data(0, 3000))
    # up to LEVELWISE_MAX_ROWS (128) level by level, above it tree by tree (9,000: on row blocks over
    # threads)
    for rows in (1, 7, LEVELWISE_MAX_ROWS, LEVELWISE_MAX_ROWS + 1, 2000, 9000):
        x = data(1, rows)
        assert np.array_equal(PackedForest.of(forest).score_samples(x), forest.score_samples(x))


def test_column_selection_pipeline_matches():
    keep = [0, 2, 5]
    pipeline = Pipeline(
        [
            ("select", ColumnTransformer([("keep", "passthrough", keep)], remainder="drop")),
            ("forest", IsolationForest(n_estimators=40, max_samples=128, random_state=5)),
        ]
    ).fit(data(2, 1000))
    for rows in (500, 20_000):
        x = data(3, rows)
        assert np.array_equal(PackedForest.of(pipeline).score_samples(x), pipeline.score_samples(x))


def test_other_estimators_are_not_packed():
    assert PackedForest.of(Pipeline([("forest", IsolationForest())])) is None
    assert PackedForest.of(object()) is None
