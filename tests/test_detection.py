"""The main job end to end, as a user runs it: `bankanom demo` in a subprocess on a small pair of
generated days (training day, held-out day with another seed), then the warehouse it leaves behind."""

import json

from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.registry import Registry
from tests.conftest import DEMO_DAY

DAY = DEMO_DAY


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
    # the ensemble rule as documented: w * IF + (1 - w) * LOF against thresholds.ensemble
    thresholds = default_detection_config().thresholds
    w, cut = thresholds.ensemble_if_weight, thresholds.ensemble
    wrong = con.execute(
        """SELECT count(*) FROM scored_events WHERE partition_date = ?
           AND (abs(ensemble_score - (? * if_score + (1 - ?) * lof_score)) > 1e-9 OR is_anomaly <> (ensemble_score >= ?))""",
        [DAY, w, w, cut],
    ).fetchone()[0]
    assert wrong == 0
    # trained on the day before, never on the held-out day
    window = Registry(data / "models").manifest(current["isolation_forest"])["training_window"]
    assert window == {"start": "2026-01-05", "end": "2026-01-05"}


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


def test_readme_incident_query_runs(demo):
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("**Incidents.**", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    _, con, _ = demo
    (summary,) = con.execute(block.strip().rstrip(";")).fetchone()
    assert "BANK-" in summary
