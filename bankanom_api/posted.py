"""A posted, validated log event as the API forwards it to the stream's service (``wire``); the stream
reads it as the engine's ``Event`` with ``live.lines.as_event``, the one conversion."""

from __future__ import annotations

from bankanom_api.schemas import LogEvent
from bankanom_pipeline.live.lines import known_metrics

_OPTIONAL = ("correlation_id", "user_id", "ip_address", "geo_location")


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
