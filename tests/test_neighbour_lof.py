"""LOF scored through scipy's cKDTree gives sklearn's scores exactly, for the shapes bankanom uses."""

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline

from bankanom_pipeline.detection.neighbour_lof import NeighbourLof


def data(seed: int, rows: int, columns: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, columns))
    x[:, 0] = rng.integers(0, 3, rows)  # few distinct values, like counts
    x[: rows // 20] *= 25  # far-out rows, whose neighbours are all far away
    return x


@pytest.mark.parametrize("neighbours", [5, 50])
def test_pca_pipeline_matches_score_samples_bit_for_bit(neighbours):
    fit_on = np.unique(data(0, 3000), axis=0)
    lof = make_pipeline(PCA(6, random_state=1), LocalOutlierFactor(n_neighbors=neighbours, novelty=True)).fit(
        fit_on
    )
    fast = NeighbourLof.of(lof)
    # 1 and 7 rows: one block on this thread; 9,000: blocks on threads
    for rows in (1, 7, 9000):
        x = data(1, rows)
        assert np.array_equal(fast.score_samples(x), lof.score_samples(x))


def test_bare_lof_matches_and_other_estimators_are_not_handled():
    x = data(2, 800, 4)
    bare = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(x[:500])
    assert np.array_equal(NeighbourLof.of(bare).score_samples(x), bare.score_samples(x))
    assert NeighbourLof.of(LocalOutlierFactor(n_neighbors=20, novelty=False).fit(x)) is None
    assert NeighbourLof.of(LocalOutlierFactor(n_neighbors=20, novelty=True, p=1).fit(x)) is None
    assert NeighbourLof.of(IsolationForest(n_estimators=5).fit(x)) is None
    assert NeighbourLof.of(object()) is None
