"""LOF scored through scipy's cKDTree gives sklearn's scores exactly, for the shapes bankanom uses."""

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bankanom_pipeline.detection.neighbour_lof import NeighbourLof


def data(seed: int, rows: int, columns: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, columns))
    x[:, 0] = rng.integers(0, 3, rows)  # few distinct values, like counts
    x[: rows // 20] *= 25  # far-out rows, whose neighbours are all far away
    return x


def _pca_lof(neighbours: int):
    fit_on = np.unique(data(0, 3000), axis=0)
    return make_pipeline(
        PCA(6, random_state=1), LocalOutlierFactor(n_neighbors=neighbours, novelty=True)
    ).fit(fit_on)


@pytest.mark.parametrize("neighbours", [5, 50])
def test_pca_pipeline_matches_sklearn(neighbours):
    lof = _pca_lof(neighbours)
    fast = NeighbourLof.of(lof)
    # 1 and 7 rows: one block on this thread; 5,000: three blocks on threads
    for rows in (1, 7, 5000):
        x = data(1, rows)
        projected = fast.project(x)
        # the projection sums feature by feature, BLAS in its own order: ulps apart
        assert np.allclose(projected, lof[0].transform(x), rtol=0, atol=1e-12)
        # on the same projected rows, sklearn's LOF scores bit for bit
        assert np.array_equal(fast.score_samples(x), lof[-1].score_samples(projected))
    assert np.allclose(fast.score_samples(x), lof.score_samples(x), rtol=1e-12, atol=0)


def test_scores_do_not_depend_on_the_rows_scored_with_them():
    # a day scored whole or in batches: BLAS's product gave some rows other last bits in other batches
    fast = NeighbourLof.of(_pca_lof(50))
    x = data(4, 9000)
    whole = fast.score_samples(x)
    for cuts in ([1024 * i for i in range(1, 9)], [1, 7, 2049, 5000, 8999]):
        parts = np.concatenate([fast.score_samples(part) for part in np.split(x, cuts)])
        assert np.array_equal(parts, whole)


def test_other_steps_in_front_are_left_to_sklearn():
    x = data(5, 600, 4)
    whitened = make_pipeline(PCA(3, whiten=True), LocalOutlierFactor(n_neighbors=20, novelty=True)).fit(x)
    scaled = make_pipeline(StandardScaler(), LocalOutlierFactor(n_neighbors=20, novelty=True)).fit(x)
    assert NeighbourLof.of(whitened) is None and NeighbourLof.of(scaled) is None


def test_bare_lof_matches_and_other_estimators_are_not_handled():
    x = data(2, 800, 4)
    bare = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(x[:500])
    assert np.array_equal(NeighbourLof.of(bare).score_samples(x), bare.score_samples(x))
    assert NeighbourLof.of(LocalOutlierFactor(n_neighbors=20, novelty=False).fit(x)) is None
    assert NeighbourLof.of(LocalOutlierFactor(n_neighbors=20, novelty=True, p=1).fit(x)) is None
    assert NeighbourLof.of(IsolationForest(n_estimators=5).fit(x)) is None
    assert NeighbourLof.of(object()) is None


def _median_split_only(fast: NeighbourLof, x: np.ndarray) -> np.ndarray:
    """The scores with every row's candidates from the median-split tree (no sliding-midpoint tree)."""
    _, candidates = fast.tree.query(x, fast.k + 1)
    distances, neighbours, _ = fast._exact(x, candidates)
    reach = np.maximum(distances, fast.k_distance[neighbours])
    lrd = 1.0 / (np.mean(reach, axis=1) + 1e-10)
    return -np.mean(fast.lrd[neighbours] / lrd[:, np.newaxis], axis=1)


def test_rows_with_tied_distances_score_as_in_the_median_split_tree():
    # small whole numbers: many fitted rows at exactly the same distance from an event, where the order
    # a tree lists them in changes the last bits of the sums
    rng = np.random.default_rng(3)
    fit_on = np.unique(
        rng.integers(0, 6, size=(4000, 3)).astype(float) + rng.integers(0, 2, (4000, 1)) / 4, axis=0
    )
    lof = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(fit_on)
    fast = NeighbourLof.of(lof)
    x = rng.integers(-1, 7, size=(20000, 3)).astype(float) / 2
    assert fast._exact(x, fast.fast_tree.query(x, fast.k + 1)[1])[2].sum() > 1000  # ties are common here
    assert np.array_equal(fast.score_samples(x), _median_split_only(fast, x))
