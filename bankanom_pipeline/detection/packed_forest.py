"""A fitted IsolationForest's trees packed into flat arrays, scored for all trees at once with numpy.

``IsolationForest.score_samples`` walks its trees one by one from Python: ~200 calls of
``tree.apply`` plus validation, about 25-35 ms here even for one row. The API scores small batches,
where that overhead is nearly all of the cost, so for them the forest is evaluated level by level over
every tree at once (a tree is at most ``ceil(log2(max_samples))`` deep). The arithmetic is sklearn's
own: the same float32 comparisons, the same per-node path lengths (``_decision_path_lengths``,
``_average_path_length_per_tree``), summed over trees in the same order; tests compare it with
``score_samples`` bit for bit.

Large batches (a day's scoring) take the other path: sklearn's compiled ``apply`` of each tree, then
the packed per-node path length, over blocks of rows on one thread per core. That is sklearn's
``score_samples`` loop without its joblib dispatch and with one lookup per tree instead of two (the
packed value is the same sum), on both cores: the traversal releases the GIL.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length
from sklearn.pipeline import Pipeline

from bankanom_pipeline.detection.row_blocks import map_row_blocks

# up to this many rows the forest is walked level by level for all trees at once (numpy); above it tree
# by tree with sklearn's traversal, where the per-tree call overhead no longer matters. Measured on the
# demo's forest (200 trees, depth 10): level by level 0.07 ms for 1 row, 1.4 ms for 64, 5.4 for 256 and
# 19 for 1,000 rows; tree by tree 1.7, 1.9, 2.7 and 5.3 ms: they cross near 100 rows
LEVELWISE_MAX_ROWS = 128
# rows per block of the tree-by-tree path: ~2 MB of float32 input, a few blocks per core and chunk
BLOCK_ROWS = 16_384


class PackedForest:
    def __init__(self, forest: IsolationForest, columns: np.ndarray | None = None):
        """``columns``: the input columns the forest reads (None: all), as a column selection step in
        front of it would pick them."""
        n_in = forest.n_features_in_
        subsample = forest._max_features != n_in  # sklearn subsamples features only then
        self.trees = list(forest.estimators_)
        # the input columns each tree was fitted on (None: all), as sklearn passes them to ``apply``
        self.tree_features = [np.asarray(f) if subsample else None for f in forest.estimators_features_]
        left, right, feature, threshold, value, roots = [], [], [], [], [], []
        offset = 0
        for t, (tree, features) in enumerate(
            zip(forest.estimators_, forest.estimators_features_, strict=True)
        ):
            nodes = tree.tree_
            leaf = nodes.children_left == -1
            roots.append(offset)
            left.append(np.where(leaf, -1, nodes.children_left + offset))
            right.append(np.where(leaf, -1, nodes.children_right + offset))
            used = np.where(leaf, 0, nodes.feature)
            feature.append(np.asarray(features)[used] if subsample else used)
            threshold.append(nodes.threshold)
            value.append(forest._decision_path_lengths[t] + forest._average_path_length_per_tree[t] - 1.0)
            offset += nodes.node_count
        self.left = np.concatenate(left)
        self.right = np.concatenate(right)
        self.feature = np.concatenate(feature)
        self.threshold = np.concatenate(threshold)
        self.value = np.concatenate(value)
        self.tree_values = value  # per tree, indexed by its own node ids
        self.roots = np.asarray(roots)
        # per node, the child to go to when the row's value is above the threshold (column 0) or not
        # (column 1); a leaf points to itself, so a row that reached its leaf stays there
        own = np.arange(len(self.left))
        leaf = self.left == -1
        self.children = np.stack([np.where(leaf, own, self.right), np.where(leaf, own, self.left)], axis=1)
        self.depth = max(e.get_depth() for e in forest.estimators_)
        self.denominator = len(forest.estimators_) * _average_path_length([forest._max_samples])[0]
        self.columns = None if columns is None else np.asarray(columns)

    @classmethod
    def of(cls, estimator) -> PackedForest | None:
        """For a bare forest or a (column selection, forest) pipeline; None for anything else."""
        if isinstance(estimator, IsolationForest):
            return cls(estimator)
        if isinstance(estimator, Pipeline) and isinstance(estimator.steps[-1][1], IsolationForest):
            select = estimator.steps[0][1]
            spec = getattr(select, "transformers", None)
            if (
                len(estimator.steps) == 2
                and spec is not None
                and len(spec) == 1
                and spec[0][1] == "passthrough"
                and select.remainder == "drop"
            ):
                return cls(estimator.steps[-1][1], np.asarray(spec[0][2]))
        return None

    def score_samples(self, matrix: np.ndarray) -> np.ndarray:
        """Same as the forest's ``score_samples`` (higher = more normal)."""
        return self.score_selected(matrix if self.columns is None else matrix[:, self.columns])

    def score_selected(self, selected: np.ndarray) -> np.ndarray:
        """``score_samples`` of a matrix whose columns are already ``columns`` (what the forest reads)."""
        x = np.asarray(selected, dtype=np.float32)
        if len(x) <= LEVELWISE_MAX_ROWS:
            depths = self._levelwise(x)
        else:
            depths = map_row_blocks(self._tree_by_tree, np.ascontiguousarray(x), BLOCK_ROWS)
        return -(2 ** (-depths / self.denominator))

    def _tree_by_tree(self, x: np.ndarray) -> np.ndarray:
        depths = np.zeros(len(x))
        for tree, features, value in zip(self.trees, self.tree_features, self.tree_values, strict=True):
            leaves = tree.apply(x if features is None else x[:, features], check_input=False)
            depths += value[leaves]
        return depths

    def _levelwise(self, x: np.ndarray) -> np.ndarray:
        rows = np.broadcast_to(np.arange(len(x)), (len(self.roots), len(x)))
        nodes = np.repeat(self.roots[:, None], len(x), axis=1)
        children, feature, threshold = self.children, self.feature, self.threshold
        for _ in range(self.depth):
            # sklearn's test, value <= threshold goes left (NaN goes right), at every tree at once
            go_left = x[rows, feature[nodes]] <= threshold[nodes]
            nodes = children[nodes, go_left.view(np.int8)]
        return np.cumsum(self.value[nodes], axis=0)[-1]  # tree by tree, in sklearn's order
