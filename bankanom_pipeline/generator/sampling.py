"""Traffic intensity over time (seasonality and bursts) and the metric distributions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bankanom_pipeline.generator.config import MockConfig
from bankanom_pipeline.metrics_catalogue import METRICS

DAY_S = 86_400
WEEK_S = 7 * DAY_S


def season(config: MockConfig, seconds: np.ndarray) -> np.ndarray:
    """Daily and weekly rate factor at epoch ``seconds``, with mean 1 over a week."""
    s = config.seasonality
    hour = (seconds % DAY_S) / 3600.0
    daily = 1.0 + s.daily_amplitude * np.cos(2 * np.pi * (hour - s.peak_hour_utc) / 24.0)
    weekday = ((seconds // DAY_S) + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = Saturday, Sunday
    weekly = np.where(weekday >= 5, s.weekend_factor, 1.0) / ((5 + 2 * s.weekend_factor) / 7)
    return daily * weekly


def burst(config: MockConfig, seconds: np.ndarray) -> np.ndarray:
    g = config.log_generation
    if not g.burst_simulation or g.burst_duration_seconds == 0:
        return np.ones(len(seconds))
    in_burst = (seconds % g.burst_frequency_seconds) < g.burst_duration_seconds
    return np.where(in_burst, g.burst_multiplier, 1.0)


def traffic(config: MockConfig, seconds: np.ndarray) -> np.ndarray:
    """Expected events per second at each epoch second (``logs_per_second`` is the base between bursts)."""
    return config.log_generation.logs_per_second * season(config, seconds) * burst(config, seconds)


def sample_times(rng: np.random.Generator, start_s: int, rate: np.ndarray, n: int) -> np.ndarray:
    """``n`` epoch-millisecond timestamps drawn from the per-second ``rate`` starting at ``start_s``."""
    cumulative = np.cumsum(rate)
    u = rng.random(n) * cumulative[-1]
    second = np.searchsorted(cumulative, u, side="right")
    within = rng.random(n)
    return (start_s + second) * 1000 + (within * 1000).astype(np.int64)


def draw(
    rng: np.random.Generator, spec: Sequence, n: int, epoch_s: np.ndarray, config: MockConfig
) -> np.ndarray:
    """Values of a distribution spec (see ``config.DISTRIBUTIONS``) for ``n`` events at ``epoch_s``."""
    kind, *args = spec
    if kind == "lognormal":
        return rng.lognormal(np.log(args[0]), args[1], n)
    if kind == "uniform":
        return rng.uniform(args[0], args[1], n)
    if kind == "int":
        return rng.integers(int(args[0]), int(args[1]) + 1, n).astype(float)
    if kind == "beta":
        return rng.beta(args[0], args[1], n)
    if kind == "const":
        return np.full(n, float(args[0]))
    if kind == "poisson":
        return rng.poisson(args[0], n).astype(float)
    if kind == "seasonal":  # a gauge that follows the daily/weekly load, with multiplicative noise
        return args[0] * season(config, epoch_s) * rng.lognormal(0.0, args[1], n)
    raise ValueError(f"unknown distribution {kind!r}")


def clip_metric(name: str, values: np.ndarray) -> np.ndarray:
    metric = METRICS[name]
    values = np.maximum(values, metric.lower)
    if metric.upper is not None:
        values = np.minimum(values, metric.upper)
    return np.round(values) if metric.integer else np.round(values, metric.decimals)


def mix64(key: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64: spreads 64-bit keys over 64 well-mixed bits, for values that must follow from a key
    (deterministic ids, a user's travel on a given day) rather than from a generator's draw order."""
    with np.errstate(over="ignore"):
        z = key.astype(np.uint64) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class Categorical:
    """Draws indices with fixed probabilities ``p``: the same draws as ``rng.choice(len(p), n, p=p)``,
    but most are one table look-up instead of a binary search: a bucket of [0, 1) that lies within one
    index's share of the cdf answers directly."""

    BUCKETS = 1 << 16  # a power of two: a draw's bucket is exact

    def __init__(self, p: np.ndarray):
        self.cdf = np.cumsum(p)
        self.cdf /= self.cdf[-1]
        edges = np.arange(self.BUCKETS) / self.BUCKETS
        self.first = np.searchsorted(self.cdf, edges, side="right")  # index of a bucket's lowest draw
        self.last = np.searchsorted(self.cdf, np.nextafter(edges + 1 / self.BUCKETS, 0), side="right")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n)
        bucket = (u * self.BUCKETS).astype(np.int64)
        index = self.first[bucket]
        unsure = np.flatnonzero(index != self.last[bucket])  # buckets that straddle a step of the cdf
        index[unsure] = np.searchsorted(self.cdf, u[unsure], side="right")
        return index
