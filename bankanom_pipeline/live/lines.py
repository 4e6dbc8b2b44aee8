"""From a source's line to the engine's ``Event``: ground truth dropped, the declared validation rules
applied (the API's compiled request model, ``LogEvent``: one set of rules for the pipeline, the API and
the stream), the future-dated guard. A line that fails says why, in the live store's ``refused.reason``
form: ``invalid: <field>: <rule>``, ``future: <how far ahead>``."""

from __future__ import annotations

import datetime as dt

import orjson
from pydantic import ValidationError

from bankanom_api.schemas import LogEvent
from bankanom_pipeline.online.events import METRIC_INDEX, Event, to_micros
from bankanom_pipeline.validation import json_numbers

# Ground truth the generator writes into each line (what raw_logs carries to log_labels, never to
# validated_logs): dropped before anything reads the line, so no detector can see it.
LABEL_FIELDS = ("anomaly_details",)


class Refused(ValueError):
    """A line the scorer does not ingest; ``reason`` is the store's ``refused.reason``."""

    def __init__(self, reason: str, event_id: str | None = None):
        super().__init__(reason)
        self.reason, self.event_id = reason, event_id


def _why(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "line"
    return f"invalid: {where}: {first['msg']}"


def validated(obj: object) -> Event:
    """The engine's event of one decoded line (a JSON object), or ``Refused`` naming the broken rule."""
    if not isinstance(obj, dict):
        raise Refused(f"invalid: line: a log line is a JSON object, not {type(obj).__name__}")
    for name in LABEL_FIELDS:
        obj.pop(name, None)
    event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
    try:
        event = LogEvent.model_validate(obj)
    except ValidationError as error:
        raise Refused(_why(error), event_id) from None
    return as_event(event)


def from_line(line: bytes | str) -> Event:
    """``validated`` of one JSON line as a source delivers it. A line orjson does not read is read as the
    pipeline reads it (``json_numbers.loads``: -NaN, Infinity, 1e309, a trailing comma), so that the rule
    it breaks refuses it, naming the field, as the pipeline quarantines it."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        try:
            obj = json_numbers.loads(line)
        except ValueError:
            raise Refused(f"invalid: line: not JSON ({error})") from None
    return validated(obj)


def as_event(event: LogEvent) -> Event:
    """A validated event as the engine reads it (``validated_logs``' columns)."""
    return Event(
        event_id=event.event_id,
        ts=to_micros(event.utc_timestamp()),
        source_service=event.source_service,
        log_level=event.log_level,
        message=event.message,
        correlation_id=event.correlation_id,
        user_id=event.user_id,
        ip_address=event.ip_address,
        geo_location=event.geo_location,
        metrics=known_metrics(event.metrics),
    )


def known_metrics(metrics: dict | None) -> dict | None:
    """The metrics the features read: an unknown field may hold any JSON value (an integer too large
    for the store, say) and would only be carried along, as the feature SQL's fixed schema ignores it."""
    kept = {name: value for name, value in (metrics or {}).items() if name in METRIC_INDEX}
    return kept or None


def check_not_future(event: Event, horizon_us: int, max_future_s: float) -> None:
    """Refuse an event dated beyond ``horizon_us`` (now + ``max_future_s``): a clock gone wrong upstream
    would otherwise move the high-water mark ahead and make every real event too late."""
    if event.ts > horizon_us:
        ahead = (event.ts - horizon_us) / 1e6 + max_future_s
        raise Refused(f"future: dated {ahead:.0f} s ahead of this server's clock", event.event_id)


def now_us() -> int:
    return to_micros(dt.datetime.now(dt.UTC))
