"""Bank transactions from a CSV to the API, as the predecessor's clients see it: ``bankanom
ingest-transactions`` (real Dagster runs) on generated and dirty real-layout files (the session's
``transactions_world``), then the API (in process) serving /transactions and the transaction predict
routes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

from bankanom_api.app import create_app
from bankanom_pipeline.detection.sources import TRANSACTIONS
from tests.api_server import api_settings
from tests.conftest import CLEAN, DIRTY, DIRTY_DAY, TX_DAY

pytestmark = pytest.mark.e2e

KEY = "tx-key"
H = {"X-API-Key": KEY}
DAY = TX_DAY
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


@pytest.fixture(scope="module")
def world(transactions_world) -> Path:
    """The session's world: the demo's logs plus the generated delivery on DAY and the dirty one on
    DIRTY_DAY (conftest.world_with_transactions); read only here."""
    return transactions_world


@pytest.fixture(scope="module")
def api(world, tmp_path_factory):
    # the console's feedback and alerts files elsewhere: the session's world stays as it was built
    spare = tmp_path_factory.mktemp("tx-api")
    settings = replace(
        api_settings(world, KEY, max_batch=50, rate_limit="10000/second"),
        feedback_db=spare / "feedback.duckdb",
        alerts_db=spare / "alerts.duckdb",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def _warehouse(world: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(world / "warehouse.duckdb"), read_only=True)


def test_every_line_of_a_dirty_real_layout_file_is_accounted_for(world):
    with _warehouse(world) as con:

        def count(table: str, extra: str = "") -> int:
            return con.execute(
                f"SELECT count(*) FROM {table} WHERE partition_date = ? {extra}", [DIRTY_DAY]
            ).fetchone()[0]

        lines = len((DIRTY + CLEAN).splitlines()) - 1  # data lines, header excluded
        raw, rejected = count("raw_transactions"), count("raw_transactions_rejected")
        assert raw + rejected == lines and rejected == 2  # the empty line, the short line
        validated = count("validated_transactions")
        quarantined = count("quarantine_transactions", "AND kind = 'invalid'")
        duplicates = count("quarantine_transactions", "AND kind = 'duplicate'")
        assert (validated, quarantined, duplicates) == (102, 4, 1)
        assert raw == validated + quarantined + duplicates
        rules = dict(
            con.execute(
                "SELECT transaction_id, rules FROM quarantine_transactions WHERE partition_date = ? AND kind = 'invalid'",
                [DIRTY_DAY],
            ).fetchall()
        )
        assert rules["RX000003"] == ["amount_non_negative"]
        assert rules["RX000004"] == ["transaction_date_parseable"]
        assert rules["RX000005"] == ["known_channel", "known_occupation", "known_transaction_type"]
        assert rules["RX000006"] == ["customer_age_in_range", "ip_address_well_formed"]
        # the validated rows went on to scores, with the quoted comma kept whole in the extra column
        assert count("scored_transactions") == 102
        assert (
            con.execute(
                "SELECT extra->>'Comment' FROM validated_transactions WHERE transaction_id = 'RX000001'"
            ).fetchone()[0]
            == "late, but fine"
        )


def test_models_list_carries_the_predecessors_display_names(api, world):
    for path in ("/models", "/models/"):
        body = api.get(path, headers=H).json()
        assert body["available_models"] == ["Isolation Forest", "Local Outlier Factor"]
        current = TRANSACTIONS.registry(world / "models").current()
        # the predecessor's two display names, and every promoted transaction detector with its version
        listed = {m["name"]: m["version"] for m in body["transaction_models"]}
        assert "ecod" in listed and listed == {k: v for k, v in current.items() if k in listed}
        assert set(listed) == {"isolation_forest", "local_outlier_factor", "ecod"}
    assert api.get("/models/").status_code == 401


def test_transactions_list_filters_and_paginates(api):
    everything = api.get("/transactions/", params={"limit": 1000}, headers=H).json()
    assert isinstance(everything, list) and len(everything) == 1000
    assert set(CSV_FIELDS) <= set(everything[0]) and {"if_score", "lof_score", "isFraud"} <= set(
        everything[0]
    )
    page = api.get("/transactions", params={"limit": 10, "offset": 5}, headers=H).json()
    assert [t["TransactionID"] for t in page] == [t["TransactionID"] for t in everything[5:15]]
    flagged = api.get("/transactions", params={"flagged_only": True, "limit": 1000}, headers=H).json()
    assert flagged and all(t["isFraud"] for t in flagged)
    high = api.get("/transactions", params={"min_score": 0.99, "limit": 1000}, headers=H).json()
    assert high and all(t["ensemble_score"] >= 0.99 for t in high)
    account = everything[0]["AccountID"]
    mine = api.get("/transactions", params={"account": account}, headers=H).json()
    assert mine and all(t["AccountID"] == account for t in mine)
    assert api.get("/transactions", params={"limit": 0}, headers=H).status_code == 422


def test_account_transactions_and_unknown_account(api):
    account = api.get("/transactions", params={"limit": 1}, headers=H).json()[0]["AccountID"]
    for path in (f"/transactions/{account}", f"/transactions/{account}/"):
        rows = api.get(path, headers=H).json()
        assert rows and all(r["AccountID"] == account for r in rows)
    missing = api.get("/transactions/NO_SUCH_ACCOUNT", headers=H)
    assert missing.status_code == 404 and missing.json() == {"detail": "Account ID not found"}


def _posted(records: list[dict]) -> list[dict]:
    return [{k: r[k] for k in CSV_FIELDS} for r in records]


def test_api_scores_equal_the_pipelines_with_the_accounts_history(api, world):
    """The last transactions of a few accounts, posted back: each is scored with its account's earlier
    history from the snapshot, so the API's scores are the pipeline's, to the last bit."""
    with _warehouse(world) as con:
        accounts = [
            r[0]
            for r in con.execute(
                "SELECT account_id FROM scored_transactions WHERE partition_date = ? GROUP BY 1 ORDER BY count(*) DESC LIMIT 8",
                [DAY],
            ).fetchall()
        ]
    records = []
    for account in accounts:
        records += api.get(f"/transactions/{account}", params={"limit": 3}, headers=H).json()
    flagged = api.get("/transactions", params={"flagged_only": True, "limit": 10}, headers=H).json()
    records += [r for r in flagged if r["TransactionID"].startswith("TX")]
    response = api.post("/models/predict", json=_posted(records), headers=H)
    assert response.status_code == 200
    predicted = response.json()
    assert [p["TransactionID"] for p in predicted] == [r["TransactionID"] for r in records]
    for served, scored in zip(records, predicted, strict=True):
        assert scored["if_score"] == pytest.approx(served["if_score"], abs=1e-12)
        assert scored["lof_score"] == pytest.approx(served["lof_score"], abs=1e-12)
        assert scored["ensemble_score"] == pytest.approx(served["ensemble_score"], abs=1e-12)
        assert (scored["isFraud"], scored["if_pred"], scored["lof_pred"]) == (
            served["isFraud"],
            served["if_pred"],
            served["lof_pred"],
        )
        assert {k: scored[k] for k in CSV_FIELDS} == {k: served[k] for k in CSV_FIELDS}
    assert any(p["isFraud"] for p in predicted) and not all(p["isFraud"] for p in predicted)


def test_a_transaction_scores_the_same_alone_and_among_other_accounts(api):
    """ECOD's distributions are frozen at training: a transaction's scores and top features do not
    depend on the other accounts' transactions posted with it (PyOD's ECOD would score each call's
    batch against itself too)."""
    records = _posted(api.get("/transactions", params={"limit": 40}, headers=H).json())
    by_account: dict[str, dict] = {}
    for r in records:
        by_account.setdefault(r["AccountID"], r)  # one per account: same-account rows are history
    batch = list(by_account.values())
    assert len(batch) >= 5
    together = api.post("/models/predict", json=batch, headers=H).json()
    for i in (0, len(batch) // 2, len(batch) - 1):
        alone = api.post("/models/predict", json=[batch[i]], headers=H).json()[0]
        # ECOD and the forest score a row on its own; LOF's neighbour search may differ in the last bit
        for key in ("if_score", "ecod_score", "ensemble_score", "isFraud", "top_features"):
            assert alone[key] == together[i][key], (key, batch[i]["TransactionID"])
        assert alone["lof_score"] == pytest.approx(together[i]["lof_score"], abs=1e-12)


def test_single_model_predict_and_the_predecessors_500s(api):
    record = _posted(api.get("/transactions", params={"limit": 1}, headers=H).json())[0]
    for name in ("isolation_forest", "local_outlier_factor"):
        for path in (f"/models/{name}/predict", f"/models/{name}/predict/"):
            body = api.post(path, json=[record], headers=H).json()
            assert set(body[0]) >= {*CSV_FIELDS, "isFraud"} and "if_pred" not in body[0]
    assert api.post("/models/random_forest/predict", json=[record], headers=H).status_code == 422
    # what returned 500 from the predecessor: an empty list, an unparseable date, one timestamp twice
    assert api.post("/models/predict", json=[], headers=H).json() == []
    bad_date = api.post(
        "/models/predict", json=[{**record, "TransactionDate": "2023-13-45 99:00:00"}], headers=H
    )
    assert bad_date.status_code == 422 and bad_date.json()["detail"][0]["loc"][-1] == "TransactionDate"
    twin = {**record, "TransactionID": "TWIN-1"}
    same_time = api.post("/models/predict/", json=[record, twin], headers=H)
    assert same_time.status_code == 200 and len(same_time.json()) == 2
    # a brand-new account has no history, and still gets a score
    stranger = {**record, "TransactionID": "NEW-1", "AccountID": "AC-NEVER-SEEN"}
    assert 0 <= api.post("/models/predict", json=[stranger], headers=H).json()[0]["ensemble_score"] <= 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("TransactionAmount", -1),
        ("CustomerAge", 17),
        ("CustomerAge", 121),
        ("TransactionType", "Transfer"),
        ("Channel", "Phone"),
        ("CustomerOccupation", "Pilot"),
        ("IPAddress", "999.1.1.1"),
        ("PreviousTransactionDate", "yesterday"),
    ],
)
def test_predict_rejects_bad_fields_by_name(api, field, value):
    record = _posted(api.get("/transactions", params={"limit": 1}, headers=H).json())[0]
    response = api.post("/models/predict", json=[{**record, field: value}], headers=H)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field and "Traceback" not in response.text


def test_predict_error_codes(api):
    record = _posted(api.get("/transactions", params={"limit": 1}, headers=H).json())[0]
    assert api.post("/models/predict", json=[record]).status_code == 401
    # a schema-valid list that repeats an id conflicts with itself: 409, documented (JSON Schema cannot
    # say "unique by TransactionID", so a 422 would refuse data the schema allows)
    twice = api.post("/models/predict", json=[record, record], headers=H)
    assert twice.status_code == 409 and "unique" in twice.json()["detail"]
    assert "409" in api.get("/openapi.json").json()["paths"]["/models/predict"]["post"]["responses"]
    too_many = [{**record, "TransactionID": f"T{i}"} for i in range(51)]
    assert api.post("/models/predict", json=too_many, headers=H).status_code == 413
    assert api.post("/models/predict", json={"not": "a list"}, headers=H).status_code == 422
