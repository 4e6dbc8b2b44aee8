"""The declared rules run as Great Expectations 1.x expectations on a typed partition: the rule engine
validation hands its frames to (``validation.quarantine.RuleEngine``).

GX reports each rule (unexpected count, share, examples). Which rows go to quarantine is computed from
the same declaration by ``rules.failing_rows`` (vectorised; GX's per-row index lists cost ~0.1 ms per
failing row, minutes for a badly broken partition), and the two are cross-checked: a rule whose row
count differs from GX's unexpected count stops the run, so the two evaluators cannot drift apart
silently. GX is imported lazily: it costs seconds to import.
"""

from __future__ import annotations

import gc
import importlib
import sys
import types
from functools import cache

import numpy as np
import pandas as pd

from bankanom_pipeline.validation import rules
from bankanom_pipeline.validation.rules import (
    Check,
    Outcome,
    columns_read,
    plain,
    presence_checked,
)


class _Deferred(types.ModuleType):
    """Stands in for a module in ``sys.modules`` until a name is read from it, then imports it and
    becomes it. (``importlib.util.LazyLoader`` cannot: on Python 3.11 an ``import`` of a module already
    in ``sys.modules`` reads its ``__spec__``, which makes a lazy module load at once.)"""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


# Imported by GX at its import only for expectations and charts no rule here uses (KL divergence, KS
# tests, altair charts), on the validation step's critical path. They load on first use.
_DEFERRED_BY_GX = ("scipy.stats", "altair")


@cache
def load_gx():
    """The great_expectations module (seconds to import: callers may start it early, on a thread)."""
    for name in _DEFERRED_BY_GX:
        if name not in sys.modules:
            sys.modules[name] = _Deferred(name)
    # The import builds ~0.5M objects (pydantic models deep-copying their defaults, scipy parsing its
    # docstrings): with the collector on, it ran dozens of collections over them.
    # Frozen afterwards, the later collections during a run no longer walk GX's modules each time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        import great_expectations as gx
        from great_expectations.execution_engine import pandas_execution_engine
    finally:
        if was_enabled:
            gc.enable()
    gc.freeze()
    # GX fingerprints every pandas batch under this many bytes by hashing all of its values, as a batch
    # marker nothing here reads; it skips it for larger
    # batches, which is what we ask for every batch
    pandas_execution_engine.HASH_THRESHOLD = 0
    return gx


def _expectation(gx, check: Check, position: int):
    class_name = "".join(part.title() for part in check.expectation.split("_"))
    cls = getattr(gx.expectations, class_name, None)
    if cls is None:
        raise ValueError(f"unknown Great Expectations expectation {check.expectation!r} in rule {check.rule}")
    return cls(**check.kwargs, meta={"position": position})


def run_checks(frames: dict[str, pd.DataFrame], checks: list[Check]) -> list[Outcome]:
    """Validate pandas frames with GX and attach the failing rows of each check."""
    gx = load_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("bankanom")
    outcomes = []
    for name, frame in frames.items():
        mine = [c for c in checks if c.frame == name]
        if not mine or frame.empty:
            outcomes += [Outcome(c, 0, 0.0, [], np.empty(0, dtype=np.int64)) for c in mine]
            continue
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("whole")
        # built whole, then added: suite.add_expectation re-saves the suite on every call
        expectations = [_expectation(gx, check, position) for position, check in enumerate(mine)]
        suite = context.suites.add(gx.ExpectationSuite(name=f"rules_{name}", expectations=expectations))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"rules_{name}", data=batch, suite=suite)
        )
        result = validation.run(
            batch_parameters={"dataframe": _gx_view(frame, mine)}, result_format="SUMMARY"
        )
        # GX does not keep the suite's order in its results: match them by the position put in meta
        by_position = {item.expectation_config.meta["position"]: item for item in result.results}
        outcomes += [_outcome(check, by_position[i], frame) for i, check in enumerate(mine)]
    return outcomes


def _gx_view(frame: pd.DataFrame, checks: list[Check]) -> pd.DataFrame:
    """Only the columns the checks read, and those only ever checked for being non-null as that fact
    (present or not): GX's counts, shares and examples (the nulls themselves) are the same. GX would
    otherwise fingerprint a batch by hashing every value (seconds for a million ids and messages); that
    is now off (``load_gx``), and this keeps the batch small should a GX release bring it back."""
    used = columns_read(checks)
    presence_only = presence_checked(checks)
    view = {}
    for name in frame.columns:
        if name not in used:
            continue
        column = frame[name]
        # (Arrow-backed columns only: their nulls are pd.NA, as in the stand-in; a datetime's are NaT)
        if name in presence_only and isinstance(column.dtype, pd.ArrowDtype):
            missing = column.isna().to_numpy(dtype=bool)
            column = pd.Series(pd.arrays.BooleanArray(~missing, missing), index=frame.index, name=name)
        view[name] = column
    return pd.DataFrame(view, index=frame.index)


def _outcome(check: Check, item, frame: pd.DataFrame) -> Outcome:
    if item.exception_info and item.exception_info.get("raised_exception"):
        raise RuntimeError(f"rule {check.label} could not run: {item.exception_info['exception_message']}")
    details = item.result
    rows = rules.failing_rows(frame, check)
    reported = int(details.get("unexpected_count") or 0)
    if len(rows) != reported:
        raise RuntimeError(
            f"rule {check.label}: {len(rows)} failing rows found but Great Expectations reports {reported}"
        )
    examples = details.get("partial_unexpected_list") or []
    if check.frame == "metrics" and len(rows):
        failing = frame[frame["idx"].isin(rows[:5])]
        examples = failing[["metric", "value"]].to_dict("records")
    return Outcome(
        check=check,
        unexpected_count=reported,
        unexpected_percent=float(details.get("unexpected_percent") or 0.0),
        examples=[plain(v) for v in examples[:5]],
        failing_rows=rows,
    )


class GreatExpectations:
    """The rule engine of validation (``quarantine.RuleEngine``): GX, imported on first use."""

    def load(self) -> None:
        load_gx()

    def run(self, frames: dict[str, pd.DataFrame], checks: list[Check]) -> list[Outcome]:
        return run_checks(frames, checks)


GX = GreatExpectations()
