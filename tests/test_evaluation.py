"""Evaluation maths on a hand-computed example (numbers worked out by hand, not by the same code)."""

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.detection.evaluation import (
    after_cut,
    check_targets,
    evaluate,
    event_metrics,
    incident_evaluation,
    join_labels,
    markdown_table,
    metrics_wide,
    pr_curve_png,
)

LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
SCORES = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.05, 0.4, 0.6, 0.0])
FLAGS = SCORES >= 0.5


def test_event_metrics_by_hand():
    m = event_metrics(LABELS, SCORES, FLAGS)
    # flagged: 0.9, 0.8 (anomalies), 0.7, 0.6 (normal) -> tp 2, fp 2, fn 1; 7 normal events
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)  # 2tp / (2tp + fp + fn)
    assert m["fp_per_10k_normal"] == pytest.approx(20_000 / 7)
    # ROC AUC: of 3 x 7 pairs the anomaly scores higher in 7 + 7 + 4 (0.3 beats 0.2, 0.1, 0.05, 0.0)
    assert m["roc_auc"] == pytest.approx(18 / 21)
    # AP: anomalies at ranks 1, 2, 6 -> (1 + 1 + 3/6) / 3
    assert m["pr_auc"] == pytest.approx(2.5 / 3)
    assert (m["true_positives"], m["false_positives"], m["flagged"]) == (2, 2, 4)


def test_event_metrics_degenerate_cases():
    m = event_metrics(np.zeros(4, bool), np.arange(4.0), np.zeros(4, bool))
    assert math.isnan(m["precision"]) and math.isnan(m["recall"]) and math.isnan(m["roc_auc"])
    assert m["fp_per_10k_normal"] == 0.0


DAY = dt.date(2026, 1, 5)
T0 = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)


def scenario_fixture():
    # instance I1 (BANK-001): e1 then e2; I2 (BANK-002): e3 then e4; I3 (BANK-003): e5; five normal events
    rows = [
        ("e1", 1, "auth-service", "BANK-001", "I1"),
        ("e2", 2, "api-gateway", "BANK-001", "I1"),
        ("e3", 3, "fraud-detection-service", "BANK-002", "I2"),
        ("e4", 4, "auth-service", "BANK-002", "I2"),
        ("e5", 5, "transaction-service", "BANK-003", "I3"),
    ] + [(f"n{i}", 10 + i, "auth-service", None, None) for i in range(1, 6)]
    scored = pl.DataFrame(
        {
            "partition_date": [DAY] * 10,
            "event_id": [r[0] for r in rows],
            "ts": [T0 + dt.timedelta(minutes=r[1]) for r in rows],
            "source_service": [r[2] for r in rows],
            "ensemble_score": [0.5, 0.99, 0.98, 0.97, 0.96, 0.99, 0.985, 0.975, 0.1, 0.2],
            "is_anomaly": [False, True, True, True, True, True, True, True, False, False],
        }
    )
    labels = pl.DataFrame(
        {
            "partition_date": [DAY] * 10,
            "event_id": [r[0] for r in rows],
            "is_anomaly": [r[3] is not None for r in rows],
            "anomaly_id": [r[3] for r in rows],
            "instance_id": [r[4] for r in rows],
        }
    )
    # INC-1 holds e2 and a normal event; INC-2 e3; INC-5 e4 (I2 is split: tie, the earlier id counts);
    # INC-3 only normal events; INC-4 holds I3's event but is not reported
    incidents = pl.DataFrame(
        {
            "incident_id": ["INC-1", "INC-2", "INC-3", "INC-4", "INC-5"],
            "reported": [True, True, True, False, True],
            "scenario_id": ["BANK-001", "BANK-004", "BANK-013", "BANK-003", "BANK-002"],
            "origin_service": ["api-gateway", "fraud-detection-service", "auth-service", "x", "auth-service"],
        }
    )
    incident_events = pl.DataFrame(
        {
            "incident_id": ["INC-1", "INC-1", "INC-2", "INC-3", "INC-3", "INC-4", "INC-5"],
            "event_id": ["e2", "n1", "e3", "n2", "n3", "e5", "e4"],
        }
    )
    return join_labels(scored, labels), incidents, incident_events


def test_evaluate_by_hand():
    scored, incidents, incident_events = scenario_fixture()
    metrics, scenarios = evaluate(
        scored, incidents, incident_events, models={"ensemble": ("ensemble_score", "is_anomaly")}
    )
    value = {(r["model"], r["metric"]): r["value"] for r in metrics.iter_rows(named=True)}
    # flags: e2 e3 e4 e5 (tp 4) and n1 n2 n3 (fp 3); e1 missed
    assert value[("ensemble", "precision")] == pytest.approx(4 / 7)
    assert value[("ensemble", "recall")] == pytest.approx(4 / 5)
    assert value[("ensemble", "fp_per_10k_normal")] == pytest.approx(6000.0)
    # reported INC-1, 2, 3, 5; INC-3 holds no anomaly
    assert value[("incidents", "incident_precision")] == pytest.approx(0.75)
    assert value[("incidents", "incidents_reported")] == 4
    # I1 and I2 detected; I3 only in the unreported INC-4
    assert value[("incidents", "instance_recall")] == pytest.approx(2 / 3)
    assert value[("incidents", "min_scenario_recall")] == 0.0
    # I1: INC-1 says BANK-001 (right) from api-gateway (wrong: e1 on auth-service came first);
    # I2: INC-2 (tie with INC-5, earlier id) says BANK-004 (wrong) from fraud-detection-service (right)
    assert value[("incidents", "rca_scenario_top1")] == pytest.approx(0.5)
    assert value[("incidents", "rca_origin_top1")] == pytest.approx(0.5)
    assert set(metrics.columns) == {"partition_date", "model", "metric", "value"}
    assert metrics["partition_date"].unique().to_list() == [DAY]

    got = scenarios.select("scenario_id", "instances", "detected", "recall", "rca_top1").rows()
    assert got == [("BANK-001", 1, 1, 1.0, 1.0), ("BANK-002", 1, 1, 1.0, 0.0), ("BANK-003", 1, 0, 0.0, None)]

    targets = check_targets(metrics)
    assert targets.filter(pl.col("met")).height == 0  # every target missed in this toy example


def test_any_score_column_with_a_threshold():
    scored, incidents, incident_events = scenario_fixture()
    scored = scored.with_columns(pl.Series("baseline", [0.9, 0.1, 0.8, 0.2, 0.7, 0.0, 0.0, 0.0, 0.0, 0.95]))
    metrics, _ = evaluate(scored, incidents, incident_events, models={"baseline": ("baseline", 0.75)})
    value = {
        r["metric"]: r["value"] for r in metrics.filter(pl.col("model") == "baseline").iter_rows(named=True)
    }
    # >= 0.75: e1, e3 (anomalies), n5 (normal)
    assert value["precision"] == pytest.approx(2 / 3)
    assert value["recall"] == pytest.approx(2 / 5)


def test_tables_and_plot():
    table = pl.DataFrame({"model": ["a", "b"], "f1": [0.5, math.nan]})
    assert markdown_table(table) == "| model | f1 |\n|---|---|\n| a | 0.5 |\n| b | nan |"
    metrics = pl.DataFrame({"model": ["m", "m"], "metric": ["precision", "recall"], "value": [0.25, 0.75]})
    assert metrics_wide(metrics).rows() == [("m", 0.25, 0.75)]
    png = pr_curve_png(LABELS, {"a": SCORES, "b": SCORES[::-1]})
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_incident_figures_after_the_rerankers_cut():
    scored, incidents, incident_events = scenario_fixture()
    # INC-3 (normal events only) and INC-2 (I2's first event; I2 is also in INC-5) suppressed; INC-4 is
    # not reported either way; INC-1 was not scored by the re-ranker and keeps its decision
    reranks = pl.DataFrame(
        {"incident_id": ["INC-2", "INC-3", "INC-4", "INC-5"], "suppressed": [True, True, True, False]}
    )
    after = after_cut(incidents, reranks)
    assert after["reported"].to_list() == [True, False, False, False, True]
    rows, scenarios = incident_evaluation(scored, after, incident_events, DAY)
    value = dict(rows)
    assert value["incidents_reported"] == 2 and value["incident_precision"] == 1.0
    # I2 is still detected through INC-5: recall per scenario unchanged
    got = scenarios.select("scenario_id", "detected", "recall").rows()
    assert got == [("BANK-001", 1, 1.0), ("BANK-002", 1, 1.0), ("BANK-003", 0, 0.0)]
    # before the cut, the same function gives evaluate's own figures
    before, _ = incident_evaluation(scored, incidents, incident_events, DAY)
    assert dict(before)["incident_precision"] == pytest.approx(0.75)
