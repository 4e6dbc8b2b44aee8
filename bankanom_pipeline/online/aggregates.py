"""features_events' per-event metric columns of one event (prepare's row-by-row path; its vectorised path
is ``prepare._metric_rows``, tested equal). The windows' aggregates are the kernel's (kernel/formulas.py)."""

from __future__ import annotations


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
