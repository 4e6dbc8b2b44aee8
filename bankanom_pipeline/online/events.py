"""One validated log event as the online engine reads it, and the per-event values the SQL derives from
it (``stg_logs``, the feature models' keys): template, country, network, session, location, predicates.

Timestamps are integer microseconds since the Unix epoch, UTC (``Event.ts``): the resolution DuckDB's
TIMESTAMP has, so windows compare exactly what the SQL compares.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import orjson

# The metrics stg_logs flattens, in its column order (every other key of ``metrics`` is ignored, as
# from_json with a fixed schema ignores it).
METRICS = (
    "response_time_ms",
    "requests_per_second",
    "error_rate",
    "timeout_rate",
    "success_rate",
    "failed_attempts",
    "unique_ips",
    "unique_users",
    "attempts_per_minute",
    "amount",
    "risk_score",
    "query_time_ms",
    "active_connections",
    "max_connections",
    "replication_lag_s",
    "cache_hit_rate",
    "cpu_percent",
    "records_accessed",
    "bytes_out",
    "concurrent_sessions",
    "vpn_connections",
    "files_modified",
    "consumer_lag",
)
METRIC_INDEX = {name: i for i, name in enumerate(METRICS)}

LEVELS = {"DEBUG": 0, "INFO": 1, "WARN": 2, "ERROR": 3}

# The SQL's regular expressions, verbatim (stg_logs, feat_user_activity, feat_ip_activity). Python's re
# and DuckDB's RE2 agree on these: no back-references or look-arounds, leftmost-first alternation.
_ID = re.compile(r"(USR|TXN|ORD|SES|CUS)-[0-9A-Za-z]+|svc-[a-z]+|[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
_SESSION = re.compile(r"SES-[0-9A-Za-z]+")
# RE2's $ is the end of the text; Python's would also match before a final newline: \Z
_NETWORK = re.compile(r"^(.*)[.:][^.:]*\Z")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class BadEvent(ValueError):
    """An event the engine refuses, with the reason (missing field, non-finite number, wrong type)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Event(NamedTuple):
    """The columns of ``validated_logs`` the features read. ``ts`` is epoch microseconds (UTC)."""

    event_id: str
    ts: int
    source_service: str
    log_level: str
    message: str
    correlation_id: str | None = None
    user_id: str | None = None
    ip_address: str | None = None
    geo_location: str | None = None
    metrics: dict[str, float] | None = None

    @classmethod
    def from_row(cls, row: dict) -> Event:
        """An event from a mapping of ``validated_logs`` columns (or a JSON body of the same keys):
        ``ts`` a datetime (naive is UTC), an ISO string or epoch microseconds; ``metrics`` a dict or its
        JSON text. Raises ``BadEvent`` naming the field."""
        for name in ("event_id", "ts", "source_service", "log_level", "message"):
            if row.get(name) is None:
                raise BadEvent("missing_field", f"{name} is required")
        metrics = row.get("metrics")
        if isinstance(metrics, str | bytes):
            try:
                metrics = orjson.loads(metrics)
            except orjson.JSONDecodeError as error:
                raise BadEvent("bad_metrics", f"metrics is not JSON: {error}") from None
        if metrics is not None and not isinstance(metrics, dict):
            raise BadEvent("bad_metrics", f"metrics must be an object, not {type(metrics).__name__}")
        texts = {}
        for name in ("event_id", "source_service", "log_level", "message"):
            value = row[name]
            if not isinstance(value, str):
                raise BadEvent("bad_type", f"{name} must be text, not {type(value).__name__}")
            texts[name] = value
        optional = {}
        for name in ("correlation_id", "user_id", "ip_address", "geo_location"):
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                raise BadEvent("bad_type", f"{name} must be text or null, not {type(value).__name__}")
            optional[name] = value
        return cls(ts=to_micros(row["ts"]), metrics=metrics, **texts, **optional)


def to_micros(ts: object) -> int:
    """Epoch microseconds (UTC) of a datetime (naive read as UTC), an ISO-8601 string or an int."""
    if isinstance(ts, bool):
        raise BadEvent("bad_timestamp", "ts must be a time, not a boolean")
    if isinstance(ts, int):
        return ts
    if isinstance(ts, str):
        try:
            ts = dt.datetime.fromisoformat(ts)
        except ValueError:
            raise BadEvent("bad_timestamp", f"ts is not an ISO-8601 time: {ts!r}") from None
    if isinstance(ts, dt.datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=dt.UTC)
        delta = ts - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raise BadEvent("bad_timestamp", f"ts must be a datetime, ISO string or epoch microseconds, not {ts!r}")


def from_micros(us: int) -> dt.datetime:
    """The naive UTC datetime of epoch microseconds (what DuckDB's TIMESTAMP holds)."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)


@lru_cache(maxsize=1)
def geo_seed() -> dict[str, tuple[float, float]]:
    """``geo`` -> (lat, lon) from the seed the SQL joins (``seeds/geo_regions.csv``)."""
    seed = Path(str(files("bankanom_pipeline") / "dbt_like_sql" / "seeds" / "geo_regions.csv"))
    with seed.open(newline="") as handle:
        return {row["geo"]: (float(row["lat"]), float(row["lon"])) for row in csv.DictReader(handle)}


def template(message: str) -> str:
    """The message with identifiers and addresses as ``<id>`` and numbers as ``#`` (stg_logs)."""
    return _NUMBER.sub("#", _ID.sub("<id>", message))


def network(ip: str) -> str:
    """The address without its last component; '' when it has none (regexp_extract's no-match)."""
    match = _NETWORK.match(ip)
    return match.group(1) if match else ""


def session(message: str) -> str | None:
    """The first session id named in the message, or None."""
    if "SES-" not in message:
        return None
    match = _SESSION.search(message)
    return match.group(0) if match else None


def metric_values(event_id: str, metrics: dict | None) -> list[float | None]:
    """The known metrics in ``METRICS`` order (None where not given). Non-finite or non-numeric
    values of known metrics are refused (validation refuses them upstream too)."""
    values: list[float | None] = [None] * len(METRICS)
    if not metrics:
        return values
    index = METRIC_INDEX
    for name, value in metrics.items():
        i = index.get(name)
        if i is None or value is None:
            continue
        if type(value) is float:
            if not math.isfinite(value):
                raise BadEvent("non_finite", f"{event_id}: metric {name} is {value}")
            values[i] = value
        elif type(value) is int:
            try:
                values[i] = float(value)
            except OverflowError:
                raise BadEvent("non_finite", f"{event_id}: metric {name} is too large") from None
        else:
            raise BadEvent("bad_metrics", f"{event_id}: metric {name} is not a number: {value!r}")
    return values
