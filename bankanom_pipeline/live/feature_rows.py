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


# A large peek's answer in blocks (``FEATURE_BLOCKS``), so the API scores the first rows while the stream
# computes the next: frames of a kind byte, a little-endian uint32 length and the payload, rows
# (``_ROWS``: float64 rows as above) or a refusal (``_REFUSED``: JSON ``{"status", "detail"}``, the last
# frame: every row sent before it is void). The headers are ``encode``'s.
FEATURE_BLOCKS = "application/x-bankanom-feature-blocks"
_ROWS, _REFUSED = b"R", b"E"
_HEAD = 5


def rows_frame(values: np.ndarray) -> bytes:
    body = np.ascontiguousarray(values, dtype=_DTYPE).tobytes()
    return _ROWS + len(body).to_bytes(4, "little") + body


def refused_frame(status: int, detail: object) -> bytes:
    body = orjson.dumps({"status": status, "detail": detail})
    return _REFUSED + len(body).to_bytes(4, "little") + body


class Refusal(Exception):
    """A refused frame: the peek's status (409, 422) and detail."""

    def __init__(self, status: int, detail: object):
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


class BlockReader:
    """The frames of a ``FEATURE_BLOCKS`` body as its bytes arrive: ``feed`` returns the row blocks
    complete so far (``Refusal`` for a refused frame); ``done`` says whether the body ended on a frame's
    end."""

    def __init__(self, columns: int):
        self.columns, self._buffer = columns, bytearray()

    def feed(self, data: bytes) -> list[np.ndarray]:
        self._buffer += data
        blocks, at, buffer = [], 0, self._buffer
        while len(buffer) - at >= _HEAD:
            size = int.from_bytes(buffer[at + 1 : at + _HEAD], "little")
            if len(buffer) - at - _HEAD < size:
                break
            kind, payload = buffer[at : at + 1], bytes(buffer[at + _HEAD : at + _HEAD + size])
            at += _HEAD + size
            if kind == _REFUSED:
                refused = orjson.loads(payload)
                raise Refusal(refused["status"], refused["detail"])
            if kind != _ROWS or size % (_DTYPE.itemsize * self.columns):
                raise ValueError(f"a frame of kind {bytes(kind)!r} and {size} bytes in feature blocks")
            blocks.append(np.frombuffer(payload, dtype=_DTYPE).reshape(-1, self.columns))
        del buffer[:at]
        return blocks

    @property
    def done(self) -> bool:
        return not self._buffer
