"""defs/results.evaluation_result: what the log and transaction evaluation assets report, with and without
ground truth for the day."""

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.defs.results import evaluation_result
from bankanom_pipeline.detection.day_evaluation import DayEvaluation

DAY = "2026-01-05"
ANALYST = {"analyst_precision": 0.5, "analyst_labelled": 2}


@pytest.fixture
def warehouse(tmp_path):
    return WarehouseResource(
        storage="embedded", database=str(tmp_path / "warehouse.duckdb"), landing_dir=str(tmp_path / "landing")
    )


def _never_called(metrics):
    raise AssertionError("extra metadata asked for on a day without metrics")


@pytest.mark.parametrize("labels", ["log_labels", "transaction_labels"])
def test_a_day_without_ground_truth_reports_the_analysts_figures_and_says_why(warehouse, labels):
    context = dg.build_asset_context(partition_key=DAY)
    result = evaluation_result(
        context,
        warehouse,
        DayEvaluation(analyst=ANALYST),
        labels=labels,
        curves_table="curves",
        breakdown="scenarios",
        extra=_never_called,
    )
    metadata = {k: v.value if hasattr(v, "value") else v for k, v in result.metadata.items()}
    assert metadata == {
        "evaluated": False,
        "reason": f"no ground truth in {labels}",
        "analyst_precision": 0.5,
        "analyst_labelled": 2,
    }


def test_a_labelled_day_reports_metrics_breakdown_curves_and_the_extra_figures(warehouse):
    rng = np.random.default_rng(0)
    truth = rng.random(200) < 0.2
    evaluation = DayEvaluation(
        analyst=ANALYST,
        evaluated=True,
        metrics=pl.DataFrame({"model": ["ensemble"], "metric": ["precision"], "value": [0.9]}),
        breakdown=pl.DataFrame({"pattern": ["card_testing"], "recall": [1.0]}),
        truth=truth,
        curves={"ensemble": truth + rng.random(200)},
    )
    result = evaluation_result(
        dg.build_asset_context(partition_key=DAY),
        warehouse,
        evaluation,
        labels="transaction_labels",
        curves_table="transaction_evaluation_curves",
        breakdown="patterns",
        extra=lambda metrics: {"precision_synthetic": metrics["value"][0]},
    )
    metadata = result.metadata
    assert {"dagster/row_count", "event_metrics", "patterns", "pr_curve", "precision_synthetic"} <= set(
        metadata
    )
    assert "card_testing" in metadata["patterns"].value
    assert metadata["pr_curve"].value.startswith("![PR curves](data:image/png;base64,")
    assert metadata["analyst_precision"] == 0.5
    assert metadata["precision_synthetic"] == 0.9
    with duckdb.connect(warehouse.database, read_only=True) as con:
        points = con.execute(
            "SELECT DISTINCT partition_date::VARCHAR, model FROM transaction_evaluation_curves"
        ).fetchall()
    assert points == [(DAY, "ensemble")]
