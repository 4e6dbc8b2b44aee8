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

Four options move further from plain ECOD (all off by default), for single-field departures that
would otherwise sit no higher than the ordinary extremes of a dozen continuous features. ``excess``:
each feature counts only the nats beyond this floor, so many mildly unusual values do not add up to an
extreme. A ``geometric`` tail: a count's values above its usual one score as a geometric tail fitted at
training, not at the empirical tail's floor of one in n + 1. ``hour_prior`` (``HourPrior``): one
column, an account's earlier transactions near this hour of the day, is scored as the surprise of the
hour under the account's habit, smoothed towards the training population's share of that hour where
the history is short. ``student`` (``StudentTail``): a z-score against the account's own history also
counts in Student's t tail for the length of that history. ``debit_prior`` (``DebitPrior``): that z is
worked out with the training population's debits as a prior, so a short history still gives one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

# "none": a column ECOD reads only as an input of another (HourPrior's total and hour), never scored;
# "geometric": a count scored by a geometric tail above its usual value (FrozenEcod)
TAILS = ("both", "left", "right", "none", "geometric")


@dataclass(frozen=True)
class HourPrior:
    """How ECOD turns an account's hour-of-day count into a surprise, -ln p, with
    p = (count + weight * share(hour)) / (total + weight): ``count`` the account's earlier transactions
    within ``window`` hours of this one's hour of the day, ``total`` all its earlier transactions,
    ``share(hour)`` the training rows' share within ``window`` hours of that hour (frozen at fit). A
    daytime account's first 2 a.m. transaction is then surprising even on a short history, a night owl's
    is not, and 2 a.m. is judged against how rare it is for everyone where the account has little
    history (Bayesian smoothing). The three are columns of ECOD's matrix (indices), scaled by the feature
    space: ``center`` and ``scale`` (per column, in that order) undo it."""

    count: int
    total: int
    hour: int
    center: tuple[float, float, float]
    scale: tuple[float, float, float]
    window: int = 2
    weight: float = 2.0

    def raw(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The count, total and integer hour of each row (rounded: the scaling's last bits)."""
        cols = [
            matrix[:, j] * s + c
            for j, c, s in zip((self.count, self.total, self.hour), self.center, self.scale, strict=True)
        ]
        count, total = np.maximum(np.round(cols[0]), 0), np.maximum(np.round(cols[1]), 0)
        hour = np.floor(cols[2] + 1e-6).astype(np.int64) % 24
        return count, total, hour

    def shares(self, matrix: np.ndarray) -> np.ndarray:
        """Per hour of the day, the share of ``matrix``'s rows within ``window`` hours of it (circular)."""
        _, _, hour = self.raw(matrix)
        per_hour = np.bincount(hour, minlength=24) / max(len(hour), 1)
        return np.array(
            [sum(per_hour[(h + d) % 24] for d in range(-self.window, self.window + 1)) for h in range(24)]
        )

    def surprise(self, matrix: np.ndarray, shares: np.ndarray) -> np.ndarray:
        count, total, hour = self.raw(matrix)
        prior = np.maximum(shares[hour], 1e-12)
        return -np.log((count + self.weight * prior) / (total + self.weight))


@dataclass(frozen=True)
class StudentTail:
    """A z-score against an account's own history (``value``) whose history may be short (``count``
    earlier items): its tail is also read as Student's t with count - 1 degrees of freedom,
    -ln P(T >= z * sqrt(count / (count + 1))), the spread of a mean and a deviation estimated from few
    items, and the larger of that and the empirical tail counts (from 3 earlier items; 0 before). A
    tenfold debit on a long, steady history is then rarer than the empirical tail's floor of one in
    n + 1, and the same z on three earlier debits is not. Columns of ECOD's matrix (indices), with the
    feature space's ``center`` and ``scale`` of each (in that order) to undo its scaling."""

    value: int
    count: int
    center: tuple[float, float]
    scale: tuple[float, float]

    def surprise(self, matrix: np.ndarray) -> np.ndarray:
        from scipy.stats import t

        z = matrix[:, self.value] * self.scale[0] + self.center[0]
        n = np.maximum(np.round(matrix[:, self.count] * self.scale[1] + self.center[1]), 0)
        enough = n >= 3
        out = np.zeros(len(matrix))
        out[enough] = -t.logsf(z[enough] * np.sqrt(n[enough] / (n[enough] + 1)), n[enough] - 1)
        return np.maximum(out, 0.0)


@dataclass(frozen=True)
class DebitPrior:
    """A debit's z against the account's earlier debits with the training population's as a prior
    (normal, conjugate): the account's usual log amount is shrunk towards the population's mean ``mu``
    by ``k = w2 / b2`` pseudo-debits (``w2`` the spread of one account's debits, ``b2`` the spread of the
    accounts' usual amounts), its spread towards ``w2`` by ``strength`` pseudo-debits, and
    z = (x - m) / sqrt(s2 (1 + 1 / (n + k))). On three earlier debits an outsized one then counts as
    it does on thirty, and before three it is judged against everyone's debits, where a z from the
    account's own history alone is 0. ``mu``, ``w2`` and ``b2`` are frozen at training (``fit``): the
    rows' debits, and among rows with ``MIN_HISTORY`` earlier debits or more, the mean of their
    variance and the spread of their means (without two such rows, the debits' variance for both; with
    no debit, a unit prior: there is nothing to score). Columns of ECOD's matrix (indices): the z column it
    replaces (``value``), then the log amount, whether it is a credit, the number of earlier debits and
    their mean and sample standard deviation (log amounts), with the feature space's ``center`` and
    ``scale`` of each (in that order)."""

    MIN_HISTORY = 10

    value: int
    log_amount: int
    credit: int
    count: int
    mean: int
    sd: int
    center: tuple[float, float, float, float, float, float]
    scale: tuple[float, float, float, float, float, float]
    strength: float = 3.0

    def _cols(self, matrix: np.ndarray) -> list[np.ndarray]:
        at = (self.value, self.log_amount, self.credit, self.count, self.mean, self.sd)
        return [matrix[:, j] * s + c for j, c, s in zip(at, self.center, self.scale, strict=True)]

    def fit(self, matrix: np.ndarray) -> tuple[float, float, float]:
        _, x, credit, n, mean, sd = self._cols(matrix)
        debit = credit < 0.5
        n = np.round(n)
        if not debit.any():  # no debit to score: any prior will do
            return 0.0, 1.0, 1.0
        mu = float(x[debit].mean())
        long = debit & (n >= self.MIN_HISTORY)
        if long.sum() < 2:
            # no account history to tell the two spreads apart (a first delivery of new accounts): the
            # debits' spread for both, a prior worth one debit
            spread = max(float(np.var(x[debit])), 1e-6)
            return mu, spread, spread
        w2 = max(float(np.mean(sd[long] ** 2)), 1e-6)
        b2 = max(float(np.var(mean[long]) - np.mean(w2 / n[long])), 1e-3 * w2)
        return mu, w2, b2

    def scaled_z(self, matrix: np.ndarray, params: tuple[float, float, float]) -> np.ndarray:
        """The z of each row in the value column's scaled units (0 for a credit)."""
        mu, w2, b2 = params
        _, x, credit, n, mean, sd = self._cols(matrix)
        n = np.maximum(np.round(n), 0)
        k = w2 / b2
        ss = np.where(n >= 2, sd**2 * np.maximum(n - 1, 0), 0.0)
        s2 = (self.strength * w2 + ss) / (self.strength + n)
        m = (n * mean + k * mu) / (n + k)
        z = np.where(credit < 0.5, (x - m) / np.sqrt(s2 * (1 + 1 / (n + k))), 0.0)
        return (z - self.center[0]) / self.scale[0]


class FrozenEcod:
    """Fitted on a training matrix; ``score_samples`` follows scikit-learn's sign (higher = more
    normal) so that it plugs into the same ``Detector`` as the forest and LOF.

    ``tails`` (one per feature, default ``both``): ``both`` is ECOD's own rule; ``left`` / ``right``
    count only that tail, for a feature whose other end is harmless (a long gap since the previous
    transaction, one login attempt): both tails of a dozen features add up to a noise floor that hides a
    single extreme; ``none``: not scored (an input of ``hour_prior`` only); ``geometric``: a count whose
    extremes are rarer than any training frequency can show (3, 4, 5 login attempts where 2 is already
    rare): with m its most frequent training value and q the training share of values above m among
    those at least m, a value k steps above m scores k * -ln q (P(X >= m + k) = q^k), where the empirical
    tail stops at the rarest training value's share. ``max_weight``: the score is
    the sum over features plus this many times the largest one, so that one extreme feature weighs more
    than several mildly unusual ones. ``excess``: each feature's outlyingness less this floor (never
    below 0) before the sum and the largest are taken. ``hour_prior``: see ``HourPrior``; its count
    column is scored in its right tail as the surprise of the hour. ``student``: see ``StudentTail``.
    ``debit_prior``: see ``DebitPrior``; its z replaces its value column before it is counted.
    With every tail ``both``, ``max_weight`` and ``excess`` 0, no ``hour_prior``, no ``student`` and no
    ``decimals`` the score is PyOD's.

    ``decimals``: values are rounded to this many decimals before they are counted or scored. The
    distributions are step functions, so a value one last bit either side of a training value scores
    differently (in the far tail by up to ln 2), and the API's windows over one account's history and
    the pipeline's over a whole delivery give running sums that differ in the last bits (1e-14 on a
    debit's z); rounded, both land on the same step."""

    def __init__(
        self,
        tails: list[str] | None = None,
        max_weight: float = 0.0,
        decimals: int | None = None,
        excess: float = 0.0,
        hour_prior: HourPrior | None = None,
        student: StudentTail | None = None,
        debit_prior: DebitPrior | None = None,
    ) -> None:
        if tails is not None and set(tails) - set(TAILS):
            raise ValueError(f"tails must each be one of {TAILS}, got {sorted(set(tails) - set(TAILS))}")
        if max_weight < 0 or excess < 0:
            raise ValueError("max_weight and excess must be >= 0")
        if hour_prior is not None and (hour_prior.weight <= 0 or not 0 <= hour_prior.window < 12):
            raise ValueError("hour_prior needs weight > 0 and a window of 0-11 hours")
        self.tails = list(tails) if tails is not None else None
        self.max_weight = float(max_weight)
        self.decimals = decimals
        self.excess = float(excess)
        self.hour_prior = hour_prior
        self.student = student
        self.debit_prior = debit_prior
        self.debit_params_: tuple[float, float, float] | None = None  # DebitPrior's, frozen at fit
        self.hour_shares_: np.ndarray | None = None  # HourPrior's population shares, frozen at fit
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
        prior = self.__dict__.get("hour_prior")
        if prior is not None:
            if max(prior.count, prior.total, prior.hour) >= matrix.shape[1]:
                raise ValueError("hour_prior names a column outside ECOD's matrix")
            self.hour_shares_ = prior.shares(self._rounded(matrix))
        student = self.__dict__.get("student")
        if student is not None and max(student.value, student.count) >= matrix.shape[1]:
            raise ValueError("student names a column outside ECOD's matrix")
        debit = self.__dict__.get("debit_prior")
        if debit is not None:
            if (
                max(debit.value, debit.log_amount, debit.credit, debit.count, debit.mean, debit.sd)
                >= matrix.shape[1]
            ):
                raise ValueError("debit_prior names a column outside ECOD's matrix")
            self.debit_params_ = debit.fit(self._rounded(matrix))
        matrix = self._prepared(matrix)
        self.n_ = len(matrix)
        self.values_, self.at_most_ = [], []
        for column in matrix.T:
            values, counts = np.unique(column, return_counts=True)
            self.values_.append(values)
            self.at_most_.append(np.cumsum(counts))
        self.skew_sign_ = np.sign(_skewness(matrix))
        # per geometric feature: its mode, one step above it (the next training value) and -ln q
        self.geometric_ = {}
        for j, tail in enumerate(self.tails or []):
            if tail == "geometric":
                values, at_most = self.values_[j], self.at_most_[j]
                counts = np.diff(np.concatenate([[0], at_most]))
                mode = int(np.argmax(counts))
                if mode == len(values) - 1:
                    raise ValueError(
                        f"feature {j}: a geometric tail needs training values above the most frequent one"
                    )
                at_least_mode = self.n_ - (at_most[mode - 1] if mode else 0)
                q = (self.n_ - at_most[mode]) / at_least_mode
                self.geometric_[j] = (
                    float(values[mode]),
                    float(values[mode + 1] - values[mode]),
                    float(-np.log(q)),
                )
        return self

    def __getstate__(self) -> dict:
        # the lookup tables are rebuilt on first use: an artifact keeps the distributions only, and
        # HourPrior as its fields (the registry loads plain types and this class only)
        state = {k: v for k, v in self.__dict__.items() if k != "_tables"}
        for key in ("hour_prior", "student", "debit_prior"):
            if state.get(key) is not None:
                state[key] = dataclasses.astuple(state[key])
        return state

    def __setstate__(self, state: dict) -> None:
        if state.get("hour_prior") is not None:
            count, total, hour, center, scale, window, weight = state["hour_prior"]
            state["hour_prior"] = HourPrior(count, total, hour, tuple(center), tuple(scale), window, weight)
        if state.get("student") is not None:
            value, count, center, scale = state["student"]
            state["student"] = StudentTail(value, count, tuple(center), tuple(scale))
        if state.get("debit_prior") is not None:
            *at, center, scale, strength = state["debit_prior"]
            state["debit_prior"] = DebitPrior(*at, tuple(center), tuple(scale), strength)
        if state.get("debit_params_") is not None:
            state["debit_params_"] = tuple(state["debit_params_"])
        self.__dict__.update(state)

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
        matrix = self._prepared(matrix)
        out = np.empty(matrix.shape)
        for j, (values, (left, right)) in enumerate(zip(self.values_, self._lookup(), strict=True)):
            x = matrix[:, j]
            tail = self.tails[j] if self.tails is not None else "both"
            if tail == "none":
                out[:, j] = 0.0
                continue
            if tail == "geometric":
                mode, step, nats = self.geometric_[j]
                out[:, j] = np.maximum((x - mode) / step, 0.0) * nats
                continue
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
        student = self.__dict__.get("student")  # a model saved before student existed has none
        if student is not None:
            out[:, student.value] = np.maximum(out[:, student.value], student.surprise(matrix))
        return out

    def _prepared(self, matrix: np.ndarray) -> np.ndarray:
        """Rounded, with ``hour_prior`` its count column replaced by the hour's surprise and with
        ``debit_prior`` its value column by the debit's z with the population's prior."""
        matrix = self._rounded(matrix)
        prior = self.__dict__.get("hour_prior")  # a model saved before hour_prior existed has none
        debit = self.__dict__.get("debit_prior")
        if prior is None and debit is None:
            return matrix
        source, matrix = matrix, matrix.copy()
        if prior is not None:
            matrix[:, prior.count] = self._rounded(prior.surprise(source, self.hour_shares_)[:, None])[:, 0]
        if debit is not None:
            matrix[:, debit.value] = self._rounded(debit.scaled_z(source, self.debit_params_)[:, None])[:, 0]
        return matrix

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
        excess = self.__dict__.get("excess", 0.0)
        if excess:
            per_feature = np.maximum(per_feature - excess, 0.0)
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
