"""The API's contract, in process: what OpenAPI documents is what the routes answer (bounded integers,
RFC 3339 times in UTC, nullable evaluation figures, every status code a route returns, strict query
types, the right Allow header). The app is the real one (``create_app``); its serving state holds a
small snapshot built here (an in-memory DuckDB with the published tables' columns) and promoted-model
manifests, so no pipeline run is needed. The whole API under schemathesis is tests/test_schemathesis.py.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import duckdb
import jsonschema
import pytest
from pydantic import ValidationError

from bankanom_api.schemas import EXAMPLE_EVENT, LogEvent
from bankanom_api.state import Models, Snapshot
from tests.api_server import api_client

KEY = "contract-key"
H = {"X-API-Key": KEY}
TOO_BIG = 2**63  # one past DuckDB's BIGINT: what used to reach the query as an OFFSET
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")
# jsonschema checks "date-time" only with an optional package installed: this one always does
FORMATS = jsonschema.FormatChecker()
FORMATS.checks("date-time")(lambda value: not isinstance(value, str) or bool(RFC3339.match(value)))
MODELS = ("isolation_forest", "local_outlier_factor")


def _snapshot() -> Snapshot:
    """One incident of two events, their scores, a day's evaluation with an unlabelled metric (NaN, as
    evaluation writes it for a day without labels), and one account's transactions."""
    con = duckdb.connect()
    con.execute("""
        CREATE TABLE scored_events AS SELECT DATE '2026-01-06' AS partition_date, 'E' || i AS event_id,
            TIMESTAMP '2026-01-06 10:00:00.25' + i * INTERVAL 1 MINUTE AS ts, 'auth-service' AS source_service,
            'USR-1' AS user_id, '10.0.0.1' AS ip_address, NULL::VARCHAR AS correlation_id, 0.9::DOUBLE AS if_score,
            0.8::DOUBLE AS lof_score, 0.9::DOUBLE AS ensemble_score, true AS if_flag, false AS lof_flag, true AS is_anomaly,
            'if-1' AS if_version, 'lof-1' AS lof_version FROM range(2) AS t(i);
        CREATE TABLE incidents AS SELECT DATE '2026-01-06' AS partition_date, 'INC-1' AS incident_id,
            TIMESTAMP '2026-01-06 10:00:00.25' AS start_ts, TIMESTAMP '2026-01-06 10:01:00.25' AS end_ts,
            2 AS event_count, ['auth-service'] AS services, ['USR-1'] AS users, ['10.0.0.1'] AS ips,
            1 AS user_count, 1 AS ip_count, 0.9::DOUBLE AS max_score, 0.9::DOUBLE AS mean_score, 'High' AS severity,
            true AS reported, 'auth-service' AS origin_service, 'user USR-1' AS origin_entity,
            'BANK-001' AS scenario_id, 'Brute force' AS scenario_name, 0.9::DOUBLE AS scenario_confidence,
            '[]' AS scenario_alternatives, '[]' AS top_features, 'two failed logins' AS summary,
            'open' AS status;
        CREATE TABLE incident_events AS SELECT s.partition_date, 'INC-1' AS incident_id, s.event_id, s.ts,
            s.source_service, s.user_id, s.ip_address, s.ensemble_score, 'WARN' AS log_level,
            'failed login' AS message, 'GB-LON' AS geo_location, '{}' AS metrics FROM scored_events AS s;
        CREATE TABLE evaluation_metrics AS SELECT * FROM (VALUES
            (DATE '2026-01-06', 'isolation_forest', 'precision', 'NaN'::DOUBLE),
            (DATE '2026-01-06', 'isolation_forest', 'false_positives_per_10k', 3.5))
            AS t(partition_date, model, metric, value);
        CREATE TABLE transactions AS SELECT DATE '2026-02-01' AS partition_date, 'TX1' AS transaction_id,
            'AC1' AS account_id, 14.09::DOUBLE AS amount, TIMESTAMP '2026-01-31 16:29:14' AS ts,
            'Debit' AS transaction_type, 'San Diego' AS location, 'D1' AS device_id,
            '10.0.0.2' AS ip_address, 'M015' AS merchant_id, 'ATM' AS channel, 70 AS customer_age,
            'Doctor' AS customer_occupation, 81 AS duration_s, 1 AS login_attempts, 5112.21::DOUBLE AS balance,
            NULL::TIMESTAMP AS previous_ts, 0.5::DOUBLE AS if_score, 0.5::DOUBLE AS lof_score, 0.5::DOUBLE AS ensemble_score,
            false AS if_flag, false AS lof_flag, false AS is_anomaly;
    """)
    tables = ["scored_events", "incidents", "incident_events", "evaluation_metrics", "transactions"]
    rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    pointer = {"file": "snapshot-test.duckdb", "published_at": "2026-01-07T00:00:00+00:00", "rows": rows}
    return Snapshot(pointer, con, time.time())


def _models() -> Models:
    manifests = {
        name: {
            "version": f"{name}-1",
            "created_at": "2026-01-06T12:01:50.457749+00:00",
            "training_window": {"start": "2026-01-05", "end": "2026-01-05"},
            "training_rows": 100,
            "params": {},
            "features": ["amount"],
            "metrics": {},
        }
        for name in MODELS
    }
    detectors = {name: SimpleNamespace(version=f"{name}-1") for name in MODELS}
    return Models(detectors, manifests, time.time())


UNLIMITED = "100000/second"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The API serving the small snapshot and the manifests above."""
    with api_client(tmp_path_factory.mktemp("contract"), KEY, rate_limit=UNLIMITED) as test_client:
        test_client.app.state.serving.snapshot = _snapshot()
        test_client.app.state.serving.models = _models()
        yield test_client


@pytest.fixture(scope="module")
def empty(tmp_path_factory):
    """The API before anything was published: no snapshot, no models."""
    with api_client(tmp_path_factory.mktemp("empty"), KEY, rate_limit=UNLIMITED) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def openapi(client) -> dict:
    return client.get("/openapi.json").json()


def conforms(openapi: dict, path: str, method: str, response) -> None:
    """The response's status is documented for the operation and its JSON body matches the documented
    schema, formats (date-time) included."""
    documented = openapi["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (method, path, response.status_code, response.text)
    content = documented[str(response.status_code)].get("content", {}).get("application/json")
    if content is None:
        return
    schema = {**content["schema"], "components": openapi["components"]}
    jsonschema.Draft202012Validator(schema, format_checker=FORMATS).validate(response.json())


def operations(openapi: dict):
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


# -- bounded integers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/incidents", "/scores/latest", "/transactions", "/transactions/AC1"])
def test_an_offset_or_limit_beyond_its_bound_is_a_documented_422_not_a_500(client, openapi, path):
    for query in ({"offset": TOO_BIG}, {"offset": 2**63 - 1}, {"limit": TOO_BIG}, {"offset": -1}):
        response = client.get(path, params=query, headers=H)
        assert response.status_code == 422, (query, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", next(iter(query))]
    assert client.get(path, params={"offset": 1000}, headers=H).status_code in (200, 404)


def test_every_integer_parameter_has_documented_bounds(openapi):
    integers = [
        (path, p["name"], p["schema"])
        for path, _, operation in operations(openapi)
        for p in operation.get("parameters", [])
        if p["schema"].get("type") == "integer"
    ]
    assert {name for _, name, _ in integers} >= {"limit", "offset"}
    for path, name, schema in integers:
        assert "maximum" in schema and "minimum" in schema, (path, name, schema)


# -- times: RFC 3339 in UTC, in and out ----------------------------------------------------------------


def test_every_returned_time_is_rfc3339_with_z_and_matches_the_schema(client, openapi):
    scores = client.get("/scores/latest", headers=H)
    conforms(openapi, "/scores/latest", "get", scores)
    assert [i["ts"] for i in scores.json()["items"]] == [
        "2026-01-06T10:01:00.250000Z",
        "2026-01-06T10:00:00.250000Z",
    ]
    incidents = client.get("/incidents", headers=H)
    conforms(openapi, "/incidents", "get", incidents)
    assert incidents.json()["items"][0]["start_ts"] == "2026-01-06T10:00:00.250000Z"
    incident = client.get("/incidents/INC-1", headers=H)
    conforms(openapi, "/incidents/{incident_id}", "get", incident)
    body = incident.json()
    assert body["end_ts"] == "2026-01-06T10:01:00.250000Z"
    assert all(RFC3339_UTC.match(e["ts"]) for e in body["events"]), body["events"]
    model = client.get("/models/isolation_forest", headers=H)
    conforms(openapi, "/models/{name}", "get", model)
    assert model.json()["created_at"] == "2026-01-06T12:01:50.457749Z"


@pytest.mark.parametrize("path", ["/incidents", "/scores/latest"])
@pytest.mark.parametrize("name", ["since", "until"])
def test_time_filters_take_rfc3339_date_times_only(client, path, name):
    for wrong in ("0.0", "0", "1767693600", "2026-01-06", "2026-01-06T10:00:00", "yesterday"):
        response = client.get(path, params={name: wrong}, headers=H)
        assert response.status_code == 422, (wrong, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", name]
    for right in ("2026-01-06T10:00:30Z", "2026-01-06T11:00:30+01:00", "2026-01-06t10:00:30.5z"):
        response = client.get(path, params={name: right}, headers=H)
        assert response.status_code == 200, (right, response.text)
        assert response.json()["total"] == 1, right  # one item on each side of 10:00:30 UTC


# -- what the schema says matches what is returned ------------------------------------------------------


def test_an_unlabelled_days_evaluation_figures_are_null_and_documented_so(client, openapi):
    response = client.get("/models", headers=H)
    conforms(openapi, "/models", "get", response)
    forest = response.json()["models"][0]
    assert forest["evaluation"] == {"precision": None, "false_positives_per_10k": 3.5}
    assert forest["evaluation_date"] == "2026-01-06"


def test_transaction_records_are_documented_and_match_their_schema(client, openapi):
    def documented(path: str, method: str) -> dict:
        return openapi["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]

    for path, url in [
        ("/transactions", "/transactions"),
        ("/transactions/{account_id}", "/transactions/AC1"),
    ]:
        assert documented(path, "get")["type"] == "array" and "$ref" in documented(path, "get")["items"]
        response = client.get(url, headers=H)
        conforms(openapi, path, "get", response)
        # the predecessor's CSV layout: the file's time, without a zone
        assert response.json()[0]["TransactionDate"] == "2026-01-31 16:29:14"
    for path in ["/models/predict", "/models/{model_name}/predict"]:
        assert "$ref" in documented(path, "post")["items"], path


@pytest.mark.parametrize(
    ("path", "body"),
    [("/predict", b'{"events": ["\xff\xfe"]}'), ("/models/predict", b"[\xff]"), ("/models/predict", b"\xff")],
)
def test_a_body_that_is_not_utf8_json_is_a_documented_422(client, openapi, path, body):
    response = client.post(path, content=body, headers={**H, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "json_invalid"
    conforms(openapi, path, "post", response)


def test_every_status_a_route_answers_is_documented_with_its_body(client, empty, openapi):
    answered = [
        (empty.get("/transactions", headers=H), "/transactions", "get", 503),
        (empty.get("/transactions/AC1", headers=H), "/transactions/{account_id}", "get", 503),
        (empty.get("/scores/latest", headers=H), "/scores/latest", "get", 503),
        (empty.get("/incidents/INC-1", headers=H), "/incidents/{incident_id}", "get", 503),
        (empty.get("/models", headers=H), "/models", "get", 503),
        (empty.post("/models/predict", json=[], headers=H), "/models/predict", "post", 503),
        (client.get("/transactions/nobody", headers=H), "/transactions/{account_id}", "get", 404),
        (client.get("/incidents/nothing", headers=H), "/incidents/{incident_id}", "get", 404),
        (client.get("/models/nothing", headers=H), "/models/{name}", "get", 404),
        (client.get("/transactions"), "/transactions", "get", 401),
        (client.post("/models/predict", json=[]), "/models/predict", "post", 401),
        (client.get("/incidents", params={"severity": "Bad"}, headers=H), "/incidents", "get", 422),
        # a reading key may not ingest; nobody may without a key
        (client.post("/events", json={"events": [EXAMPLE_EVENT]}, headers=H), "/events", "post", 403),
        (client.post("/events", json={"events": [EXAMPLE_EVENT]}), "/events", "post", 401),
    ]
    for response, path, method, status in answered:
        assert response.status_code == status, (path, response.text)
        conforms(openapi, path, method, response)
    for path, method, operation in operations(openapi):
        if path != "/health":
            assert {"401", "429"} <= set(operation["responses"]), (method, path)


def test_with_nothing_loaded_a_bad_request_still_gets_its_own_answer_not_503(empty, openapi):
    # what is loaded is checked after FastAPI validated the request (deps.py says why)
    answered = [
        (empty.get("/scores/latest", params={"min_score": 5}, headers=H), "/scores/latest", "get", 422),
        (empty.get("/incidents", params={"since": "yesterday"}, headers=H), "/incidents", "get", 422),
        (empty.get("/transactions", params={"limit": 0}, headers=H), "/transactions", "get", 422),
        (
            empty.get("/transactions/AC1", params={"offset": -1}, headers=H),
            "/transactions/{account_id}",
            "get",
            422,
        ),
        (empty.get("/models/nothing", headers=H), "/models/{name}", "get", 404),
        (
            empty.post("/predict", params={"model": "nothing"}, json={"events": [EXAMPLE_EVENT]}, headers=H),
            "/predict",
            "post",
            404,
        ),
        (empty.post("/predict", json={"events": [{}]}, headers=H), "/predict", "post", 422),
        (
            empty.post("/predict", params={"context": "maybe"}, json={"events": [EXAMPLE_EVENT]}, headers=H),
            "/predict",
            "post",
            422,
        ),
        (empty.post("/models/predict", json=[{}], headers=H), "/models/predict", "post", 422),
    ]
    for response, path, method, status in answered:
        assert response.status_code == status, (path, response.text)
        conforms(openapi, path, method, response)


def test_wrong_methods_get_a_405_that_names_the_right_ones(client):
    for method, path, allowed in [
        ("OPTIONS", "/models/predict", "POST"),
        ("DELETE", "/models/isolation_forest", "GET"),
        ("PUT", "/models/isolation_forest/predict", "POST"),
        ("POST", "/incidents", "GET"),
    ]:
        response = client.request(method, path, headers=H)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["allow"] == allowed, (method, path)
    assert client.get("/models/isolation_forest", headers=H).status_code == 200
    # GET /models/{name} is documented: "predict" is a model that does not exist
    assert client.get("/models/predict", headers=H).status_code == 404


# -- the console shows times as the JSON API writes them ------------------------------------------------


def test_the_console_shows_times_as_rfc3339_with_z(client):
    form = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    login = client.post("/console/login", data={"csrf": csrf, "api_key": KEY}, follow_redirects=False)
    assert login.status_code == 303, login.text
    listed = client.get("/console/incidents").text
    assert "<td>2026-01-06T10:00:00Z</td>" in listed
    incident = client.get("/console/incidents/INC-1").text
    assert "<dd>2026-01-06T10:00:00Z</dd>" in incident and "<dd>2026-01-06T10:01:00Z</dd>" in incident
    assert "<td>2026-01-06T10:01:00Z</td>" in incident  # its second event
    models = client.get("/console/models").text
    assert "2026-01-06T12:01:50Z" in models and "2026-01-07T00:00:00Z" in models  # created, published
    shown = re.findall(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\S*", listed + incident + models)
    assert shown and all(RFC3339_UTC.match(t.split("<")[0]) for t in shown), shown


def test_the_api_imports_neither_dagster_nor_great_expectations():
    """Nor does any module of theirs load in the API's process: its request models run the validation
    rules from their declaration (tests/test_rules_everywhere.py), not through GX."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, bankanom_api.main, bankanom_api.schemas, bankanom_api.transactions; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'great_expectations'}))"
    )
    env = {**os.environ, "BANKANOM_API_KEYS": "k"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_nothing_promoted_or_published_yet_is_503(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    with api_client(empty, KEY) as client:
        client.headers.update(H)
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "no promoted models loaded" in ready.json()["problems"]
        event = {
            "timestamp": "2026-01-06T00:00:00Z",
            "source_service": "auth-service",
            "log_level": "INFO",
            "event_id": "e1",
            "message": "hello",
        }
        for response in (
            client.post("/predict", json={"events": [event]}),
            client.get("/models"),
            client.get("/scores/latest"),
            client.get("/incidents"),
        ):
            assert response.status_code == 503 and "yet" in response.json()["detail"]
        assert client.get("/health").status_code == 200


def test_console_pages_say_what_is_missing_without_a_snapshot_or_models(empty):
    try:
        _console_pages_say_what_is_missing(empty)
    finally:
        empty.cookies.clear()  # the module's other tests see the API with no console session


def _console_pages_say_what_is_missing(empty):
    form = empty.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    login = empty.post(
        "/console/login",
        data={"csrf": csrf, "api_key": KEY, "next": "/console/incidents"},
        follow_redirects=False,
    )
    assert login.status_code == 303
    for path, text in [
        ("/console/incidents", "No snapshot published yet"),
        ("/console/transactions", "No transactions published yet"),
        ("/console/models", "Nothing promoted yet"),
        ("/console/predict", "No promoted transaction models yet"),
    ]:
        response = empty.get(path)
        assert response.status_code == 200 and text in response.text, path
    missing = empty.get("/console/incidents/INC-1")
    assert missing.status_code == 503 and "No snapshot published yet" in missing.text


def test_a_posted_events_metrics_are_kept_as_sent_with_the_known_ones_checked():
    event = {**EXAMPLE_EVENT, "metrics": {"error_rate": 1, "latency_note": "slow", "huge": 10**30}}
    # known metrics as checked numbers, the others as sent (not read), absent ones left out
    assert LogEvent.model_validate(event).metrics == {
        "error_rate": 1.0,
        "latency_note": "slow",
        "huge": 10**30,
    }
    assert LogEvent.model_validate({**EXAMPLE_EVENT, "metrics": None}).metrics == {}
    assert LogEvent.model_validate({k: v for k, v in EXAMPLE_EVENT.items() if k != "metrics"}).metrics is None
    for metrics, error in (
        ({"error_rate": 1.5}, "less_than_equal"),
        ({"error_rate": float("nan")}, "finite_number"),
        ({"error_rate": "0.5"}, "float_type"),
        ([0.5], "dict_type"),
    ):
        with pytest.raises(ValidationError) as refused:
            LogEvent.model_validate({**EXAMPLE_EVENT, "metrics": metrics})
        assert [e["type"] for e in refused.value.errors()] == [error], metrics
