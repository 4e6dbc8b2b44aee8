"""Score drift against the training window, measured as a population stability index (PSI)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# a bin with no events would make PSI infinite; this share stands in for "almost none"
_EPSILON = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI between two distributions given as shares per bin: sum((a - e) * ln(a / e))."""
    e = np.maximum(np.asarray(expected, dtype=float), _EPSILON)
    a = np.maximum(np.asarray(actual, dtype=float), _EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def uniform_psi(scores: np.ndarray, bins: int) -> float:
    """PSI of normalised scores against the uniform distribution they follow on the training window
    (each model's score is the training ECDF of its raw score)."""
    counts, _ = np.histogram(np.clip(scores, 0, 1), bins=bins, range=(0, 1))
    return psi(np.full(bins, 1 / bins), counts / max(1, counts.sum()))


@dataclass(frozen=True)
class Verdict:
    drifted: bool
    psi: dict[str, float]  # per model
    reason: str


def judge(scores: dict[str, np.ndarray], threshold: float, bins: int, min_events: int) -> Verdict:
    n = min((len(s) for s in scores.values()), default=0)
    if n < min_events:
        return Verdict(False, {}, f"only {n} scored events (need {min_events})")
    values = {name: round(uniform_psi(s, bins), 4) for name, s in scores.items()}
    worst = max(values, key=values.get)
    drifted = values[worst] > threshold
    word = "above" if drifted else "within"
    return Verdict(drifted, values, f"{worst} PSI {values[worst]:.3f} {word} threshold {threshold}")
