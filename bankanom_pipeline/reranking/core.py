"""The re-ranking core: fit a supervised re-ranker on analysts' labels and gate it.

A re-ranker reads an item's features plus the unsupervised score and returns the probability that an
analyst would call it a true positive. It is a scikit-learn ``HistGradientBoostingClassifier``: it
handles missing values and unscaled features natively and stays small enough for a few hundred labels.

Labels come from the feedback store (``feedback.labels``), never from the generator. The items analysts
labelled were chosen by the queue (mostly the top and the uncertain ones), so they are a biased sample:
the gate tests on a share of them held out by a hash of the item's id, which is unrelated to how the
item was chosen, and also reports the figures on the held-out items the queue drew at random.

scikit-learn is imported when a re-ranker is fitted or evaluated, not with this module.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingClassifier

# Below these a re-ranker is refused: with fewer labels the held-out share (30%) has a handful of each
# class and the gate's average precision is noise.
MIN_LABELS = 50
MIN_PER_CLASS = 10
HELD_OUT_SHARE = 0.3
# the gate promotes on a gain in average precision above this: a tie or a rounding-size gain is not one
MIN_GAIN = 0.01
# the held-out items the queue drew at random are reported on their own when there are this many, with
# both classes present
MIN_RANDOM_ONLY = 10
# below a re-ranker's floor (Reranker.floor), an item's score is its unsupervised score times this: it
# ranks beneath every item the re-ranker judges, in the unsupervised order, and is never flagged
BELOW_FLOOR = 1e-3

# Small trees, strong regularisation, and a score that may only raise the probability: a few hundred
# labels cannot support more, and an analyst's true positive is never made less likely by a higher
# unsupervised score.
PARAMS = {
    "learning_rate": 0.05,
    "max_iter": 200,
    "max_depth": 3,
    "min_samples_leaf": 5,
    "l2_regularization": 1.0,
    "random_state": 7,
}


class TooFewLabels(ValueError):
    """Fewer labels than a re-ranker needs (MIN_LABELS in all, MIN_PER_CLASS of each class)."""

    def __init__(self, kind: str, positives: int, negatives: int, message: str | None = None):
        self.kind, self.positives, self.negatives = kind, positives, negatives
        total = positives + negatives
        super().__init__(
            message
            or f"{_article(kind)} {kind} re-ranker needs at least {MIN_LABELS} labelled items, "
            f"{MIN_PER_CLASS} of each class; it has {total} ({positives} true positives, {negatives} "
            "false positives)"
        )


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def check_labels(y: np.ndarray, kind: str) -> None:
    """Raise TooFewLabels unless ``y`` (1 = true positive, 0 = false positive) is enough to fit on."""
    positives = int(np.sum(y == 1))
    negatives = int(np.sum(y == 0))
    if positives + negatives < MIN_LABELS or min(positives, negatives) < MIN_PER_CLASS:
        raise TooFewLabels(kind, positives, negatives)


def held_out(target_ids: Sequence[str], share: float = HELD_OUT_SHARE) -> np.ndarray:
    """True for the items the gate tests on: the first 8 bytes of sha256(id) below ``share`` of their
    range. Deterministic, the same on every run and machine, and independent of why an item was chosen."""
    if not 0 < share < 1:
        raise ValueError(f"held-out share must be between 0 and 1, not {share}")
    cut = share * 2**64
    return np.fromiter(
        (int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") < cut for i in target_ids),
        dtype=bool,
        count=len(target_ids),
    )


def _one_thread():
    """HGB's OpenMP threads cost more than they save at this size: a fit on 200 labels took 1-4 s with
    both cores' threads on a loaded two-core machine, 0.1 s on one; scoring a day is no slower on one."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="openmp")


def _inputs(X: np.ndarray, unsupervised: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    unsupervised = np.asarray(unsupervised, dtype=np.float64).reshape(-1, 1)
    if X.ndim != 2 or X.shape[0] != unsupervised.shape[0]:
        raise ValueError(
            f"features ({X.shape}) and unsupervised scores ({unsupervised.shape[0]}) must have one row per item"
        )
    return np.hstack([X, unsupervised])


@dataclass
class Reranker:
    """A fitted re-ranker: the classifier, the feature names it reads (the unsupervised score last)."""

    estimator: HistGradientBoostingClassifier
    names: list[str]
    kind: str
    version: str = ""  # the registry version it was loaded from ("" while training)
    # the unsupervised score below which the re-ranker does not judge: the labels the queue gathers lie
    # above it (the top and the items near the operating threshold), and below it the trees extrapolate
    # (a transaction re-ranker judging every transaction ranked the frauds worse: dev ROC-AUC .975 -> .93)
    floor: float | None = None

    def predict(self, X: np.ndarray, unsupervised: np.ndarray) -> np.ndarray:
        """The probability that each item is a true positive (float64 in [0, 1]); below ``floor``, the
        unsupervised score times BELOW_FLOOR instead."""
        inputs = _inputs(X, unsupervised)
        if inputs.shape[1] != len(self.names) + 1:
            raise ValueError(f"the re-ranker reads {len(self.names)} features, got {inputs.shape[1] - 1}")
        if inputs.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        column = list(self.estimator.classes_).index(1)
        with _one_thread():
            probability = np.clip(self.estimator.predict_proba(inputs)[:, column], 0.0, 1.0)
        if self.floor is not None:
            below = inputs[:, -1] < self.floor
            probability = np.where(below, np.clip(inputs[:, -1], 0.0, 1.0) * BELOW_FLOOR, probability)
        return probability.astype(np.float64)


def fit(
    X: np.ndarray,
    unsupervised: np.ndarray,
    y: np.ndarray,
    names: list[str],
    kind: str,
    floor: float | None = None,
) -> Reranker:
    """A re-ranker fitted on these labelled items (``y``: 1 = true positive, 0 = false positive), judging
    items whose unsupervised score is at least ``floor`` (all when None). Raises TooFewLabels below
    MIN_LABELS / MIN_PER_CLASS."""
    check_labels(np.asarray(y), kind)
    return _fit(X, unsupervised, y, names, kind, floor)


def _fit(
    X: np.ndarray,
    unsupervised: np.ndarray,
    y: np.ndarray,
    names: list[str],
    kind: str,
    floor: float | None = None,
) -> Reranker:
    from sklearn.ensemble import HistGradientBoostingClassifier

    y = np.asarray(y).astype(np.int8)
    inputs = _inputs(X, unsupervised)
    if inputs.shape[1] != len(names) + 1:
        raise ValueError(f"{len(names)} feature names for {inputs.shape[1] - 1} feature columns")
    if len(y) != inputs.shape[0]:
        raise ValueError(f"{len(y)} labels for {inputs.shape[0]} items")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 1 (true positive) or 0 (false positive)")
    monotonic = [0] * len(names) + [1]  # the unsupervised score may only raise the probability
    estimator = HistGradientBoostingClassifier(**PARAMS, monotonic_cst=monotonic)
    with _one_thread():
        estimator.fit(inputs, y)
    return Reranker(estimator, list(names), kind, floor=floor)


@dataclass(frozen=True)
class GateResult:
    promoted: bool
    reason: str
    n_test: int
    ap_reranked: float
    ap_unsupervised: float
    gain: float
    random_only: dict | None

    def to_dict(self) -> dict:
        """The figures as JSON values (an undefined average precision as null)."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def _ap(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, scores))


def gate(
    reranker: Reranker,
    X: np.ndarray,
    unsupervised: np.ndarray,
    y: np.ndarray,
    selection: Sequence[str | None] | None = None,
) -> GateResult:
    """Whether ``reranker`` ranks the held-out labelled items (``X``, ``unsupervised``, ``y``: the held-out
    share only, the re-ranker fitted on the rest) better than the unsupervised score does: promoted when
    both classes are present, its average precision beats the unsupervised order's by more than
    MIN_GAIN, and, when ``selection`` (why the queue asked about each item) holds MIN_RANDOM_ONLY items
    drawn at random with both classes, their average precision does not drop by more than MIN_GAIN
    (``random_only``). The queue's top and uncertain items are a biased sample: a gain on them alone
    can be a loss on the items the queue did not choose. With too few random labels the gate rests on
    the whole held-out share and its reason says so."""
    y = np.asarray(y).astype(np.int8)
    unsupervised = np.asarray(unsupervised, dtype=np.float64)
    n = len(y)
    positives = int(np.sum(y == 1))
    if positives == 0 or positives == n:
        label = "true" if positives else "false"
        return GateResult(
            False,
            f"the {n} held-out labels are all {label} positives: average precision cannot compare the "
            "two orders; label more items",
            n,
            math.nan,
            math.nan,
            math.nan,
            None,
        )
    reranked = reranker.predict(X, unsupervised)
    ap_reranked, ap_unsupervised = _ap(y, reranked), _ap(y, unsupervised)
    gain = ap_reranked - ap_unsupervised
    random_only = None
    if selection is not None:
        chosen = np.array([s == "random" for s in selection], dtype=bool)
        y_random = y[chosen]
        if len(y_random) >= MIN_RANDOM_ONLY and 0 < y_random.sum() < len(y_random):
            random_only = {
                "n_test": len(y_random),
                "ap_reranked": _ap(y_random, reranked[chosen]),
                "ap_unsupervised": _ap(y_random, unsupervised[chosen]),
            }
            random_only["gain"] = random_only["ap_reranked"] - random_only["ap_unsupervised"]
    beats = gain > MIN_GAIN
    verdict = "beats" if beats else "does not beat"
    reason = (
        f"on {n} held-out labels ({positives} true positives) the re-ranked order {verdict} the "
        f"unsupervised one: average precision {ap_reranked:.3f} against {ap_unsupervised:.3f} "
        f"(gain {gain:+.3f}, needed > {MIN_GAIN})"
    )
    if random_only is None:
        promoted = beats
        reason += (
            f"; no random labels with both classes among them (at least {MIN_RANDOM_ONLY} needed) to "
            "check the gain on items chosen without bias"
        )
    else:
        random_ok = random_only["gain"] >= -MIN_GAIN
        promoted = beats and random_ok
        reason += (
            f"; on its {random_only['n_test']} random labels average precision "
            f"{random_only['ap_reranked']:.3f} against {random_only['ap_unsupervised']:.3f} "
            f"(gain {random_only['gain']:+.3f}: "
            + ("no loss" if random_ok else f"a loss, refused below -{MIN_GAIN}")
            + ")"
        )
    return GateResult(promoted, reason, n, ap_reranked, ap_unsupervised, gain, random_only)


@dataclass(frozen=True)
class Trained:
    """A re-ranker and the gate on the held-out share of the labels of one fitted on the rest."""

    reranker: Reranker
    gate: GateResult
    n_train: int  # labels the returned re-ranker was fitted on (all of them when refitted)
    labels: dict  # counts: total, true positives, false positives, per selection reason
    refit: bool = False  # the returned re-ranker was refitted on every label after the gate
    n_measured: int = 0  # labels the model the gate measured was fitted on (those outside the share)

    def gate_dict(self) -> dict:
        """The gate's figures for a version's manifest, with what they were measured on: ``n_fit`` labels
        fitted the model the gate measured; with ``refit`` the version saved is another model, fitted on
        all of them (``n_train``), which the held-out labels did reach."""
        return {**self.gate.to_dict(), "n_fit": self.n_measured, "refit": self.refit, "n_train": self.n_train}


def train_and_gate(
    target_ids: Sequence[str],
    X: np.ndarray,
    unsupervised: np.ndarray,
    y: np.ndarray,
    names: list[str],
    kind: str,
    selection: Sequence[str | None] | None = None,
    floor: float | None = None,
    refit: bool = False,
) -> Trained:
    """Split the labelled items by ``held_out``, fit on the rest, gate on the held-out share. With
    ``refit``, the re-ranker returned is then fitted the same way on every label: the gate judged the
    procedure on labels it had not seen, and a few hundred labels are too few to leave 30% unused
    (transactions, dev seeds: PR-AUC .677 against .669); without, it is the very model the gate
    measured. Raises TooFewLabels when all the labels together are fewer than MIN_LABELS /
    MIN_PER_CLASS, or when the training share lacks a class."""
    y = np.asarray(y).astype(np.int8)
    check_labels(y, kind)
    test = held_out(target_ids)
    X = np.asarray(X, dtype=np.float64)
    unsupervised = np.asarray(unsupervised, dtype=np.float64)
    train_y = y[~test]
    if train_y.sum() == 0 or train_y.sum() == len(train_y):
        positives, negatives = int(np.sum(y == 1)), int(np.sum(y == 0))
        missing = "false" if train_y.sum() else "true"
        raise TooFewLabels(
            kind,
            positives,
            negatives,
            f"{_article(kind)} {kind} re-ranker cannot be fitted: of its {len(y)} labels ({positives} true "
            f"positives, {negatives} false positives), the {len(train_y)} outside the held-out share "
            f"({HELD_OUT_SHARE:.0%}, chosen by a hash of the id) hold no {missing} positive; label more items",
        )
    reranker = _fit(X[~test], unsupervised[~test], train_y, names, kind, floor)
    chosen = None if selection is None else [s for s, t in zip(selection, test, strict=True) if t]
    result = gate(reranker, X[test], unsupervised[test], y[test], chosen)
    n_train = n_measured = int((~test).sum())
    if refit:
        reranker, n_train = _fit(X, unsupervised, y, names, kind, floor), len(y)
    reasons: dict[str, int] = {}
    for s in selection if selection is not None else []:
        key = s if s is not None else "analyst"
        reasons[key] = reasons.get(key, 0) + 1
    labels = {
        "total": len(y),
        "true_positives": int(np.sum(y == 1)),
        "false_positives": int(np.sum(y == 0)),
        "by_selection": reasons,
    }
    return Trained(reranker, result, n_train, labels, refit, n_measured)
