"""The log-incident re-ranker (issue 26): its features, the simulated analyst's truth, the
``incident_reranker`` asset with too few and with enough labels (posted through the feedback store's own
function, as the API does), the ``incident_reranks`` table and its publication in the API snapshot."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from bankanom_pipeline import feedback
from bankanom_pipeline.defs.detection.assets import incident_reranker, incident_reranks
from bankanom_pipeline.defs.resources import RegistryResource, WarehouseResource
from bankanom_pipeline.detection.incidents import INCIDENT_COLUMNS, INCIDENT_EVENTS_SCHEMA
from bankanom_pipeline.detection.registry import Registry
from bankanom_pipeline.reranking import core, incident_features
from bankanom_pipeline.reranking.incident_reranker import MAX_CUT, NAME, choose_cut, labelled
from bankanom_pipeline.reranking.incident_truth import incident_truth
from bankanom_pipeline.serving.snapshot import SnapshotPublisher
from bankanom_pipeline.warehouse.frames import replace_partition

DAY = "2026-06-02"
T0 = dt.datetime(2026, 6, 2, 8, tzinfo=dt.UTC)


def _incidents(
    n: int, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, set[str]]:
    """``n`` incidents of day DAY (incidents, incident_events, scored_events, log_labels) and the ids of
    the true ones. The true ones span several events and users; the false ones are lone lines on a
    service. Both have max_score in the same range, so max_score alone ranks them at random."""
    rng = np.random.default_rng(seed)
    true = rng.random(n) < 0.6
    date = dt.date.fromisoformat(DAY)
    rows, members, events, labels = [], [], [], []
    for i in range(n):
        size = int(rng.integers(3, 9)) if true[i] else 1
        start = T0 + dt.timedelta(minutes=3 * i)
        ids = [f"e{i}-{j}" for j in range(size)]
        scores = rng.uniform(0.93, 0.99, size)
        rows.append(
            {
                "partition_date": date,
                "incident_id": f"INC-{i:04d}",
                "start_ts": start,
                "end_ts": start + dt.timedelta(seconds=20 * (size - 1)),
                "event_count": size,
                "services": ["auth-service", "api-gateway"] if true[i] else ["monitoring-agent"],
                "users": [],
                "ips": [],
                "user_count": 2 if true[i] else 0,
                "ip_count": 1,
                "max_score": float(scores.max()),
                "mean_score": float(scores.mean()),
                "severity": "High" if true[i] else "Low",
                "reported": True,
                "origin_service": "auth-service",
                "origin_entity": "user u1" if true[i] else "service monitoring-agent",
                "scenario_id": "BANK-004" if true[i] else "BANK-013",
                "scenario_name": "x",
                "scenario_confidence": 0.9 if true[i] else 0.4,
                "scenario_alternatives": json.dumps([{"id": "BANK-001", "name": "y", "confidence": 0.05}]),
                "top_features": json.dumps(
                    [{"feature": "user_failed_logins_10m" if true[i] else "cpu_percent", "deviation": 4.0}]
                ),
                "summary": "",
                "status": "open",
            }
        )
        for j, event in enumerate(ids):
            members.append((date, f"INC-{i:04d}", event))
            events.append(
                (date, event, start, "auth-service", float(scores[j]), float(scores[j]) - 0.1, True, False)
            )
            # a false incident's line is a normal event; a true one holds one anomalous line at least
            labels.append((date, event, bool(true[i] and j == 0)))
    incidents = pl.DataFrame(rows).select(INCIDENT_COLUMNS)
    incident_events = pl.DataFrame(members, schema=INCIDENT_EVENTS_SCHEMA, orient="row")
    scored = pl.DataFrame(
        events,
        schema={
            "partition_date": pl.Date,
            "event_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "source_service": pl.String,
            "if_score": pl.Float64,
            "lof_score": pl.Float64,
            "if_flag": pl.Boolean,
            "lof_flag": pl.Boolean,
        },
        orient="row",
    ).with_columns(
        # the rest of scored_events' columns, which the API snapshot copies
        user_id=pl.lit(None, pl.String),
        ip_address=pl.lit(None, pl.String),
        correlation_id=pl.lit(None, pl.String),
        ensemble_score=pl.col("if_score"),
        is_anomaly=pl.lit(True),
        if_version=pl.lit("if-1"),
        lof_version=pl.lit("lof-1"),
    )
    log_labels = pl.DataFrame(
        labels,
        schema={"partition_date": pl.Date, "event_id": pl.String, "is_anomaly": pl.Boolean},
        orient="row",
    )
    truth = {f"INC-{i:04d}" for i in range(n) if true[i]}
    return incidents, incident_events, scored, log_labels, truth


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A warehouse holding one day of incidents, an empty feedback file and a models root."""
    incidents, members, scored, labels, truth = _incidents(160)
    database = tmp_path / "w.duckdb"
    con = duckdb.connect(str(database))
    for table, frame in (
        ("incidents", incidents),
        ("incident_events", members),
        ("scored_events", scored),
        ("log_labels", labels),
    ):
        replace_partition(con, table, frame, DAY)
    con.close()
    monkeypatch.setenv("BANKANOM_FEEDBACK_DB", str(tmp_path / "feedback.duckdb"))
    resources = {
        "warehouse": WarehouseResource(database=str(database), landing_dir=str(tmp_path)),
        "registry": RegistryResource(models_dir=str(tmp_path / "models")),
    }
    return tmp_path, database, resources, incidents, truth


def _label(path, ids, truth, selection="top"):
    for incident in ids:
        label = "true_positive" if incident in truth else "false_positive"
        feedback.record(
            path,
            "incident",
            incident,
            label,
            "",
            "ana",
            dt.date.fromisoformat(DAY),
            key_id="k1",
            selection=selection,
        )


def test_features_are_computed_from_the_incident_and_its_events(world):
    _, database, _, incidents, _ = world
    con = duckdb.connect(str(database), read_only=True)
    features = incident_features.read(con, [DAY])
    con.close()
    assert features.height == incidents.height
    assert features.columns == [
        "incident_id",
        "partition_date",
        "max_score",
        *incident_features.feature_names(),
    ]
    row = features.filter(pl.col("incident_id") == "INC-0000").to_dicts()[0]
    source = incidents.filter(pl.col("incident_id") == "INC-0000").to_dicts()[0]
    assert row["log_event_count"] == pytest.approx(np.log1p(source["event_count"]))
    assert row["scenario_margin"] == pytest.approx(source["scenario_confidence"] - 0.05)
    assert row[f"scenario_{source['scenario_id']}"] == 1.0
    assert sum(row[f"scenario_{s}"] for s in incident_features.scenario_ids()) == 1.0
    assert row["severity_level"] == {"Low": 0, "Medium": 1, "High": 2, "Critical": 3}[source["severity"]]
    assert row["if_flag_share"] == 1.0 and row["lof_flag_share"] == 0.0
    # the top feature's family, one-hot, and each family's share of the list
    family = incident_features.family(json.loads(source["top_features"])[0]["feature"])
    assert row[f"top_family_{family}"] == 1.0 and row[f"top_share_{family}"] == 1.0
    assert incident_features.family("user_failed_logins_10m") == "user"
    assert incident_features.family("cpu_percent") == "metric"
    assert incident_features.family("hour_sin") == "time"
    # never a label: no column of log_labels is an input
    assert not {"is_anomaly", "anomaly_id", "instance_id"} & set(features.columns)
    with pytest.raises(ValueError, match="does not compute: made_up"):
        incident_features.matrix(features, ["made_up"])
    with pytest.raises(ValueError, match="top_features"):
        incident_features.from_tables(incidents.drop("top_features"), pl.DataFrame())


def test_truth_is_the_evaluations_rule(world):
    _, database, _, _, truth = world
    con = duckdb.connect(str(database), read_only=True)
    got = incident_truth(con, ["INC-0000", "INC-0001", "INC-0002", "INC-0003"])
    assert got == {i: i in truth for i in ["INC-0000", "INC-0001", "INC-0002", "INC-0003"]}
    assert set(got.values()) == {True, False}
    with pytest.raises(KeyError, match="INC-nope"):
        incident_truth(con, ["INC-nope"])
    con.close()


def test_cut_is_the_lowest_held_out_true_positive_at_most_max_cut():
    assert choose_cut(np.array([0.05, 0.15, 0.5, 0.9]), np.array([0, 1, 0, 1])) == 0.15
    assert choose_cut(np.array([0.1, 0.3, 0.5, 0.9]), np.array([0, 1, 0, 1])) == MAX_CUT
    # no false positive below the lowest true positive: nothing to gain, nothing suppressed
    assert choose_cut(np.array([0.6, 0.3, 0.5]), np.array([0, 1, 1])) == 0.0
    assert choose_cut(np.array([0.6]), np.array([0])) == 0.0


def test_too_few_labels_materializes_and_says_so(world):
    tmp_path, _, resources, incidents, truth = world
    ids = incidents["incident_id"].to_list()[:30]
    _label(tmp_path / "feedback.duckdb", ids, truth)
    result = dg.materialize([incident_reranker], resources=resources)
    assert result.success
    metadata = result.asset_materializations_for_node("incident_reranker")[0].metadata
    assert metadata["trained"].value is False
    assert metadata["labels"].value == 30
    assert "needs at least 50 labelled items" in metadata["reason"].value
    assert (
        metadata["labels_needed"].value
        == f"{core.MIN_LABELS} labelled incidents, {core.MIN_PER_CLASS} of each class"
    )
    assert NAME not in Registry(tmp_path / "models").current()


def test_enough_labels_promote_a_reranker_whose_scores_are_published(world):
    tmp_path, database, resources, incidents, truth = world
    ids = incidents["incident_id"].to_list()
    path = tmp_path / "feedback.duckdb"
    _label(path, ids[:140], truth)
    # an analyst's unsure is not a label
    feedback.record(path, "incident", ids[150], "unsure", "", "ana", dt.date(2026, 6, 2))
    # a changed label counts as the latest: ana turns her label on ids[0] over, then back
    first = "true_positive" if ids[0] in truth else "false_positive"
    other = "false_positive" if first == "true_positive" else "true_positive"
    assert feedback.record(path, "incident", ids[0], other, "", "ana", dt.date(2026, 6, 2))["changed"]
    assert feedback.labels(feedback.read(path), "incident").filter(pl.col("target_id") == ids[0])[
        "y"
    ].item() == int(other == "true_positive")
    assert feedback.record(path, "incident", ids[0], first, "", "ana", dt.date(2026, 6, 2))["changed"]
    result = dg.materialize([incident_reranker], resources=resources)
    metadata = result.asset_materializations_for_node("incident_reranker")[0].metadata
    assert metadata["trained"].value is True and metadata["labels"].value == 140
    assert metadata["promoted"].value is True, metadata["reason"].value
    registry = Registry(tmp_path / "models")
    version = registry.current()[NAME]
    manifest = registry.manifest(version)
    assert manifest["gate"]["gain"] > core.MIN_GAIN and 0 < manifest["gate"]["cut"] <= MAX_CUT
    assert manifest["gate"]["refit"] is False  # the saved version is the model the gate measured

    result = dg.materialize([incident_reranks], partition_key=DAY, resources=resources)
    assert result.success
    con = duckdb.connect(str(database))
    reranks = pl.from_arrow(con.execute("SELECT * FROM incident_reranks ORDER BY incident_id").arrow())
    assert reranks.columns == [
        "incident_id",
        "partition_date",
        "rerank_score",
        "suppressed",
        "reranker_version",
    ]
    assert reranks.height == incidents.height and set(reranks["reranker_version"]) == {version}
    assert reranks["suppressed"].to_list() == (reranks["rerank_score"] < manifest["gate"]["cut"]).to_list()
    # the re-ranker learnt what the labels say: the suppressed incidents are mostly false ones
    suppressed = set(reranks.filter(pl.col("suppressed"))["incident_id"])
    assert suppressed and len(suppressed - truth) / len(suppressed) > 0.9

    pointer = SnapshotPublisher(tmp_path / "snapshots").publish(con, dt.date(2026, 6, 2), 1)
    con.close()
    assert pointer["rows"]["incident_reranks"] == incidents.height
    snap = duckdb.connect(str(tmp_path / "snapshots" / pointer["file"]), read_only=True)
    assert snap.execute("SELECT count(*) FROM incident_reranks WHERE suppressed").fetchone()[0] == len(
        suppressed
    )
    snap.close()


def test_labels_without_a_day_take_their_incidents(world):
    tmp_path, database, _, incidents, truth = world
    path = tmp_path / "feedback.duckdb"
    ids = incidents["incident_id"].to_list()[:60]
    for incident in ids:  # no day on these labels (the feedback file allows it)
        label = "true_positive" if incident in truth else "false_positive"
        feedback.record(path, "incident", incident, label, "", "ana", None, key_id="k1")
    # the one dated label is on an incident the warehouse no longer has: it names the day to read
    feedback.record(path, "incident", "INC-gone", "true_positive", "", "ana", dt.date.fromisoformat(DAY))
    con = duckdb.connect(str(database), read_only=True)
    try:
        data = labelled(con, feedback.read(path))
    finally:
        con.close()
    assert data.height == 60 and data["partition_date"].to_list() == [dt.date.fromisoformat(DAY)] * 60


def test_no_promoted_reranker_writes_no_rows(world):
    _, database, resources, _, _ = world
    result = dg.materialize([incident_reranks], partition_key=DAY, resources=resources)
    assert (
        result.asset_materializations_for_node("incident_reranks")[0].metadata["reranker"].value
        == "none promoted"
    )
    con = duckdb.connect(str(database), read_only=True)
    assert con.execute("SELECT count(*) FROM incident_reranks").fetchone()[0] == 0
    con.close()


@pytest.mark.parametrize("reranked", [False, True])
def test_the_snapshot_copies_the_transaction_rerankers_columns_when_scored_transactions_has_them(
    tmp_path, reranked
):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute(
        "CREATE TABLE validated_transactions AS SELECT DATE '2026-06-02' AS partition_date, 't1' AS transaction_id, "
        "'a1' AS account_id, TIMESTAMP '2026-06-02 10:00' AS ts, NULL AS extra, 'f' AS source_file, 1 AS line_no"
    )
    rerank = (
        ", 0.7::DOUBLE AS rerank_score, true AS ensemble_flag, 'r-1' AS reranker_version" if reranked else ""
    )
    con.execute(
        "CREATE TABLE scored_transactions AS SELECT DATE '2026-06-02' AS partition_date, 't1' AS transaction_id, "
        "0.1 AS if_score, 0.2 AS lof_score, 0.9 AS ensemble_score, false AS if_flag, false AS lof_flag, "
        f"true AS is_anomaly, '[]' AS top_features, 'if-1' AS if_version, 'lof-1' AS lof_version{rerank}"
    )
    pointer = SnapshotPublisher(tmp_path / "snapshots").publish(con, dt.date(2026, 6, 2), 1)
    con.close()
    snap = duckdb.connect(str(tmp_path / "snapshots" / pointer["file"]), read_only=True)
    columns = [c[0] for c in snap.execute("DESCRIBE transactions").fetchall()]
    assert ("rerank_score" in columns) is reranked and ("reranker_version" in columns) is reranked
    if reranked:
        assert snap.execute("SELECT rerank_score FROM transactions").fetchone()[0] == pytest.approx(0.7)
    snap.close()
