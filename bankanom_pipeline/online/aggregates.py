"""The SQL's aggregates as the online engine computes them from a window's values: the per-event metric
columns, DuckDB's quantile_cont for the p95, and the amount z-score."""

from __future__ import annotations

import math
from bisect import bisect_left


def metric_row(m: list) -> list[float]:
    """features_events' per-event metric columns from the event's metrics (METRICS order)."""
    active, most = m[12], m[13]
    pool = 0.0 if active is None or most is None or most == 0 else active / most
    return [
        0.0 if m[0] is None else m[0],
        0.0 if m[1] is None else m[1],
        0.0 if m[2] is None else m[2],
        0.0 if m[3] is None else m[3],
        1.0 if m[4] is None else m[4],
        0.0 if m[5] is None else m[5],
        0.0 if m[6] is None else m[6],
        0.0 if m[7] is None else m[7],
        0.0 if m[8] is None else m[8],
        0.0 if m[9] is None else m[9],
        0.0 if m[10] is None else m[10],
        0.0 if m[11] is None else m[11],
        pool,
        0.0 if m[14] is None else m[14],
        1.0 if m[15] is None else m[15],
        0.0 if m[16] is None else m[16],
        0.0 if m[17] is None else m[17],
        0.0 if m[18] is None else m[18],
        0.0 if m[19] is None else m[19],
        0.0 if m[20] is None else m[20],
        0.0 if m[21] is None else m[21],
        0.0 if m[22] is None else m[22],
    ]


def p95_sorted(values: list[float], own: float | None) -> float:
    """DuckDB's quantile_cont(v, 0.95) of sorted ``values`` and ``own`` (None: absent): the values at
    floor and ceil of (n - 1) * q, linearly interpolated; 0 without values. ``own`` is merged in by
    position, so the list is not copied."""
    n = len(values) + (own is not None)
    if not n:
        return 0.0
    pos = (n - 1) * 0.95
    k_lo, k_hi = math.floor(pos), math.ceil(pos)
    if own is None:
        v_lo, v_hi = values[k_lo], values[k_hi]
    else:
        j = bisect_left(values, own)
        v_lo = values[k_lo] if k_lo < j else (own if k_lo == j else values[k_lo - 1])
        v_hi = values[k_hi] if k_hi < j else (own if k_hi == j else values[k_hi - 1])
    return v_lo + (pos - k_lo) * (v_hi - v_lo)


def amount_z(x: float, n: int, s: float, ss: float) -> float:
    """z of ``x`` against ``n`` earlier amounts of sum ``s`` and sum of squares ``ss``: the SQL's window
    sums (the current row included) less the current row, sample variance floored at 0."""
    s = (s + x) - x
    ss = (ss + x * x) - x * x
    var = (ss - s * s / n) / (n - 1)
    return (x - s / n) / (0.25 + math.sqrt(max(var, 0.0)))
