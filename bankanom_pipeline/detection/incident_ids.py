"""Stable incident ids: derived from the incident's first event, so a rerun, a live stream and the batch
run that later confirms it all name the same incident the same way (docs/live-incidents.md).

``INC-YYYYMMDD-<10 hex>``: the UTC day of the first event and the first 10 hex digits (40 bits) of the
sha256 of its event id. The first event is the earliest by ``(ts, event_id)``. Two incidents of one day
share an id only if their first events' hashes agree on 40 bits: with ~6,000 incidents a day that is a
chance of ~1.6e-5 a day; ``check_unique`` turns it into a clear error rather than a silent merge.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable

PREFIX = "INC-"
HEX_DIGITS = 10
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def incident_id(first_event_id: str, first_ts_us: int) -> str:
    """The id of the incident whose first event (earliest by ``(ts, event_id)``) is ``first_event_id``
    at ``first_ts_us`` (µs since the epoch, UTC)."""
    if not first_event_id:
        raise ValueError("an incident id needs its first event's id, got an empty one")
    day = (_EPOCH + dt.timedelta(microseconds=int(first_ts_us))).strftime("%Y%m%d")
    digest = hashlib.sha256(first_event_id.encode()).hexdigest()[:HEX_DIGITS]
    return f"{PREFIX}{day}-{digest}"


def check_unique(ids: Iterable[str], first_event_ids: Iterable[str]) -> None:
    """Raise if two different first events got the same id (a 40-bit hash collision within a day)."""
    seen: dict[str, str] = {}
    for iid, first in zip(ids, first_event_ids, strict=True):
        other = seen.setdefault(iid, first)
        if other != first:
            raise ValueError(
                f"incident id collision: first events {other!r} and {first!r} both give {iid}; "
                f"lengthen HEX_DIGITS in {__name__} (ids of past days would change)"
            )
