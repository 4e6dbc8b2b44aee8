"""The main job end to end, as a user runs it: `bankanom demo` in a subprocess on a small pair of
generated days (training day, held-out day with another seed), then the warehouse it leaves behind."""

import json

import numpy as np
import pytest

from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.models import ensemble
from bankanom_pipeline.detection.registry import Registry
from tests.demo_world import DEMO_DAY

DAY = DEMO_DAY


def test_lof_can_only_lower_the_forest_cutoff_down_to_the_floor():
    t = default_detection_config().thresholds
    cut, floor, agree = t.ensemble, t.ensemble_lof_floor, t.ensemble_lof
    assert floor < cut < t.isolation_forest
    band = (cut + floor) / 2
    if_scores = np.array([cut, 0.999, band, band, floor, floor - 1e-6, 0.2])
    lof_scores = np.array([0.0, 0.0, agree, agree - 1e-6, agree, 1.0, 1.0])
    flagged = ensemble(if_scores, lof_scores, t) >= cut
    # IF alone from the cut; in the band only with LOF's agreement; below the floor never, whatever LOF says
    assert flagged.tolist() == [True, True, True, False, True, False, False]
    # the score never drops below IF's and stays a 0..1 score
    combined = ensemble(if_scores, lof_scores, t)
    assert (combined >= if_scores).all() and combined.max() <= 1.0


@pytest.mark.e2e
def test_demo_prints_incidents_and_evaluation(demo):
    out, _, _ = demo
    for heading in (
        "incidents on 2026-01-06 by",
        "evaluation on 2026-01-06",
        "instances per scenario",
        "incident precision",
    ):
        assert heading in out
    assert "baseline IF" in out and "ensemble" in out


@pytest.mark.e2e
def test_demo_days_differ_in_traffic_but_share_the_customers(demo):
    out, con, _ = demo
    assert "(seed 7, customers of seed 7)" in out and "(seed 8, customers of seed 7)" in out
    # each customer's usual country is the same on both days, so the held-out day's lookback into the
    # training day reads the same person's history (a few customers spend one of the days abroad)
    users, same = con.execute(
        """WITH usual AS (
               SELECT partition_date, user_id, mode(split_part(geo_location, '-', 1)) AS country
               FROM validated_logs WHERE user_id LIKE 'USR-%' GROUP BY ALL
           )
           SELECT count(*), count(*) FILTER (WHERE a.country = b.country)
           FROM usual AS a JOIN usual AS b USING (user_id)
           WHERE a.partition_date < b.partition_date"""
    ).fetchone()
    assert users > 1000 and same / users > 0.9
    lines = con.execute("SELECT count(*) FROM validated_logs GROUP BY partition_date ORDER BY 1").fetchall()
    assert len(lines) == 2 and lines[0] != lines[1]


@pytest.mark.e2e
def test_every_event_scored_with_the_promoted_versions(demo):
    _, con, data = demo
    current = Registry(data / "models").current()
    features = con.execute("SELECT count(*) FROM features_events WHERE partition_date = ?", [DAY]).fetchone()[
        0
    ]
    rows, low, high, versions = con.execute(
        """SELECT count(*), min(least(if_score, lof_score, ensemble_score)),
                  max(greatest(if_score, lof_score, ensemble_score)), list(DISTINCT if_version || ' ' || lof_version)
           FROM scored_events WHERE partition_date = ?""",
        [DAY],
    ).fetchone()
    assert rows == features > 50_000
    assert low >= 0 and high <= 1
    assert versions == [f"{current['isolation_forest']} {current['local_outlier_factor']}"]
    # the ensemble rule as documented: IF >= ensemble, or IF >= ensemble_lof_floor and LOF >= ensemble_lof
    t = default_detection_config().thresholds
    wrong = con.execute(
        """SELECT count(*) FROM scored_events WHERE partition_date = ?
           AND (is_anomaly <> (if_score >= ? OR (if_score >= ? AND lof_score >= ?))
                OR is_anomaly <> (ensemble_score >= ?) OR ensemble_score < if_score)""",
        [DAY, t.ensemble, t.ensemble_lof_floor, t.ensemble_lof, t.ensemble],
    ).fetchone()[0]
    assert wrong == 0
    # trained on the day before, never on the held-out day
    window = Registry(data / "models").manifest(current["isolation_forest"])["training_window"]
    assert window == {"start": "2026-01-05", "end": "2026-01-05"}


@pytest.mark.e2e
def test_incidents_hold_the_flagged_events_with_a_root_cause(demo):
    _, con, _ = demo
    flagged = con.execute(
        "SELECT count(*) FROM scored_events WHERE partition_date = ? AND is_anomaly", [DAY]
    ).fetchone()[0]
    members = con.execute(
        """SELECT count(*), count(DISTINCT e.event_id), count(s.event_id) FILTER (WHERE s.is_anomaly)
           FROM incident_events e LEFT JOIN scored_events s USING (partition_date, event_id)
           WHERE e.partition_date = ?""",
        [DAY],
    ).fetchone()
    assert members == (flagged, flagged, flagged), "each flagged event in exactly one incident"
    rows = con.execute(
        """SELECT severity, event_count, scenario_id, scenario_confidence, top_features, summary, start_ts <= end_ts
           FROM incidents WHERE partition_date = ? AND reported""",
        [DAY],
    ).fetchall()
    assert rows
    for severity, events, scenario, confidence, top, summary, ordered in rows:
        assert severity in {"Low", "Medium", "High", "Critical"} and events >= 1 and ordered
        assert scenario.startswith("BANK-") and 0 < confidence <= 1
        features = json.loads(top)
        assert features and {"feature", "value", "normal", "deviation", "attribution"} <= set(features[0])
        assert scenario in summary
    counted = con.execute(
        """SELECT count(*) FROM incidents i WHERE partition_date = ? AND event_count <>
           (SELECT count(*) FROM incident_events e WHERE e.incident_id = i.incident_id AND e.partition_date = i.partition_date)""",
        [DAY],
    ).fetchone()[0]
    assert counted == 0


@pytest.mark.e2e
def test_evaluation_covers_models_baseline_and_every_scenario(demo):
    _, con, _ = demo
    models = {
        m
        for (m,) in con.execute(
            "SELECT DISTINCT model FROM evaluation_metrics WHERE partition_date = ?", [DAY]
        ).fetchall()
    }
    assert models == {
        "isolation_forest",
        "local_outlier_factor",
        "ensemble",
        "baseline_isolation_forest",
        "incidents",
    }
    anomalous_share = con.execute(
        "SELECT avg(is_anomaly::INT) FROM log_labels WHERE partition_date = ?", [DAY]
    ).fetchone()[0]
    pr_auc = dict(
        con.execute(
            "SELECT model, value FROM evaluation_metrics WHERE partition_date = ? AND metric = 'pr_auc'",
            [DAY],
        ).fetchall()
    )
    # far better than ranking at random (whose PR-AUC is the anomalous share)
    assert pr_auc["isolation_forest"] > 3 * anomalous_share
    scenarios = con.execute(
        "SELECT count(*), sum(instances) FROM evaluation_scenarios WHERE partition_date = ?", [DAY]
    ).fetchone()
    truth = con.execute(
        "SELECT count(DISTINCT anomaly_id), count(DISTINCT instance_id) FROM log_labels WHERE partition_date = ? AND is_anomaly",
        [DAY],
    ).fetchone()
    assert scenarios == truth


@pytest.mark.e2e
def test_readme_incident_query_runs(demo):
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "docs" / "detection.md").read_text()
    block = readme.split("**Incidents.**", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    _, con, _ = demo
    (summary,) = con.execute(block.strip().rstrip(";")).fetchone()
    assert "BANK-" in summary
