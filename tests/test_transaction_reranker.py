"""The transaction feedback loop end to end on a small generated delivery: the pipeline scores and
publishes it, the simulated analyst labels the items the queue asks about through the real feedback API
(in process), the transaction_reranker asset trains and gates a re-ranker, the day is re-scored, and the
API's transaction predict routes return the pipeline's rerank_score. Plus the asset's pieces on a crafted
warehouse (fast)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.detection.registry import Registry, promoted_gain
from bankanom_pipeline.reranking import core
from bankanom_pipeline.transactions import reranking

KEY = "reranker-test-key"
H = {"X-API-Key": KEY}


# -- fast: the asset's training step on a crafted warehouse ------------------------------------------------


def _crafted(con: duckdb.DuckDBPyConnection, n: int = 400, seed: int = 0) -> pl.DataFrame:
    """features_transactions and scored_transactions of one day; returns the truth per transaction (a
    feature the unsupervised score barely sees decides it)."""
    rng = np.random.default_rng(seed)
    day = dt.date(2026, 2, 1)
    names = reranking.features()
    values = rng.normal(size=(n, len(names)))
    ids = [f"TX{i:06d}" for i in range(n)]
    truth = values[:, 0] + rng.normal(0, 0.3, n) > 0.6
    features = pl.DataFrame(values, schema=names).with_columns(
        partition_date=pl.lit(day), transaction_id=pl.Series(ids)
    )
    scored = pl.DataFrame(
        {
            "partition_date": [day] * n,
            "transaction_id": ids,
            # mostly above the re-ranker's floor, as the queue's picks are
            "ensemble_score": np.clip(0.995 + 0.001 * values[:, 0] + rng.normal(0, 0.003, n), 0, 1),
            "is_anomaly": rng.random(n) < 0.2,
        }
    )
    con.register("f", features.to_arrow())
    con.register("s", scored.to_arrow())
    con.execute("CREATE TABLE features_transactions AS SELECT * FROM f")
    con.execute("CREATE TABLE scored_transactions AS SELECT * FROM s")
    return pl.DataFrame({"target_id": ids, "partition_date": [day] * n, "truth": truth})


def _labels(truth: pl.DataFrame, n: int) -> pl.DataFrame:
    """The feedback store's labels (feedback.labels' columns) of the first ``n`` transactions."""
    head = truth.head(n)
    return pl.DataFrame(
        {
            "target_id": head["target_id"],
            "partition_date": head["partition_date"],
            "y": head["truth"].cast(pl.Int8),
            "selection": (["top", "uncertain", "random"] * n)[:n],
            "analyst": ["Test Analyst"] * n,
            "created_at": [dt.datetime(2026, 2, 2)] * n,
        }
    )


def test_too_few_labels_is_an_outcome_with_the_counts(tmp_path):
    con = duckdb.connect()
    truth = _crafted(con)
    registry = Registry(tmp_path / "models" / "transactions")
    outcome = reranking.train(con, registry, _labels(truth, 30))
    assert outcome.version is None and not outcome.promoted
    assert outcome.refused.startswith("a transaction re-ranker needs at least 50 labelled items")
    assert outcome.labels == outcome.matched == 30
    assert registry.current() == {}


def test_train_gates_registers_and_promotes_on_a_pass(tmp_path):
    con = duckdb.connect()
    truth = _crafted(con)
    root = tmp_path / "models"
    registry = Registry(root / "transactions")
    labels = _labels(truth, 300)
    # a label on a transaction the warehouse never scored is left out, not an error
    stray = labels.head(1).with_columns(target_id=pl.lit("TX-unknown"))
    outcome = reranking.train(con, registry, pl.concat([labels, stray]))
    assert outcome.labels == 301 and outcome.matched == 300
    assert outcome.promoted and outcome.gate["gain"] > core.MIN_GAIN
    assert registry.current() == {reranking.NAME: outcome.version}
    assert promoted_gain(root, reranking.NAME)["gate"] == outcome.gate
    # refitted on every label after the gate: the manifest says so, for the console to say what was measured
    assert outcome.gate["refit"] is True and outcome.gate["n_train"] == 300 > outcome.gate["n_fit"]
    assert outcome.by_selection == {"top": 100, "uncertain": 100, "random": 100}
    status = dict(con.execute("SELECT version, status FROM model_registry").fetchall())
    assert status == {outcome.version: "promoted"}

    # re-ranking a day: the unsupervised decision kept in ensemble_flag, the decision the re-ranker's
    frame = con.execute(
        "SELECT * FROM scored_transactions JOIN features_transactions USING (partition_date, transaction_id)"
    ).pl()
    reranker = registry.current_reranker(reranking.NAME)
    out = reranking.rerank(frame, reranker)
    assert out["ensemble_flag"].equals(frame["is_anomaly"], check_names=False)
    assert (out["is_anomaly"] == (out["rerank_score"] >= reranking.CUT)).all()
    assert out["reranker_version"].unique().to_list() == [outcome.version]
    none = reranking.rerank(frame, None)
    assert none["rerank_score"].null_count() == frame.height
    assert none["is_anomaly"].equals(frame["is_anomaly"])


def test_a_gate_that_fails_leaves_the_promoted_reranker_alone(tmp_path):
    con = duckdb.connect()
    truth = _crafted(con)
    registry = Registry(tmp_path / "models" / "transactions")
    # labels that are the unsupervised score's own order: it ranks the held-out labels perfectly, so no
    # re-ranker can gain on it and the gate refuses (labels of random noise passed the gate by chance
    # in some draws: a gain over 0.01 in average precision on ~90 held-out labels)
    labels = _labels(truth, 300)
    score = con.execute(
        "SELECT ensemble_score FROM scored_transactions ORDER BY transaction_id LIMIT 300"
    ).fetchnumpy()["ensemble_score"]
    own_order = labels.with_columns(y=pl.Series(score >= np.quantile(score, 0.6)).cast(pl.Int8))
    outcome = reranking.train(con, registry, own_order)
    assert outcome.version is not None and not outcome.promoted
    assert outcome.gate["gain"] is None or outcome.gate["gain"] <= core.MIN_GAIN
    assert reranking.NAME not in registry.current()
    status = dict(con.execute("SELECT version, status FROM model_registry").fetchall())
    assert status == {outcome.version: "rejected"}


def _flagged_day(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    """scored_transactions of 2026-02-01 with the columns transaction_incidents reads: ``rows`` are
    (transaction_id, account_id, hour, is_anomaly, ensemble_flag, rerank_score)."""
    con.execute(
        """CREATE TABLE scored_transactions (partition_date DATE, transaction_id VARCHAR, account_id VARCHAR,
           ts TIMESTAMP, amount DOUBLE, transaction_type VARCHAR, location VARCHAR, device_id VARCHAR,
           channel VARCHAR, ensemble_score DOUBLE, is_anomaly BOOLEAN, ensemble_flag BOOLEAN,
           rerank_score DOUBLE, top_features STRUCT(feature VARCHAR, z DOUBLE)[],
           evidence STRUCT(feature VARCHAR, rarity DOUBLE, "value" DOUBLE)[])"""
    )
    for tx, account, hour, flag, ensemble_flag, rerank in rows:
        con.execute(
            """INSERT INTO scored_transactions VALUES (DATE '2026-02-01', ?, ?,
               TIMESTAMP '2026-01-20 00:00:00' + to_hours(?::BIGINT), 100.0, 'Debit', 'Austin', 'D1',
               'Online', 0.999, ?, ?, ?, [{'feature': 'tx_1h', 'z': 5.0}],
               [{'feature': 'tx_1h', 'rarity': 6.0, 'value': 4.0}])""",
            [tx, account, hour, flag, ensemble_flag, rerank],
        )


def test_a_lone_flagged_transaction_makes_an_incident_only_when_the_reranker_is_sure_enough():
    from bankanom_pipeline.sqlmodels.runner import Project
    from bankanom_pipeline.transactions.evaluation import unsupervised_incidents

    cut = reranking.LONE_INCIDENT_CUT
    assert reranking.CUT < cut < 1
    con = duckdb.connect()
    _flagged_day(
        con,
        [
            ("T1", "A-lone-unsure", 1, True, True, cut - 0.01),  # alone, not sure enough: none
            ("T2", "A-lone-sure", 1, True, True, cut + 0.01),  # alone and sure enough: an incident
            ("T3", "A-pair", 1, True, True, reranking.CUT),  # two flagged within 24 hours: an incident,
            ("T4", "A-pair", 5, True, False, reranking.CUT + 0.01),  # however unsure each is
            ("T5", "A-apart", 1, True, True, cut - 0.2),  # flagged twice but 48 hours apart: two lone
            ("T6", "A-apart", 49, True, True, cut - 0.2),  # transactions, neither sure enough
            ("T7", "A-unflagged", 1, False, True, 0.1),  # not flagged: never an incident
            ("T8", "A-no-reranker", 1, True, True, None),  # no re-ranker promoted: a lone one is kept
            ("T9", "A-lone-at-cut", 1, True, True, cut),  # exactly at the cut: an incident
        ],
    )
    Project().materialize(con, "transaction_incidents", "2026-02-01")
    incidents = con.execute(
        "SELECT account_id, transaction_ids FROM transaction_incidents ORDER BY account_id"
    ).fetchall()
    assert incidents == [
        ("A-lone-at-cut", ["T9"]),
        ("A-lone-sure", ["T2"]),
        ("A-no-reranker", ["T8"]),
        ("A-pair", ["T3", "T4"]),
    ]
    # the incidents the unsupervised decision alone would make keep every lone flagged transaction
    before = unsupervised_incidents(con, "2026-02-01")
    # sorted in Python: a polars sort on account_id alone leaves A-apart's two incidents in either order
    assert sorted(before.select("account_id", "transaction_ids").rows()) == [
        ("A-apart", ["T5"]),
        ("A-apart", ["T6"]),
        ("A-lone-at-cut", ["T9"]),
        ("A-lone-sure", ["T2"]),
        ("A-lone-unsure", ["T1"]),
        ("A-no-reranker", ["T8"]),
        ("A-pair", ["T3"]),
        ("A-unflagged", ["T7"]),
    ]


def test_the_sql_cuts_lone_incidents_at_the_constant():
    # the SQL runner takes no variables: transaction_incidents.sql writes the constant's value out, once
    import re

    from bankanom_pipeline.sqlmodels.runner import Project

    sql = Project().render("transaction_incidents", "2026-02-01")
    cuts = re.findall(r"max_rerank_score >= ([0-9.]+)(?![0-9.])", sql)
    assert cuts == [repr(reranking.LONE_INCIDENT_CUT)]


def test_transaction_figures_before_and_after_a_promoted_reranker():
    """``feedback_loop.transaction_figures`` on a re-ranked day: before is what the unsupervised decision
    alone makes (every lone flagged transaction an incident), after is the re-ranked decision with the
    lone-incident cut, and the unlabelled scope leaves out the labelled transactions and every incident
    holding one."""
    from sklearn.metrics import average_precision_score

    from bankanom_pipeline.reranking.feedback_loop import transaction_figures
    from bankanom_pipeline.sqlmodels.runner import Project

    cut = reranking.LONE_INCIDENT_CUT
    con = duckdb.connect()
    _flagged_day(
        con,
        [
            ("T1", "A-lone-unsure", 1, True, True, cut - 0.01),  # fraud I1: an incident before only
            ("T2", "A-lone-sure", 1, True, True, cut + 0.01),  # normal: an incident both ways
            ("T3", "A-pair", 1, True, True, reranking.CUT),  # fraud I2, labelled by the analyst
            ("T4", "A-pair", 5, True, False, reranking.CUT + 0.01),  # fraud I2, not flagged before
            ("T5", "A-apart", 1, True, True, cut - 0.2),  # normal
            ("T6", "A-apart", 49, True, True, cut - 0.2),  # fraud I3: an incident before only
            ("T7", "A-unflagged", 1, False, True, 0.1),  # normal, flagged before only
            ("T8", "A-quiet", 1, False, False, 0.05),  # fraud I4, never flagged
            ("T9", "A-quiet", 30, False, False, 0.02),  # normal
        ],
    )
    # distinct ensemble scores, so the PR-AUCs before and after differ
    con.execute("UPDATE scored_transactions SET ensemble_score = 0.9 + right(transaction_id, 1)::INT / 100")
    fraud = {"T1": "I1", "T3": "I2", "T4": "I2", "T6": "I3", "T8": "I4"}
    con.execute(
        "CREATE TABLE transaction_labels (partition_date DATE, transaction_id VARCHAR, is_fraud BOOLEAN, "
        "pattern VARCHAR, instance_id VARCHAR)"
    )
    for tx, instance in fraud.items():
        con.execute(
            "INSERT INTO transaction_labels VALUES (DATE '2026-02-01', ?, true, 'p', ?)", [tx, instance]
        )
    Project().materialize(con, "transaction_incidents", "2026-02-01")

    f = transaction_figures(con, "2026-02-01", labelled=["T3", "TX-of-another-day"])
    assert (f["transactions"], f["labelled"]) == (9, 1)
    before, after = f["all"]["before"], f["all"]["after"]
    # before: T1, T2, T3, T5, T6, T7 each alone (T4 was not flagged by the ensemble); frauds in T1, T3, T6
    assert (before["incidents"], before["incident_precision"]) == (6, 3 / 6)
    assert before["instance_recall"] == 3 / 4  # I1, I2, I3; I4 never flagged
    # after: T2 (sure enough), T3 + T4 (a pair); the unsure lone ones make none
    assert (after["incidents"], after["incident_precision"]) == (2, 1 / 2)
    assert after["instance_recall"] == 1 / 4
    scored = con.execute("SELECT * FROM scored_transactions ORDER BY transaction_id").pl()
    truth = scored["transaction_id"].is_in(list(fraud))
    assert before["pr_auc"] == pytest.approx(average_precision_score(truth, scored["ensemble_score"]))
    assert after["pr_auc"] == pytest.approx(average_precision_score(truth, scored["rerank_score"]))
    assert before["precision"] == 3 / 6 and after["precision"] == 4 / 6  # ensemble_flag, is_anomaly

    # unlabelled: T3 is out, and so is every incident holding it
    quiet_before, quiet_after = f["unlabelled"]["before"], f["unlabelled"]["after"]
    assert (quiet_before["incidents"], quiet_before["incident_precision"]) == (5, 2 / 5)
    assert quiet_before["instance_recall"] == 2 / 4  # I1, I3 (I2's T4 is in no incident kept)
    assert (quiet_after["incidents"], quiet_after["incident_precision"]) == (1, 0.0)
    assert quiet_after["instance_recall"] == 0.0
    rest = scored.filter(pl.col("transaction_id") != "T3")
    rest_truth = rest["transaction_id"].is_in(list(fraud))
    assert quiet_after["pr_auc"] == pytest.approx(average_precision_score(rest_truth, rest["rerank_score"]))

    # a day never re-ranked has no after figures
    con.execute("UPDATE scored_transactions SET rerank_score = NULL, is_anomaly = ensemble_flag")
    Project().materialize(con, "transaction_incidents", "2026-02-01")
    plain = transaction_figures(con, "2026-02-01", labelled=["T3"])
    assert plain["all"]["after"] is None and plain["unlabelled"]["after"] is None
    assert plain["all"]["before"] == before


# -- e2e: the loop over the API -----------------------------------------------------------------------------

ROWS = 12_000
DAY = "2026-02-01"
LOG_REGISTRY_POINTER = b'{"isolation_forest": "logs-sentinel", "local_outlier_factor": "logs-sentinel"}'
CSV_FIELDS = [
    "TransactionID",
    "AccountID",
    "TransactionAmount",
    "TransactionDate",
    "TransactionType",
    "Location",
    "DeviceID",
    "IPAddress",
    "MerchantID",
    "Channel",
    "CustomerAge",
    "CustomerOccupation",
    "TransactionDuration",
    "LoginAttempts",
    "AccountBalance",
    "PreviousTransactionDate",
]


def _run(job: str, **kwargs) -> dg.ExecuteInProcessResult:
    from bankanom_pipeline.definitions import defs
    from bankanom_pipeline.defs.resources import WarehouseResource

    # the definitions' warehouse resource took its paths when first imported, perhaps by an earlier test
    # in this process: one made now reads this test's folder
    warehouse = WarehouseResource()
    result = defs.resolve_job_def(job).execute_in_process(resources={"warehouse": warehouse}, **kwargs)
    assert result.success, job
    return result


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [materialization] = [
        m for m in result.asset_materializations_for_node(asset) if m.asset_key.to_user_string() == asset
    ]
    return {k: v.value for k, v in materialization.metadata.items()}


@pytest.fixture
def world(tmp_path, monkeypatch) -> Path:
    from bankanom_pipeline.defs.detection.jobs import train_run_config
    from bankanom_pipeline.detection.sources import TRANSACTIONS
    from bankanom_pipeline.transactions.generator import write

    data = tmp_path / "data"
    folder = data / "landing" / "transactions" / DAY
    write(folder / "tx.csv", folder / "tx.labels.csv", rows=ROWS, seed=5)
    (data / "models").mkdir(parents=True)
    (data / "models" / "current.json").write_bytes(LOG_REGISTRY_POINTER)  # the logs' registry
    monkeypatch.setenv("BANKANOM_DATA_DIR", str(data))
    for name in (
        "BANKANOM_MODELS_DIR",
        "BANKANOM_SNAPSHOTS_DIR",
        "BANKANOM_WAREHOUSE",
        "BANKANOM_LANDING_DIR",
        "BANKANOM_FEEDBACK_DB",
    ):
        monkeypatch.delenv(name, raising=False)
    _run("transaction_features_job", partition_key=DAY)
    _run("transaction_train_job", run_config=train_run_config(DAY, TRANSACTIONS))
    _run("transactions_job", partition_key=DAY)
    return data


@pytest.mark.e2e
def test_the_feedback_loop_trains_gates_and_the_api_serves_the_pipelines_rerank_score(world):
    from bankanom_pipeline.reranking.simulated_analyst import label, transaction_truth
    from tests.api_server import api_client

    with duckdb.connect(str(world / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(rerank_score) FROM scored_transactions").fetchone()[0] == 0

    # no labels yet: the asset materializes and says how many it has and needs
    refused = _metadata(_run("transaction_reranker_job"), "transaction_reranker")
    assert refused["trained"] is False and refused["labels"] == 0
    assert "needs at least 50 labelled items" in refused["reason"]

    with api_client(world, KEY) as api:
        truth = transaction_truth([world / "landing" / "transactions" / DAY / "tx.labels.csv"])
        done = label("http://testserver", KEY, "transaction", 120, truth, client=api)
        assert len(done.target_ids) == 120 and done.batches == 6
        # a fifth of each batch is random, drawn above the re-ranker's floor; when the day has too few
        # there, uncertain ones stand in
        assert {"top", "uncertain"} <= set(done.by_reason()) <= {"top", "uncertain", "random"}
        assert done.by_reason().get("random", 0) <= 24
        rows = api.get("/feedback", params={"kind": "transaction", "limit": 500}, headers=H).json()
        assert len(rows["items"] if isinstance(rows, dict) else rows) == 120

    trained = _metadata(_run("transaction_reranker_job"), "transaction_reranker")
    assert trained["trained"] is True and trained["labels"] == 120
    gate = trained["gate"]
    assert trained["promoted"] == (gate["gain"] is not None and gate["gain"] > core.MIN_GAIN)
    assert gate["n_test"] == int(core.held_out(done.target_ids).sum())
    registry = Registry(world / "models" / "transactions")
    assert (registry.current().get(reranking.NAME) == trained["version"]) == trained["promoted"]
    if not trained["promoted"]:
        # what follows checks the API against the pipeline, whichever way the gate went on this small day
        registry.promote({reranking.NAME: trained["version"]})

    _run("transactions_job", partition_key=DAY)
    with duckdb.connect(str(world / "warehouse.duckdb"), read_only=True) as con:
        scored = con.execute(
            "SELECT transaction_id, rerank_score, is_anomaly, ensemble_flag, reranker_version "
            "FROM scored_transactions WHERE partition_date = ?",
            [DAY],
        ).pl()
        models = {
            r[0] for r in con.execute("SELECT DISTINCT model FROM transaction_evaluation_metrics").fetchall()
        }
    assert scored["rerank_score"].null_count() == 0
    assert scored["reranker_version"].unique().to_list() == [trained["version"]]
    assert (scored["is_anomaly"] == (scored["rerank_score"] >= reranking.CUT)).all()
    assert {"reranked", "ensemble", "incidents", "incidents_unsupervised"} <= models

    decided = dict(zip(scored["transaction_id"], scored["is_anomaly"], strict=True))
    with api_client(world, KEY) as api:
        flagged = api.get("/transactions", params={"flagged_only": True, "limit": 15}, headers=H).json()
        others = api.get("/transactions", params={"limit": 15}, headers=H).json()
        # transactions the re-ranker judges (ensemble score at least its floor) and leaves unflagged: the
        # API must agree on these too, not only on the flagged ones and those it never judges
        judged = api.get(
            "/transactions", params={"min_score": reranking.FLOOR, "limit": 500}, headers=H
        ).json()
        kept = [r for r in judged if not decided[r["TransactionID"]]][:10]
        assert kept, "no transaction above the floor stayed unflagged"
        records = [{k: r[k] for k in CSV_FIELDS} for r in flagged + others + kept]
        predicted = api.post("/models/predict", json=records, headers=H).json()
        single = api.post("/models/isolation_forest/predict", json=records[:3], headers=H).json()
    pipeline = dict(zip(scored["transaction_id"], scored["rerank_score"], strict=True))
    for p in predicted:
        assert p["rerank_score"] == pytest.approx(pipeline[p["TransactionID"]], abs=1e-12)
        assert p["isFraud"] == decided[p["TransactionID"]]
    judged_unflagged = {r["TransactionID"] for r in kept}
    assert {p["TransactionID"] for p in predicted if not p["isFraud"]} >= judged_unflagged
    assert [s["rerank_score"] for s in single] == [p["rerank_score"] for p in predicted[:3]]
