"""The numbers a log line's JSON may hold, read alike by the pipeline (DuckDB's JSON reader), the API and the
live stream (Python), and the one rule on them: a number is finite (``metrics_finite`` in log_rules.yaml).

DuckDB reads, besides JSON's numbers, the non-finite literals ``NaN``, ``Infinity`` and ``inf`` in any case
with an optional minus (``-NaN``, ``nan``, ``-inf``, ``INFINITY``; no plus, no space after the minus), and
numbers beyond a double (``1e309``, a 400-digit integer) as ±infinity, and one trailing comma in an object
or array (``{"a": 1,}``). Python's ``json`` reads ``NaN``, ``Infinity`` and ``-Infinity`` only, integers up
to 4,300 digits and no trailing comma; orjson none of these.
``loads`` reads what DuckDB reads, so that such a line is refused by the rule, naming the field, rather
than by a parse error in one reader and not in the other.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

# Outside a string (strings are matched first and kept as sent): DuckDB's (yyjson's) non-finite literals,
# and a trailing comma after an object's or array's last value (one: ",,}" and "{,}" it refuses too)
_TOKENS = re.compile(
    r'"(?:[^"\\]|\\.)*"'
    r"|(?<![A-Za-z0-9_.])(-?)(nan|infinity|inf)(?![A-Za-z0-9_])"
    r"|(?<![\s{\[,])(\s*),(?=\s*[}\]])",
    re.IGNORECASE | re.DOTALL,
)
_LARGEST = sys.float_info.max


def _as_python(match: re.Match) -> str:
    if match.group(3) is not None:
        return match.group(3)  # a trailing comma, left out
    if match.group(2) is None:
        return match.group(0)  # a string
    if match.group(2).lower() == "nan":
        return "NaN"  # -NaN is NaN (DuckDB reads both as NaN)
    return "-Infinity" if match.group(1) else "Infinity"


def _whole_or_double(text: str) -> int | float:
    # an integer Python will not convert (beyond 4,300 digits) is beyond a double: DuckDB reads ±infinity
    try:
        return int(text)
    except ValueError:
        return float(text)


def loads(data: bytes | str) -> Any:
    """``json.loads``, and on failure the same text with DuckDB's non-finite literals read as NaN or
    ±infinity, over-long integers as doubles and trailing commas left out (a failing body costs a second
    read; a valid one none).
    A text neither reads raises the first error."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, ValueError) as error:
        first = error
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        return json.loads(_TOKENS.sub(_as_python, text), parse_int=_whole_or_double)
    except (json.JSONDecodeError, ValueError):
        raise first from None


def non_finite(value: Any, at: str = "") -> str | None:
    """Where in ``value`` (a decoded JSON value) a number is not finite: NaN, ±infinity or an integer
    beyond a double ('' for ``value`` itself, '[0]', '.a' ... inside it), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else at
    if isinstance(value, int) and not isinstance(value, bool):
        return None if -_LARGEST <= value <= _LARGEST else at
    if isinstance(value, dict):
        items = ((f"{at}.{key}", item) for key, item in value.items())
    elif isinstance(value, list):
        items = ((f"{at}[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for where, item in items:
        found = non_finite(item, where)
        if found is not None:
            return found
    return None
