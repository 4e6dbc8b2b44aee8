"""A posted, validated log event as the online engine reads it (``as_event``) and as the API forwards it
to the stream's service (``wire``)."""

from __future__ import annotations

from bankanom_api.schemas import LogEvent
from bankanom_pipeline.online.events import METRIC_INDEX, Event, to_micros

_OPTIONAL = ("correlation_id", "user_id", "ip_address", "geo_location")


def known_metrics(metrics: dict | None) -> dict | None:
    """The metrics the features read (the SQL's fixed schema ignores the others): an unknown field may
    hold any JSON value, such as an integer too large for a 64-bit JSON writer, and would only be
    carried along."""
    kept = {name: value for name, value in (metrics or {}).items() if name in METRIC_INDEX}
    return kept or None


def as_event(event: LogEvent) -> Event:
    """A validated posted event as the engine reads it (``validated_logs``' columns)."""
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


def wire(event: LogEvent) -> dict:
    """The event as the API sends it to the stream: the generator's line format, the time in UTC with
    ``Z`` to the microsecond, the known metrics only, absent fields left out (ground truth such as
    ``anomaly_details`` was never read into ``LogEvent``)."""
    line = {
        "event_id": event.event_id,
        "timestamp": event.utc_timestamp().isoformat(timespec="microseconds") + "Z",
        "source_service": event.source_service,
        "log_level": event.log_level,
        "message": event.message,
    }
    for name in _OPTIONAL:
        value = getattr(event, name)
        if value is not None:
            line[name] = value
    metrics = known_metrics(event.metrics)
    if metrics:
        line["metrics"] = metrics
    return line
