"""The outcome of the declared rules (``log_rules.yaml``, ``transaction_rules.yaml``, read by
``declared.py``) on a typed partition, without Great Expectations: which rows break each rule
(``failing_rows``, vectorised), and the rows to quarantine with the rules they broke.

Great Expectations reports each rule (unexpected count, share, examples) in
``bankanom_pipeline.defs.validation.gx``, which cross-checks its counts against ``failing_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from bankanom_pipeline.validation.declared import Check, build_checks, load_rules

# the declaration (Check, build_checks, load_rules) lives in declared.py; named here too because the
# callers read the rules and evaluate them through this module
__all__ = ["Check", "Outcome", "build_checks", "load_rules"]


@dataclass
class Outcome:
    check: Check
    unexpected_count: int
    unexpected_percent: float
    examples: list[Any]
    failing_rows: np.ndarray = field(repr=False)


def failing_rows(frame: pd.DataFrame, check: Check) -> np.ndarray:
    """The ``idx`` of the rows that break ``check`` (GX semantics: null values pass value checks)."""
    kw = check.kwargs
    if check.expectation == "expect_column_pair_values_a_to_be_greater_than_b":
        a, b = frame[kw["column_A"]], frame[kw["column_B"]]
        ok = (a >= b) if kw.get("or_equal") else (a > b)
        bad = ~ok & a.notna() & b.notna()
        return frame.loc[bad.to_numpy(dtype=bool), "idx"].to_numpy(dtype=np.int64)
    column = frame[kw["column"]]
    present = column.notna().to_numpy(dtype=bool)
    if check.expectation == "expect_column_values_to_not_be_null":
        bad = ~present
    elif check.expectation == "expect_column_values_to_be_null":
        bad = present
    elif check.expectation == "expect_column_values_to_be_in_set":
        bad = present & ~column.isin(kw["value_set"]).to_numpy(dtype=bool)
    elif check.expectation == "expect_column_values_to_match_regex":
        matches = column.astype("string").str.contains(kw["regex"], regex=True).fillna(True)
        bad = present & ~matches.to_numpy(dtype=bool)
    elif check.expectation == "expect_column_values_to_be_between":
        bad = np.zeros(len(frame), dtype=bool)
        values = column
        if kw.get("min_value") is not None:
            low = values <= kw["min_value"] if kw.get("strict_min") else values < kw["min_value"]
            bad |= low.fillna(False).to_numpy(dtype=bool)
        if kw.get("max_value") is not None:
            high = values >= kw["max_value"] if kw.get("strict_max") else values > kw["max_value"]
            bad |= high.fillna(False).to_numpy(dtype=bool)
        bad &= present
    else:
        raise ValueError(f"rule {check.label}: {check.expectation} has no row evaluator; add one here")
    return frame.loc[bad, "idx"].to_numpy(dtype=np.int64)


COLUMN_ARGS = ("column", "column_A", "column_B")


def columns_read(checks: list[Check]) -> set[str]:
    return {c.kwargs[arg] for c in checks for arg in COLUMN_ARGS if arg in c.kwargs}


def presence_checked(checks: list[Check]) -> set[str]:
    """The columns ``checks`` only ever test for being non-null: what GX needs of them is that fact."""
    return {
        name
        for name in columns_read(checks)
        if all(
            c.expectation == "expect_column_values_to_not_be_null"
            for c in checks
            if name in (c.kwargs.get(arg) for arg in COLUMN_ARGS)
        )
    }


def broken_rows(outcomes: list[Outcome]) -> pl.DataFrame:
    """``idx`` -> ``rules``: the sorted labels of every check the row failed."""
    failing = pl.DataFrame(
        {
            "idx": pl.concat([pl.Series(o.failing_rows, dtype=pl.Int64) for o in outcomes])
            if outcomes
            else pl.Series([], dtype=pl.Int64),
            "rule": [o.check.label for o in outcomes for _ in range(len(o.failing_rows))],
        },
        schema={"idx": pl.Int64, "rule": pl.String},
    )
    return failing.group_by("idx").agg(pl.col("rule").unique().sort().alias("rules"))


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value
