"""The API's exchange with the stream's ``/peek`` in forms neither side has to re-read.

The answer: raw feature rows, float64, little-endian, row-major, one row per posted event (NaN: no
value), the feature set's version and the column names in headers. JSON formatted and parsed 57 numbers
per event (a 1,000-event batch: ~10 ms on each side); these bytes are the array itself. The stream
answers JSON to a caller that does not ask for this type (operators, ``curl``).

The question, from a caller holding the stream's key (the API): the events already validated, as the
engine's ``Event`` fields in order (``EVENTS``). The API validated each with ``LogEvent``, the rules the
stream would apply, and converted it with ``live.lines.as_event``, the stream's own conversion: the
stream does not validate them again (~13 ms of its CPU per 1,000 events). The engine still checks each
field's type (``BadEvent``, 422) and ``peek`` never changes the state. Any other caller posts JSON events,
which the stream validates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import orjson

from bankanom_pipeline.online.events import Event

FEATURE_ROWS = "application/x-bankanom-feature-rows"
EVENTS = "application/x-bankanom-events"
VERSION_HEADER = "x-feature-set-version"
COLUMNS_HEADER = "x-feature-columns"
_DTYPE = np.dtype("<f8")
_FIELDS = len(Event._fields)


def encode(values: np.ndarray, version: str, columns: Sequence[str]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of ``values`` (one row per event, one column per name of ``columns``)."""
    if values.ndim != 2 or values.shape[1] != len(columns):
        raise ValueError(f"{values.shape} feature rows for {len(columns)} columns")
    body = np.ascontiguousarray(values, dtype=_DTYPE).tobytes()
    return body, {VERSION_HEADER: version, COLUMNS_HEADER: ",".join(columns)}


def decode(headers: Mapping[str, str], body: bytes) -> tuple[str, list[str], np.ndarray]:
    """``(version, columns, values)`` of an answer ``encode`` made (headers named in lower case);
    ``ValueError`` when the body is not whole rows of those columns."""
    columns = headers[COLUMNS_HEADER].split(",")
    if len(body) % (_DTYPE.itemsize * len(columns)):
        raise ValueError(f"{len(body)} bytes are not whole rows of {len(columns)} float64 features")
    values = np.frombuffer(body, dtype=_DTYPE).reshape(-1, len(columns))
    return headers[VERSION_HEADER], columns, values


def encode_events(events: Sequence[Event]) -> bytes:
    """The body of validated events (``EVENTS``): a JSON array of each event's fields in ``Event``'s
    order (a float keeps its exact value through orjson and back)."""
    return orjson.dumps([tuple(e) for e in events])


def decode_events(body: bytes) -> list[Event]:
    """The events of a body ``encode_events`` made; ``ValueError`` when it is not a non-empty array of
    arrays of ``Event``'s fields (their types are the engine's to check)."""
    try:
        rows = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError("the body must be a non-empty array of events")
    make = Event._make
    events = []
    for i, row in enumerate(rows):
        if row.__class__ is not list or len(row) != _FIELDS:
            raise ValueError(f"event {i}: an array of the {_FIELDS} fields {', '.join(Event._fields)}")
        events.append(make(row))
    return events
