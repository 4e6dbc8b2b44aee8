"""Request-body field types built from the pipeline's declared validation rules (log_rules.yaml,
transaction_rules.yaml, read by the GX-free ``bankanom_pipeline.validation.declared``): the API's
executor of those rules. A field's ranges, lengths, pattern and allowed values come from the checks on its
typed column, so the OpenAPI schema states them and a body the pipeline would quarantine is refused (422).

Types are strict JSON types, as the pipeline's typing is: a number is a finite JSON number (never a
string, a boolean, NaN or ±Infinity, which Python's JSON reader accepts), a whole number may be written
81.0 (as the pipeline reads "81.0") but not 81.5, text is a JSON string.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictFloat,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from bankanom_pipeline.validation import json_numbers
from bankanom_pipeline.validation.declared import (
    LOG_RULES,
    PATTERN_MEANINGS,
    PATTERNS,
    TRANSACTION_RULES,
    Check,
    build_checks,
    field_constraints,
    load_rules,
)

# the rules as the API runs them: the per-run parameters (partition bounds, configured services) unfilled
LOG_CHECKS = build_checks(load_rules(LOG_RULES), None)
TRANSACTION_CHECKS = build_checks(load_rules(TRANSACTION_RULES), None, "transactions")
# pydantic's regex engine with GX's semantics (Python's re.search), so a pattern accepts what it does there
REGEX_ENGINE = "python-re"


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


_TIMESTAMP = re.compile(PATTERNS["timestamp_pattern"])


def _text_time(value: Any) -> Any:
    # the pipeline's form only: pydantic alone would also read a number (or "1767607200") as Unix time
    if not isinstance(value, str) or not _TIMESTAMP.search(value):
        raise ValueError("a time must be a string YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+HH:MM]")
    return value


FiniteNumber = Annotated[StrictFloat, Field(allow_inf_nan=False)]


def _finite_json(value: Any) -> Any:
    where = json_numbers.non_finite(value)
    if where is not None:
        raise PydanticCustomError(
            "finite_number",
            "numbers in metrics must be finite{where}: not NaN, ±Infinity or beyond ±1.8e308 (metrics_finite)",
            {"where": f" (at {where})" if where else ""},
        )
    return value


# any JSON value (an unknown metric is kept and not read), with no non-finite number in it: log_rules.yaml's
# metrics_finite, which the pipeline applies to every key of metrics
FiniteJSON = Annotated[Any, AfterValidator(_finite_json)]
WHOLE = BeforeValidator(_whole)  # with StrictInt: a whole number


def _timestamp_schema(schema: dict) -> None:
    # the declared pattern is the whole contract: JSON Schema's date-time format (RFC 3339) demands an
    # offset and a 'T', which the pattern lets go (no offset: UTC), so stating both contradicted itself
    schema["pattern"] = PATTERNS["timestamp_pattern"]
    schema.pop("format", None)


# a log's timestamp: the declared pattern, stated in the schema, then read by pydantic
Timestamp = Annotated[dt.datetime, BeforeValidator(_text_time), Field(json_schema_extra=_timestamp_schema)]


def _says_what_the_pattern_means(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError as error:
        for e in error.errors():
            if e["type"] == "string_pattern_mismatch":
                meaning = PATTERN_MEANINGS.get(e["ctx"]["pattern"], "the declared form")
                raise PydanticCustomError("string_pattern_mismatch", f"should be {meaning}") from None
        raise


def declared(base: Any, checks: list[Check], column: str, *before: Any, **constants: float | None) -> Any:
    """``base`` constrained as the checks on typed ``column`` declare (a value set becomes a Literal),
    then ``before`` validators (last, so that the schema still shows the constraints)."""
    constraints = field_constraints(checks, column, **constants)
    values = constraints.pop("value_set", None)
    if values is not None:
        return Literal[values]
    return Annotated[base, Field(**constraints), *before, *(MEANS if "pattern" in constraints else ())]


# a pattern's error names what it means, not the regex (the schema shows the regex)
MEANS = (WrapValidator(_says_what_the_pattern_means),)


def log_field(base: Any, column: str, **constants: float | None) -> Any:
    return declared(base, LOG_CHECKS, column, **constants)


def transaction_field(base: Any, column: str, *before: Any) -> Any:
    return declared(base, TRANSACTION_CHECKS, column, *before)
