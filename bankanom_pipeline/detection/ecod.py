"""ECOD (empirical-cumulative-distribution outlier detection, Li et al. 2022) with its per-feature
distributions frozen at training.

ECOD scores a row by how far into the tails of each feature's empirical distribution its values fall:
per feature the larger of -ln P(X <= x), -ln P(X >= x) and the tail the feature's skew points to, summed
over features. It suits single-feature extremes (a third login attempt, an amount thirty times the
account's usual) that a forest reading many features splits on too rarely.

PyOD's ``ECOD.decision_function`` builds the distributions from the training rows *plus the rows of the
call*, so a row's score depends on the other rows it is scored with: a transaction posted with others
would score differently from the same transaction alone, and from the pipeline's batch. Here the
distributions are the training rows' only, counted as PyOD counts them for a batch of one row:
P(X <= x) = (training rows <= x, plus the row itself) / (n + 1). A row's score is therefore exactly
PyOD's ECOD score of that row scored alone against the training data (with the training skew's sign),
whatever else is in the call. Each feature is stored as its distinct training values with cumulative
counts (a binary feature is two numbers), not the training matrix.
"""

from __future__ import annotations

import numpy as np

TAILS = ("both", "left", "right")


class FrozenEcod:
    """Fitted on a training matrix; ``score_samples`` follows scikit-learn's sign (higher = more
    normal) so that it plugs into the same ``Detector`` as the forest and LOF.

    ``tails`` (one per feature, default ``both``): ``both`` is ECOD's own rule; ``left`` / ``right``
    count only that tail, for a feature whose other end is harmless (a long gap since the previous
    transaction, one login attempt): both tails of a dozen features add up to a noise floor that hides a
    single extreme. ``max_weight``: the score is the sum over features plus this many times the largest
    one, so that one extreme feature weighs more than several mildly unusual ones. With every tail
    ``both``, ``max_weight`` 0 and no ``decimals`` the score is PyOD's.

    ``decimals``: values are rounded to this many decimals before they are counted or scored. The
    distributions are step functions, so a value one last bit either side of a training value scores
    differently (in the far tail by up to ln 2), and the API's windows over one account's history and
    the pipeline's over a whole delivery give running sums that differ in the last bits (1e-14 on a
    debit's z); rounded, both land on the same step."""

    def __init__(
        self, tails: list[str] | None = None, max_weight: float = 0.0, decimals: int | None = None
    ) -> None:
        if tails is not None and set(tails) - set(TAILS):
            raise ValueError(f"tails must each be one of {TAILS}, got {sorted(set(tails) - set(TAILS))}")
        if max_weight < 0:
            raise ValueError("max_weight must be >= 0")
        self.tails = list(tails) if tails is not None else None
        self.max_weight = float(max_weight)
        self.decimals = decimals
        self.values_: list[np.ndarray] = []  # per feature: the distinct training values, ascending
        self.at_most_: list[np.ndarray] = []  # per feature: training rows <= each distinct value
        self.n_: int = 0
        self.skew_sign_: np.ndarray = np.zeros(0)  # per feature: sign of the training skewness

    def fit(self, matrix: np.ndarray) -> FrozenEcod:
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or len(matrix) == 0:
            raise ValueError("ECOD needs a non-empty two-dimensional training matrix")
        if self.tails is not None and len(self.tails) != matrix.shape[1]:
            raise ValueError(f"{len(self.tails)} tails for {matrix.shape[1]} features")
        if not np.isfinite(matrix).all():
            raise ValueError("ECOD's training matrix holds non-finite values")
        matrix = self._rounded(matrix)
        self.n_ = len(matrix)
        self.values_, self.at_most_ = [], []
        for column in matrix.T:
            values, counts = np.unique(column, return_counts=True)
            self.values_.append(values)
            self.at_most_.append(np.cumsum(counts))
        self.skew_sign_ = np.sign(_skewness(matrix))
        return self

    def __getstate__(self) -> dict:
        # the lookup tables are rebuilt on first use: an artifact keeps the distributions only
        return {k: v for k, v in self.__dict__.items() if k != "_tables"}

    @property
    def n_features_in_(self) -> int:
        return len(self.values_)

    def feature_scores(self, matrix: np.ndarray) -> np.ndarray:
        """Per row and feature, ECOD's outlyingness (>= 0; ln(n + 1) at most): how far into the
        training distribution's tails the value lies. Summed over features, the ECOD score; per feature,
        why a row scores high."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features_in_:
            raise ValueError(f"ECOD was trained on {self.n_features_in_} features, got shape {matrix.shape}")
        matrix = self._rounded(matrix)
        out = np.empty(matrix.shape)
        for j, (values, (left, right)) in enumerate(zip(self.values_, self._lookup(), strict=True)):
            x = matrix[:, j]
            tail = self.tails[j] if self.tails is not None else "both"
            # u_left: training rows <= x; u_right: >= x (each plus the row itself), by position
            if tail == "left":
                out[:, j] = left[np.searchsorted(values, x, side="right")]
            elif tail == "right":
                out[:, j] = right[np.searchsorted(values, x, side="left")]
            else:
                u_left = left[np.searchsorted(values, x, side="right")]
                u_right = right[np.searchsorted(values, x, side="left")]
                sign = self.skew_sign_[j]
                # PyOD: U_skew = U_l * -sign(skew - 1) + U_r * sign(skew + 1): the left tail for a
                # negative skew, the right for a positive one, their sum for none
                u_skew = u_left * -np.sign(sign - 1) + u_right * np.sign(sign + 1)
                out[:, j] = np.maximum(np.maximum(u_left, u_right), u_skew)
        return out

    def _rounded(self, matrix: np.ndarray) -> np.ndarray:
        decimals = getattr(self, "decimals", None)  # a model saved before decimals existed
        return matrix if decimals is None else np.round(matrix, decimals)

    def _lookup(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per feature, each tail's outlyingness at every position a value can take among the distinct
        training values (searchsorted's result): -ln((rows <= x, or >= x, plus one) / (n + 1)). Worked
        out once per loaded model, so scoring is a binary search and a lookup (a logarithm per value
        and tail cost 3.7 CPU-s a million transactions)."""
        cached = self.__dict__.get("_tables")
        if cached is None:
            total = self.n_ + 1.0
            cached = []
            for at_most in self.at_most_:
                below = np.concatenate([[0], at_most])  # training rows below position k
                cached.append((-np.log((below + 1) / total), -np.log((self.n_ - below + 1) / total)))
            self.__dict__["_tables"] = cached
        return cached

    def score_samples(self, matrix: np.ndarray) -> np.ndarray:
        """Minus the ECOD score of each row (higher = more normal, scikit-learn's convention)."""
        per_feature = self.feature_scores(matrix)
        total = per_feature.sum(axis=1)
        if self.max_weight:
            total += self.max_weight * per_feature.max(axis=1)
        return -total


def _skewness(matrix: np.ndarray) -> np.ndarray:
    """Fisher-Pearson skewness of each column (scipy.stats.skew's default, biased), 0 for a constant one."""
    centred = matrix - matrix.mean(axis=0)
    m2 = (centred**2).mean(axis=0)
    m3 = (centred**3).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(m2 > 0, m3 / np.power(m2, 1.5), 0.0)
    return np.nan_to_num(skew)
