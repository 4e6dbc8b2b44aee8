"""A fitted novelty LocalOutlierFactor scored through scipy's cKDTree instead of sklearn's KDTree.

Scoring a day is almost all k-nearest-neighbour queries (k = 50 among the ~10,000 fitted rows, for
every event): sklearn's KDTree took ~24 CPU seconds per million events here, scipy's cKDTree ~16 for
the same neighbours. The rest is sklearn's own arithmetic (``LocalOutlierFactor.score_samples`` and
``_local_reachability_density``) on the fitted attributes, in the same order.

The distances are recomputed from the rows the way sklearn's tree computes them (the squared
differences summed dimension by dimension, then the square root: cKDTree sums in another order, a few
ulps apart), and the neighbours sorted by them: one neighbour more than needed is asked for, so a
near-tie at the k-th place is settled by those exact distances too. The scores are then sklearn's bit
for bit, except where two fitted rows are at exactly the same distance from an event (where sklearn's
own choice between them is arbitrary); tests compare them.

A PCA in front of the LOF is applied here too, feature by feature (``project``), and inside each row
block: BLAS's matrix product rounds a row differently depending on where it falls in the call's
blocking (on AVX-512 kernels 4,675 of 5,000 rows moved by a few ulps between a whole day and its
1,024-row batches, and LOF turned some into different scores), while this sum gives each row the same
value whatever the batch, within ~1e-15 of sklearn's ``PCA.transform``. It costs ~1.5 CPU-s per million
rows of 57 features (BLAS: ~0.3), spread over the cores with the blocks.

The candidates come from a tree built with the sliding-midpoint rule (``balanced_tree=False``): its
queries took ~40% less CPU than the median-split tree's on transactions (~17% on logs). A row whose
candidates hold an exact tie (two fitted rows at the same distance, where the order the tree lists them
in decides the order of the sums, or at the edge of the candidate set) is queried again in the
median-split tree, so every score is the one that tree gives.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline

from bankanom_pipeline.detection.row_blocks import map_row_blocks

# rows per block, one block at a time per core: the (rows, k) temporaries of a block stay in the
# core's cache
BLOCK_ROWS = 2048
# up to this many rows the feature-by-feature sums are taken in one numpy call each (``np.add.accumulate``
# adds in the same order as the loops, so the same numbers) instead of a call per feature: the API's
# single events, where the per-call overhead was most of the time
SMALL_ROWS = 64


class NeighbourLof:
    def __init__(self, lof: LocalOutlierFactor, pca: PCA | None = None):
        """``pca``: the PCA in front of the LOF in its pipeline (None: it reads the input)."""
        self.fit_x = np.ascontiguousarray(lof._fit_X, dtype=np.float64)
        self.k = lof.n_neighbors_
        self.k_distance = lof._distances_fit_X_[:, self.k - 1]
        self.lrd = lof._lrd
        self.tree = cKDTree(self.fit_x, leafsize=32)  # the reference for rows with tied distances
        self.fast_tree = cKDTree(self.fit_x, leafsize=32, balanced_tree=False)
        self.columns = [np.ascontiguousarray(self.fit_x[:, j]) for j in range(self.fit_x.shape[1])]
        self.pca = pca
        if pca is not None:  # as PCA.transform: x . components' - mean . components'
            self.components = np.ascontiguousarray(pca.components_.T, dtype=np.float64)
            self.offset = np.asarray(pca.mean_, dtype=np.float64) @ self.components

    @classmethod
    def of(cls, estimator) -> NeighbourLof | None:
        """For a novelty LOF on Euclidean distances, bare or after a PCA (not whitened) in a pipeline; None
        for anything else."""
        lof, pca = estimator, None
        if isinstance(estimator, Pipeline):
            *front, (_, lof) = estimator.steps
            if len(front) > 1 or (front and not _plain_pca(front[0][1])):
                return None
            pca = front[0][1] if front else None
        if (
            not isinstance(lof, LocalOutlierFactor)
            or not lof.novelty
            or getattr(lof, "effective_metric_", None) != "euclidean"
            or lof.effective_metric_params_
            or lof.n_neighbors_ >= len(lof._fit_X)
        ):
            return None
        return cls(lof, pca)

    def score_samples(self, matrix: np.ndarray) -> np.ndarray:
        """The estimator's ``score_samples`` (higher = more normal) on ``project(matrix)``."""
        return map_row_blocks(self._score_block, np.ascontiguousarray(matrix, dtype=np.float64), BLOCK_ROWS)

    def project(self, matrix: np.ndarray) -> np.ndarray:
        """The rows the LOF reads: through the PCA, one input feature at a time (each row's value is the
        same whatever rows come with it), or as given."""
        x = np.asarray(matrix, dtype=np.float64)
        if self.pca is None:
            return x
        if len(x) <= SMALL_ROWS:
            return np.add.accumulate(x[:, :, None] * self.components, axis=1)[:, -1, :] - self.offset
        out = np.zeros((len(x), self.components.shape[1]))
        for j, row in enumerate(self.components):
            out += x[:, j, None] * row
        out -= self.offset
        return out

    def _score_block(self, x: np.ndarray) -> np.ndarray:
        distances, neighbours = self._nearest(self.project(x))
        # LocalOutlierFactor._local_reachability_density, then score_samples
        reach = np.maximum(distances, self.k_distance[neighbours])
        lrd = 1.0 / (np.mean(reach, axis=1) + 1e-10)
        return -np.mean(self.lrd[neighbours] / lrd[:, np.newaxis], axis=1)

    def _nearest(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest fitted rows of each row and their distances, nearest first, as the median-split
        tree's candidates give them."""
        if self.k + 2 > len(self.fit_x):
            return self._exact(x, self.tree.query(x, self.k + 1)[1])[:2]
        # k + 2: a tie between the (k+1)-th and the next would leave the candidate set to the tree
        tree_distances, candidates = self.fast_tree.query(x, self.k + 2)
        distances, nearest, tied = self._exact(x, candidates[:, : self.k + 1])
        # without ties the k + 1 candidates are the k + 1 nearest whatever the tree, and their order by
        # distance is unique: the same neighbours in the same order as the median-split tree's
        tied |= tree_distances[:, self.k] == tree_distances[:, self.k + 1]
        if tied.any():
            rows = np.flatnonzero(tied)
            again = self._exact(x[rows], self.tree.query(x[rows], self.k + 1)[1])
            distances[rows], nearest[rows] = again[0], again[1]
        return distances, nearest

    def _exact(self, x: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The k nearest of the candidates by sklearn's Euclidean distance, nearest first, and whether
        two of a row's candidates are at exactly the same distance."""
        if len(x) <= SMALL_ROWS:
            diff = x[:, None, :] - self.fit_x[neighbours]
            diff *= diff
            squared = np.add.accumulate(diff, axis=2)[..., -1]
        else:
            squared = np.zeros(neighbours.shape)
            for j, column in enumerate(self.columns):
                diff = x[:, j, None] - column[neighbours]
                diff *= diff
                squared += diff
        order = np.argsort(squared, axis=1, kind="stable")
        ranked = np.take_along_axis(squared, order, axis=1)
        tied = (ranked[:, 1:] == ranked[:, :-1]).any(axis=1)
        nearest = np.take_along_axis(neighbours, order[:, : self.k], axis=1)
        return np.sqrt(ranked[:, : self.k]), nearest, tied


def _plain_pca(step) -> bool:
    return isinstance(step, PCA) and not step.whiten
