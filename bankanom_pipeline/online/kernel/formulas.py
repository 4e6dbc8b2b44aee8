"""The features' arithmetic that every way of reading an event's features shares (the in-order step, and
the read from the events before an event's place: late events and peeks), written once."""

from __future__ import annotations

import math

from bankanom_pipeline.online.kernel.jit import jit
from bankanom_pipeline.online.layout import MIN

_TWO_PI = 2 * math.pi
_DEG = math.pi / 180.0


@jit(inline="always")
def clock(o, t, level):
    """The level, the hour on the circle and the weekend flag (the feature columns 0-3)."""
    hour = (t // 3_600_000_000) % 24 + ((t // MIN) % 60) / 60.0
    o[1] = math.sin(_TWO_PI * hour / 24)
    o[2] = math.cos(_TWO_PI * hour / 24)
    o[3] = 1.0 if (t // 86_400_000_000 + 3) % 7 + 1 >= 6 else 0.0
    o[0] = float(level)


@jit(inline="always")
def travel(lat, lon, plat, plon, t, pt):
    """Great-circle km from the previous located event (``plat``, ``plon`` at ``pt``) and the speed in
    km/h (at least a minute apart)."""
    km = (
        2
        * 6371
        * math.asin(
            math.sqrt(
                math.sin((lat - plat) * _DEG / 2) ** 2
                + math.cos(plat * _DEG) * math.cos(lat * _DEG) * math.sin((lon - plon) * _DEG / 2) ** 2
            )
        )
    )
    return km, km / max((t - pt) / 1e6 / 3600.0, 1 / 60.0)


@jit(inline="always")
def amount_z(x, n, sx, sxx):
    """z of ``x`` against ``n`` (>= 3) earlier amounts of sum ``sx`` and sum of squares ``sxx``: the SQL's
    window sums (the current row included) less the current row, sample variance floored at 0."""
    sx = (sx + x) - x
    sxx = (sxx + x * x) - x * x
    var = (sxx - sx * sx / n) / (n - 1)
    return (x - sx / n) / (0.25 + math.sqrt(max(var, 0.0)))


@jit(inline="always")
def p95(vals, n):
    """DuckDB's quantile_cont(v, 0.95) of the ``n`` sorted ``vals`` (n >= 1)."""
    pos = (n - 1) * 0.95
    k_lo = math.floor(pos)
    k_hi = math.ceil(pos)
    return vals[k_lo] + (pos - k_lo) * (vals[k_hi] - vals[k_lo])


@jit(inline="always")
def better(v, best, is_min):
    """Whether gauge value ``v`` (not NaN) beats the extreme ``best`` so far (NaN: none yet)."""
    return math.isnan(best) or (v < best if is_min else v > best)
