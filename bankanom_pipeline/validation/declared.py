"""The validation rules as declared in ``log_rules.yaml`` and ``transaction_rules.yaml``, read without
Great Expectations (cheap to import: the API uses this module, never ``rules.py``).

Two executors run the same declaration. The pipeline runs every check with GX on a typed partition
(``defs/validation/gx.py``). The API compiles the checks on a field's typed column into its request
model's pydantic constraints (``field_constraints``): ranges become ``ge``/``le``, a ``<column>_length`` range
``min_length``/``max_length``, a regex ``pattern`` and a value set the allowed values, so that the
OpenAPI schema states them and a request is refused (422) for what the pipeline quarantines.
``tests/test_rules_everywhere.py`` feeds both executors the same generated values and compares.

Both read numbers the same way: only finite numbers count as numbers. NaN, ±infinity and text that
overflows to it (``1e309``) are refused by the API and quarantined by the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LOG_RULES = Path(__file__).with_name("log_rules.yaml")
TRANSACTION_RULES = Path(__file__).with_name("transaction_rules.yaml")

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join(
    [
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,7}}:",
        rf"(?:{_H}:){{1,6}}:{_H}",
        rf"(?:{_H}:){{1,5}}(?::{_H}){{1,2}}",
        rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}",
        rf"(?:{_H}:){{1,3}}(?::{_H}){{1,4}}",
        rf"(?:{_H}:){{1,2}}(?::{_H}){{1,5}}",
        rf"{_H}:(?::{_H}){{1,6}}",
        rf":(?::{_H}){{1,7}}",
        "::",
        rf"(?:{_H}:){{6}}{_IPV4}",  # the last 32 bits written as IPv4
        rf"::(?:[Ff]{{4}}:(?:0{{1,4}}:)?)?{_IPV4}",  # ::1.2.3.4, ::ffff:1.2.3.4, ::ffff:0:1.2.3.4
    ]
)
_YEAR = "[1-9][0-9]{3}"
_LEAP_YEAR = "(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
)
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?"

_DATE_TIME = rf"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)[ T]{_TIME}"

# Named regular expressions the rules refer to as "{<name>}" (one spelling for every rule, the
# pipeline's typing and the API's schema). Written for Python's re (GX, the API) and RE2 (DuckDB) alike:
# no look-arounds, no back-references.
PATTERNS = {
    # a dotted-quad IPv4, or an IPv6 address (compressed or not, optionally ending in an IPv4)
    "ip_address_pattern": rf"^(?:{_IPV4}|{_IPV6})$",
    # YYYY-MM-DD HH:MM:SS (or with a T), optional fraction up to microseconds, no zone; only real days
    "date_time_pattern": rf"^{_DATE_TIME}$",
    # the same or blank (spaces only): a PreviousTransactionDate cell the pipeline trims to empty, none
    "previous_date_time_pattern": rf"^(?: *|{_DATE_TIME})$",
    # the same, optionally with a zone: Z, +HH:MM or +HHMM (a log's timestamp; none is UTC)
    "timestamp_pattern": rf"^{_DATE_TIME}(?:Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?$",
}
# what each pattern means, for an error message a person reads instead of the regex
PATTERN_MEANINGS = {
    PATTERNS["ip_address_pattern"]: "an IPv4 (a.b.c.d) or IPv6 address",
    PATTERNS["date_time_pattern"]: "a real date and time, YYYY-MM-DD HH:MM:SS",
    PATTERNS["previous_date_time_pattern"]: "a real date and time, YYYY-MM-DD HH:MM:SS, or blank",
    PATTERNS["timestamp_pattern"]: "a real date and time, YYYY-MM-DDTHH:MM:SS[.ffffff][Z|+HH:MM]",
}
LENGTH_SUFFIX = "_length"  # a typed column "<name>_length" holds the length of text <name>, in characters


@dataclass(frozen=True)
class Check:
    """One expectation on one frame, under the rule that declared it."""

    rule: str
    label: str  # the rule name, plus the column for multi-column rules: "required_fields_present:message"
    frame: str  # "events" or "metrics"
    expectation: str
    kwargs: dict[str, Any]


def load_rules(path: Path = LOG_RULES) -> list[dict]:
    rules = yaml.safe_load(path.read_text())["rules"]
    names = [r["name"] for r in rules]
    if len(names) != len(set(names)):
        raise ValueError(f"{path}: rule names must be unique")
    return rules


class Unfilled(str):
    """A placeholder left as it is: its value is known only when a partition is validated."""


def _fill(value: Any, params: dict[str, Any] | None) -> Any:
    """Replace a whole-string "{placeholder}" with its value (which may be a list or a timestamp)."""
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        key = value[1:-1]
        if key in PATTERNS:
            return PATTERNS[key]
        if params is None:
            return Unfilled(value)
        if key not in params:
            raise KeyError(f"rule placeholder {value} is not one of {sorted([*params, *PATTERNS])}")
        return params[key]
    return value


def build_checks(
    rules: list[dict], params: dict[str, Any] | None, default_frame: str = "events"
) -> list[Check]:
    """The checks of ``rules``; a rule without ``frame`` runs on ``default_frame``. ``params`` None
    leaves the per-run placeholders (partition bounds, configured services) as ``Unfilled``."""
    checks = []
    for rule in rules:
        frame = rule.get("frame", default_frame)
        if "checks" in rule:
            for spec in rule["checks"]:
                kwargs = {k: _fill(v, params) for k, v in spec.items() if k != "expectation"}
                checks.append(Check(rule["name"], rule["name"], frame, spec["expectation"], kwargs))
            continue
        kwargs = {
            k: _fill(v, params)
            for k, v in rule.items()
            if k not in {"name", "description", "expectation", "columns", "frame"}
        }
        targets = rule.get("columns") or [kwargs.pop("column")]
        for column in targets:
            label = rule["name"] if len(targets) == 1 else f"{rule['name']}:{column}"
            checks.append(
                Check(rule["name"], label, frame, rule["expectation"], {"column": column, **kwargs})
            )
    return checks


def _bounds(kw: dict[str, Any]) -> dict[str, Any]:
    """An ``expect_column_values_to_be_between``'s bounds as pydantic's ge/gt/le/lt."""
    out = {}
    if kw.get("min_value") is not None:
        out["gt" if kw.get("strict_min") else "ge"] = kw["min_value"]
    if kw.get("max_value") is not None:
        out["lt" if kw.get("strict_max") else "le"] = kw["max_value"]
    return out


def field_constraints(checks: list[Check], column: str, **constants: float | None) -> dict[str, Any]:
    """pydantic ``Field`` arguments that hold exactly where the checks on typed ``column`` (and on its
    length, ``<column>_length``) pass. ``constants`` are the values of other columns a column-pair check
    compares with (a metric's ``lower`` and ``upper``; None: unbounded). Presence (``*_be_null``) is the model's
    required/optional; a check whose parameters are filled per run is the pipeline's alone; any other
    expectation on the column raises: the API cannot have a rule silently missing."""
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in out and out[key] != value:
            raise ValueError(f"{column}: two rules give {key} = {out[key]!r} and {value!r}")
        out[key] = value

    for check in checks:
        kw = check.kwargs
        if any(isinstance(v, Unfilled) for v in kw.values()):
            continue
        if kw.get("column") == column:
            if check.expectation in (
                "expect_column_values_to_not_be_null",
                "expect_column_values_to_be_null",
            ):
                continue
            if check.expectation == "expect_column_values_to_be_between":
                for key, value in _bounds(kw).items():
                    put(key, value)
            elif check.expectation == "expect_column_values_to_match_regex":
                put("pattern", kw["regex"])
            elif check.expectation == "expect_column_values_to_be_in_set":
                put("value_set", tuple(kw["value_set"]))
            else:
                raise ValueError(f"rule {check.label}: the API has no constraint for {check.expectation}")
        elif kw.get("column") == column + LENGTH_SUFFIX:
            bounds = _bounds(kw) if check.expectation == "expect_column_values_to_be_between" else None
            if not bounds or not set(bounds) <= {"ge", "le"}:
                raise ValueError(f"rule {check.label}: the API has no length constraint for it")
            for key, value in bounds.items():
                put({"ge": "min_length", "le": "max_length"}[key], value)
        elif check.expectation == "expect_column_pair_values_a_to_be_greater_than_b" and column in (
            kw["column_A"],
            kw["column_B"],
        ):
            inclusive = kw.get("or_equal", False)
            if kw["column_A"] == column:  # column > B: a lower bound
                key, bound = ("ge" if inclusive else "gt"), constants[kw["column_B"]]
            else:  # A > column: an upper bound
                key, bound = ("le" if inclusive else "lt"), constants[kw["column_A"]]
            if bound is not None:  # None: unbounded
                put(key, bound)
    return out
