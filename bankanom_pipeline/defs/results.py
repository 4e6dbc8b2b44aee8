"""Dagster metadata and check results that logs and transactions share: rejected lines, validation,
scores, evaluation."""

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import polars as pl

from bankanom_pipeline.defs.resources import RegistryResource, WarehouseResource
from bankanom_pipeline.detection.day_evaluation import write_curves
from bankanom_pipeline.detection.evaluation import markdown_table, metrics_wide, pr_curve_png
from bankanom_pipeline.detection.partition_scoring import NothingToScore, score_partition
from bankanom_pipeline.detection.sources import Source

if TYPE_CHECKING:
    from bankanom_pipeline.validation.quarantine import ValidationCounts
    from bankanom_pipeline.validation.rules import Outcome


def counts_reconciled(counts) -> dg.AssetCheckResult:
    """Every line read was loaded or rejected (``counts``: a raw loader's lines_read, loaded, rejected)."""
    return dg.AssetCheckResult(
        check_name="counts_reconcile",
        passed=counts.lines_read == counts.loaded + counts.rejected,
        metadata={"lines_read": counts.lines_read, "loaded": counts.loaded, "rejected": counts.rejected},
    )


def rejected_metadata(con, table: str, day: str, by_reason: dict[str, int]) -> dict:
    """Why lines of a day were rejected, and the first few of them, as Markdown tables (``table``: a
    rejects table with source_file, line_no, raw_text, reason)."""
    examples = con.execute(
        f"SELECT source_file, line_no, reason, left(raw_text, 120) FROM {table} "
        "WHERE partition_date = ? ORDER BY source_file, line_no LIMIT 5",
        [day],
    ).fetchall()
    reasons_md = "\n".join(f"| {r} | {n} |" for r, n in by_reason.items()) or "| - | 0 |"
    examples_md = "\n".join(f"| {f} | {n} | {r} | `{t}` |" for f, n, r, t in examples) or "| - | - | - | - |"
    return {
        "rejected_by_reason": dg.MetadataValue.md(f"| reason | lines |\n|---|---|\n{reasons_md}"),
        "rejected_examples": dg.MetadataValue.md(
            f"| file | line | reason | text |\n|---|---|---|---|\n{examples_md}"
        ),
    }


class ValidationConfig(dg.Config):
    max_quarantine_share: float = 0.05  # above this, downstream work stops: the input is suspect


def validation_checks(asset: str, rules_check: str) -> list[dg.AssetCheckSpec]:
    """The checks every validated table carries (logs and transactions alike)."""
    return [
        dg.AssetCheckSpec(
            "counts_reconcile",
            asset=asset,
            blocking=True,
            description="raw = validated + quarantined + duplicates",
        ),
        dg.AssetCheckSpec(
            "not_empty", asset=asset, blocking=True, description="the partition has validated rows"
        ),
        dg.AssetCheckSpec(
            "quarantine_share",
            asset=asset,
            blocking=True,
            description="quarantined share of raw rows at most max_quarantine_share",
        ),
        dg.AssetCheckSpec(
            rules_check,
            asset=asset,
            description="Great Expectations results per rule (warns on any failing row)",
        ),
    ]


def validation_result(
    counts: "ValidationCounts", outcomes: "list[Outcome]", max_quarantine_share: float, rules_check: str
) -> dg.MaterializeResult:
    """Metadata (reconciled counts, GX results per rule) and the results of ``validation_checks``."""
    share = counts.quarantined / counts.raw if counts.raw else 0.0
    rows = "\n".join(
        f"| {o.check.label} | `{o.check.expectation}` | {o.unexpected_count} | {o.unexpected_percent:.3f} "
        f"| {', '.join(map(str, o.examples))[:120]} |"
        for o in outcomes
    )
    gx_table = dg.MetadataValue.md(
        f"| rule | expectation | unexpected | % | examples |\n|---|---|---|---|---|\n{rows}"
    )
    reconcile = {
        "raw": counts.raw,
        "validated": counts.validated,
        "quarantined": counts.quarantined,
        "duplicates": counts.duplicates,
    }
    return dg.MaterializeResult(
        metadata={
            **reconcile,
            "dagster/row_count": counts.validated,
            "quarantine_share": share,
            "quarantined_by_rule": dg.MetadataValue.json(counts.quarantined_by_rule),
            rules_check: gx_table,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="counts_reconcile",
                passed=counts.raw == counts.validated + counts.quarantined + counts.duplicates,
                metadata=reconcile,
            ),
            dg.AssetCheckResult(
                check_name="not_empty", passed=counts.validated > 0, metadata={"validated": counts.validated}
            ),
            dg.AssetCheckResult(
                check_name="quarantine_share",
                passed=share <= max_quarantine_share,
                metadata={"quarantine_share": share, "max_quarantine_share": max_quarantine_share},
            ),
            dg.AssetCheckResult(
                check_name=rules_check,
                passed=all(o.unexpected_count == 0 for o in outcomes),
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "results": gx_table,
                    "failing_rules": sum(o.unexpected_count > 0 for o in outcomes),
                },
            ),
        ],
    )


def scored_result(
    warehouse: WarehouseResource,
    registry: RegistryResource,
    source: Source,
    day: str,
    check_name: str,
    flagged_key: str,
) -> dg.MaterializeResult:
    """Score ``day`` of ``source`` with its promoted models (``partition_scoring``), and check one scored
    row per feature row."""
    detectors = registry.registry(source).load_current()
    with warehouse.connection() as con:
        try:
            scored = score_partition(con, source, day, detectors)
        except NothingToScore as error:
            raise dg.Failure(str(error)) from None
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": scored.rows,
            flagged_key: scored.flagged,
            "anomalous_share": scored.flagged / scored.rows,
            "if_flagged": scored.if_flagged,
            "lof_flagged": scored.lof_flagged,
            "if_version": scored.if_version,
            "lof_version": scored.lof_version,
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=check_name,
                passed=scored.stored == scored.features_rows,
                metadata={"features_rows": scored.features_rows, "scored_rows": scored.stored},
            )
        ],
    )


def first_finite(values: pl.Series) -> float | None:
    value = float(values[0]) if len(values) else float("nan")
    return None if np.isnan(value) else value


def reranker_result(context: dg.AssetExecutionContext, outcome, **extra) -> dg.MaterializeResult:
    """A re-ranker asset's metadata, transactions and incidents alike: the label counts, then the new
    version's gate, or why none was trained (too few labels is not a failure: nothing changes)."""
    counts = {
        "labels": outcome.labels,
        "labels_matched": outcome.matched,
        "true_positives": outcome.positives,
        "false_positives": outcome.negatives,
        "labels_needed": outcome.needed,
    }
    if outcome.refused:
        context.log.warning(outcome.refused)
        return dg.MaterializeResult(metadata={**counts, "trained": False, "reason": outcome.refused})
    context.log.info(f"{outcome.version}: {outcome.gate['reason']}")
    return dg.MaterializeResult(
        metadata={
            **counts,
            "trained": True,
            "version": outcome.version,
            "promoted": outcome.promoted,
            "reason": outcome.gate["reason"],
            "gain": first_finite(pl.Series([outcome.gate["gain"]], dtype=pl.Float64)),
            "gate": dg.MetadataValue.json(outcome.gate),
            **extra,
        }
    )


def analyst_metadata(analyst: dict[str, float]) -> dict:
    precision = analyst["analyst_precision"]
    return {
        "analyst_precision": None if np.isnan(precision) else float(precision),
        **{k: int(v) for k, v in analyst.items() if k != "analyst_precision"},
    }


def pr_curve_markdown(png: bytes) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![PR curves](data:image/png;base64,{base64.b64encode(png).decode()})")


def evaluation_result(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    result,
    *,
    labels: str,
    curves_table: str,
    breakdown: str,
    extra: Callable[[pl.DataFrame], dict] = lambda metrics: {},
) -> dg.MaterializeResult:
    """What an evaluation asset reports, logs and transactions alike (``result``: a day_evaluation
    result). A day without ground truth in ``labels`` (real traffic) reports the analysts' figures only;
    otherwise the metrics per model, the per-scenario or per-pattern ``breakdown``, the PR curves (stored
    in ``curves_table`` too) and ``extra(metrics)``, called only when there are metrics."""
    day = context.partition_key
    if not result.evaluated:
        context.log.warning(f"no ground truth for {day} in {labels}: only analyst feedback evaluated")
        return dg.MaterializeResult(
            metadata={
                "evaluated": False,
                "reason": f"no ground truth in {labels}",
                **analyst_metadata(result.analyst),
            }
        )
    png = pr_curve_png(result.truth, result.curves)
    with warehouse.connection() as con:
        write_curves(con, curves_table, result, day)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.metrics.height,
            "event_metrics": dg.MetadataValue.md(markdown_table(metrics_wide(result.metrics))),
            breakdown: dg.MetadataValue.md(markdown_table(result.breakdown)),
            "pr_curve": pr_curve_markdown(png),
            **extra(result.metrics),
            **analyst_metadata(result.analyst),
        }
    )
