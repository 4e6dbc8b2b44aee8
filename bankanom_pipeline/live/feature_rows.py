"""The stream's ``/peek`` answer to the API as raw feature rows: float64, little-endian, row-major, one row
per posted event (NaN: no value), the feature set's version and the column names in headers. JSON
formatted and parsed 57 numbers per event (a 1,000-event batch: ~10 ms on each side); these bytes are
the array itself. The stream answers JSON to a caller that does not ask for this type (operators,
``curl``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

FEATURE_ROWS = "application/x-bankanom-feature-rows"
VERSION_HEADER = "x-feature-set-version"
COLUMNS_HEADER = "x-feature-columns"
_DTYPE = np.dtype("<f8")


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
