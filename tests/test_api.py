"""The prediction API as clients see it, serving the models and the snapshot the demo left behind (a copy,
so this module may write to it): the app in process, and docs/api.md's curl examples against a real
uvicorn server (the suite's smoke test of the served API)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pytest
from fastapi.testclient import TestClient

from bankanom_api.app import create_app
from bankanom_api.schemas import IncidentSummary, ScoredEvent
from bankanom_pipeline.cli import _epoch, _load
from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.models import ensemble
from bankanom_pipeline.detection.registry import Registry
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.writer import write_range
from bankanom_pipeline.serving import snapshot
from tests.api_server import accepted_lines, api_settings, running_api
from tests.demo_world import DEMO_DAY
from tests.online_world import STREAM_KEY, stream_service

pytestmark = pytest.mark.e2e

KEY, OTHER_KEY = "test-key-1", "test-key-2"
H = {"X-API-Key": KEY}
MAX_BATCH = 3000
NEW_DAY = "2026-01-08"  # a small extra day the pipeline writes while the API serves
# between one client's calls while something changes underneath: tens of calls a second still cover
# the change, and the clients leave the CPU to the run or the reload they are watching
PAUSE = 0.05


@pytest.fixture(scope="module")
def world(demo, tmp_path_factory) -> Path:
    _, _, data = demo
    root = tmp_path_factory.mktemp("api") / "data"
    root.mkdir()
    shutil.copytree(data / "models", root / "models")
    shutil.copytree(data / "snapshots", root / "snapshots")
    shutil.copy(data / "warehouse.duckdb", root / "warehouse.duckdb")
    first = sorted((data / "landing" / "logs" / DEMO_DAY).glob("*.jsonl"))[
        0
    ]  # for docs/api.md's batch example
    (root / "landing" / "logs" / DEMO_DAY).mkdir(parents=True)
    shutil.copy(first, root / "landing" / "logs" / DEMO_DAY / first.name)
    return root


def two_key_client(world: Path, **overrides) -> TestClient:
    settings = replace(api_settings(world, KEY, reload_seconds=0.2, **overrides), api_keys=[KEY, OTHER_KEY])
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def api(world):
    """The app in process, forwarding to a live stream over the same folder (uvicorn in a thread), which
    starts from the demo day's published checkpoint. The rate limit has its own test and app."""
    with stream_service(world) as (url, _):
        stream = {"stream_url": url, "stream_key": STREAM_KEY, "live_dir": world / "live"}
        with two_key_client(world, max_batch=MAX_BATCH, rate_limit="10000/second", **stream) as client:
            yield client


def demo_events(world: Path, n: int) -> list[dict]:
    """The demo day's last ``n`` lines: the live stream's state starts from the day's published checkpoint,
    and keeps the context of the events of its last hour (earlier ones get 409, too_late)."""
    con = duckdb.connect(str(world / "warehouse.duckdb"), read_only=True)
    try:
        return accepted_lines(con, DEMO_DAY, n, newest=True)
    finally:
        con.close()


# -- auth, health, readiness ----------------------------------------------------------------------------


def test_health_is_open_and_everything_else_needs_a_valid_key(api):
    assert api.get("/health").json() == {"status": "ok"}
    for method, path in [
        ("GET", "/ready"),
        ("GET", "/models"),
        ("GET", "/scores/latest"),
        ("GET", "/incidents"),
        ("GET", "/metrics"),
        ("POST", "/predict"),
    ]:
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}):
            response = api.request(method, path, headers=headers, json={"events": []})
            assert response.status_code == 401, (path, headers)
            assert "API key" in response.json()["detail"]
    assert api.get("/ready", headers={"X-API-Key": OTHER_KEY}).status_code == 200


def test_ready_names_the_promoted_versions_and_the_snapshot(api, world):
    body = api.get("/ready", headers=H).json()
    assert body["ready"] is True and body["problems"] == []
    assert {n: m["version"] for n, m in body["models"].items()} == Registry(world / "models").current()
    assert body["snapshot"]["file"] == snapshot.SnapshotPublisher(world / "snapshots").current()["file"]
    assert body["snapshot"]["age_seconds"] >= 0 and body["snapshot"]["rows"]["scored_events"] > 50_000


def test_cors_is_closed_by_default(api):
    response = api.options(
        "/models", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in response.headers


def test_openapi_documents_every_route(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path in [
        "/health",
        "/ready",
        "/models",
        "/models/{name}",
        "/predict",
        "/scores/latest",
        "/incidents",
        "/incidents/{incident_id}",
        "/metrics",
    ]:
        assert path in paths


# -- models -------------------------------------------------------------------------------------------


def test_models_list_versions_windows_params_and_evaluation(api, world):
    listed = api.get("/models", headers=H).json()
    assert listed["available_models"] == ["Isolation Forest", "Local Outlier Factor"]
    assert api.get("/models/", headers=H).json() == listed  # the predecessor's clients call /models/
    models = listed["models"]
    registry = Registry(world / "models")
    assert [m["name"] for m in models] == ["isolation_forest", "local_outlier_factor"]
    for model in models:
        assert model["version"] == registry.current()[model["name"]]
        assert model["training_window"] == {"start": "2026-01-05", "end": "2026-01-05"}
        assert model["params"]["random_state"] == 7 and model["training_rows"] > 50_000
        assert model["evaluation_date"] == DEMO_DAY and 0 <= model["evaluation"]["pr_auc"] <= 1
    one = api.get("/models/local_outlier_factor", headers=H).json()
    assert one == models[1]
    missing = api.get("/models/random_forest", headers=H)
    assert missing.status_code == 404 and "unknown model" in missing.json()["detail"]


# -- predict ------------------------------------------------------------------------------------------


def test_predict_scores_with_both_models_or_one(api, world):
    thresholds = default_detection_config().thresholds
    events = demo_events(world, 20)
    body = api.post("/predict", params={"explain": "true"}, json={"events": events}, headers=H).json()
    assert body["model"] == "ensemble" and set(body["versions"]) == {
        "isolation_forest",
        "local_outlier_factor",
    }
    assert [p["event_id"] for p in body["predictions"]] == [e["event_id"] for e in events]
    for p in body["predictions"]:
        assert 0 <= p["isolation_forest"] <= 1 and 0 <= p["local_outlier_factor"] <= 1
        # the pipeline's ensemble rule, from the same function and thresholds
        expected = ensemble(
            np.array([p["isolation_forest"]]), np.array([p["local_outlier_factor"]]), thresholds
        )
        assert p["ensemble"] == pytest.approx(expected[0], abs=1e-12)
        assert p["is_anomaly"] == (p["ensemble"] >= thresholds.ensemble)
        assert len(p["top_features"]) == 5
        deviations = [abs(f["deviation"]) for f in p["top_features"]]
        assert deviations == sorted(deviations, reverse=True)
    single = api.post("/predict?model=isolation_forest", json={"events": events[:1]}, headers=H).json()
    (p,) = single["predictions"]
    assert single["versions"].keys() == {"isolation_forest"}
    assert p["local_outlier_factor"] is None and p["ensemble"] is None and p["is_anomaly"] == p["if_flag"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"log_level": "LOUD"}, "log_level"),
        ({"ip_address": "999.1.1.1"}, "ip_address"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"metrics": {"error_rate": 1.5}}, "metrics"),
        ({"metrics": {"amount": "lots"}}, "metrics"),
        ({"message": None}, "message"),
    ],
)
def test_predict_rejects_bad_events_field_by_field(api, world, change, field):
    event = {**demo_events(world, 1)[0], **change}
    response = api.post("/predict", json={"events": [event]}, headers=H)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"][:4] == ["body", "events", 0, field] and error["msg"]
    assert "Traceback" not in response.text


def test_a_deviation_beyond_the_largest_number_is_null_as_the_schema_documents(api, world):
    # (1e308 - median) / IQR overflows to infinity, which JSON can only carry as null
    event = demo_events(world, 1)[0]
    event = {**event, "metrics": {**event.get("metrics", {}), "response_time_ms": 1e308}}
    response = api.post("/predict", params={"explain": "true"}, json={"events": [event]}, headers=H)
    assert response.status_code == 200, response.text
    top = response.json()["predictions"][0]["top_features"][0]
    assert top["feature"] == "response_time_ms" and top["value"] == 1e308 and top["deviation"] is None
    documented = api.get("/openapi.json").json()["components"]["schemas"]["Contribution"]
    assert {"type": "null"} in documented["properties"]["deviation"]["anyOf"]


def test_predict_error_codes(api, world):
    events = demo_events(world, 2)
    assert api.post("/predict", json={"events": []}, headers=H).status_code == 422
    assert (
        api.post(
            "/predict", content=b"{not json", headers={**H, "content-type": "application/json"}
        ).status_code
        == 422
    )
    duplicate = api.post("/predict", json={"events": [events[0], events[0]]}, headers=H)
    assert duplicate.status_code == 409 and "unique" in duplicate.json()["detail"]
    assert "409" in api.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]
    unknown = api.post("/predict?model=svm", json={"events": events}, headers=H)
    assert unknown.status_code == 404
    big = [{**events[0], "event_id": f"e{i}"} for i in range(MAX_BATCH + 1)]
    too_big = api.post("/predict", json={"events": big}, headers=H)
    assert too_big.status_code == 413 and str(MAX_BATCH) in too_big.json()["detail"]


# -- scores and incidents -----------------------------------------------------------------------------


def test_latest_scores_filter_and_paginate(api):
    page = api.get("/scores/latest", params={"limit": 5}, headers=H).json()
    assert page["total"] > 50_000 and len(page["items"]) == 5
    assert set(page["items"][0]) == set(ScoredEvent.model_fields)  # the documented shape, exactly
    times = [item["ts"] for item in page["items"]]
    assert times == sorted(times, reverse=True)
    nxt = api.get("/scores/latest", params={"limit": 5, "offset": 5}, headers=H).json()
    assert not {i["event_id"] for i in page["items"]} & {i["event_id"] for i in nxt["items"]}
    strong = api.get(
        "/scores/latest", params={"min_score": 0.99, "service": "auth-service"}, headers=H
    ).json()
    assert strong["total"] > 0
    assert all(i["ensemble_score"] >= 0.99 and i["source_service"] == "auth-service" for i in strong["items"])
    user = strong["items"][0]["user_id"]
    window = {"user": user, "since": f"{DEMO_DAY}T06:00:00Z", "until": f"{DEMO_DAY}T18:00:00+00:00"}
    mine = api.get("/scores/latest", params=window, headers=H).json()
    assert all(i["user_id"] == user and "T06" <= i["ts"][10:13] < "T18" for i in mine["items"])
    flagged = api.get("/scores/latest", params={"anomalies_only": True, "limit": 1000}, headers=H).json()
    assert all(i["is_anomaly"] for i in flagged["items"])
    # values are bound, never pasted into SQL
    injection = api.get("/scores/latest", params={"service": "x' OR '1'='1"}, headers=H).json()
    assert injection["total"] == 0
    assert api.get("/scores/latest", params={"limit": 0}, headers=H).status_code == 422


def test_incidents_filter_paginate_and_explain(api):
    page = api.get("/incidents", params={"limit": 1000}, headers=H).json()
    assert page["total"] > 0
    assert set(page["items"][0]) == set(IncidentSummary.model_fields)
    high = api.get("/incidents", params={"severity": "High"}, headers=H).json()
    assert all(i["severity"] == "High" for i in high["items"])
    assert api.get("/incidents", params={"severity": "Apocalyptic"}, headers=H).status_code == 422
    assert api.get("/incidents", params={"status": "closed"}, headers=H).json()["total"] == 0
    biggest = max(page["items"], key=lambda i: i["event_count"])
    detail = api.get(f"/incidents/{biggest['incident_id']}", headers=H).json()
    assert detail["event_count"] == biggest["event_count"]
    assert len(detail["events"]) == min(100, biggest["event_count"])
    cause = detail["root_cause"]
    assert cause["top_features"] and {"feature", "value", "normal", "deviation"} <= set(
        cause["top_features"][0]
    )
    assert cause["scenario"]["id"].startswith("BANK-") and detail["summary"].startswith(
        f"[{detail['severity']}]"
    )
    assert api.get("/incidents/INC-nope", headers=H).status_code == 404


def test_metrics_count_requests_per_route(api):
    api.get("/incidents/INC-nope", headers=H)
    text = api.get("/metrics", headers=H).text
    assert 'bankanom_api_requests_total{method="GET",route="/incidents/{incident_id}",status="404"}' in text
    assert 'bankanom_api_request_seconds_bucket{le="0.01",method="POST",route="/predict"}' in text
    assert 'bankanom_api_model_info{model="isolation_forest"' in text
    assert "bankanom_api_snapshot_age_seconds" in text


# -- rate limits --------------------------------------------------------------------------------------


def test_rate_limit_per_key_with_retry_after(world):
    with two_key_client(world, rate_limit="3/minute") as client:
        codes = [client.get("/models", headers=H).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/models", headers=H)
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        # another key has its own budget; /health has none
        assert client.get("/models", headers={"X-API-Key": OTHER_KEY}).status_code == 200
        assert all(client.get("/health").status_code == 200 for _ in range(5))


# -- serving beside Dagster ---------------------------------------------------------------------------


def _pipeline_env(world: Path) -> dict:
    return {**os.environ, "BANKANOM_DATA_DIR": str(world), "DAGSTER_HOME": str(world.parent / "dagster_home")}


def test_hot_reload_of_a_promotion_and_refusal_of_a_broken_one(api, world):
    registry = Registry(world / "models")
    before = registry.current()
    # a new version of each model: the promoted artifacts saved again (a real registry write)
    detectors = registry.load_current()
    fresh = {}
    for name, detector in detectors.items():
        m = registry.manifest(before[name])
        version = registry.save(
            detector,
            params=m["params"],
            window=tuple(m["training_window"].values()),
            rows=m["training_rows"],
            metrics=m["metrics"],
        )
        fresh[name] = version.version
    stop, failures, served = threading.Event(), [], set()

    def traffic():
        events = demo_events(world, 3)
        while not stop.is_set():
            r = api.post("/predict", json={"events": events}, headers=H)
            if r.status_code != 200:
                failures.append(r.status_code)
            else:
                served.add(r.json()["versions"]["isolation_forest"])
            stop.wait(PAUSE)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(0.5)
        registry.promote(fresh)
        deadline = time.monotonic() + 20
        while (
            api.get("/ready", headers=H).json()["models"]["isolation_forest"]["version"]
            != fresh["isolation_forest"]
        ):
            assert time.monotonic() < deadline, "the API did not pick up the promotion"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    assert failures == [] and served == {before["isolation_forest"], fresh["isolation_forest"]}

    # a promoted version whose artifact was tampered with is refused; the previous one keeps serving
    broken = registry.save(
        detectors["isolation_forest"], params={}, window=("2026-01-05", "2026-01-05"), rows=1, metrics={}
    )
    with (broken.path / "model.skops").open("ab") as f:
        f.write(b"tampered")
    registry.promote({"isolation_forest": broken.version})
    deadline = time.monotonic() + 20
    while not (ready := api.get("/ready", headers=H).json())["problems"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "checksum" in " ".join(ready["problems"])
    assert ready["models"]["isolation_forest"]["version"] == fresh["isolation_forest"]
    assert api.post("/predict", json={"events": demo_events(world, 1)}, headers=H).status_code == 200
    registry.promote(fresh)


def test_no_failed_request_while_the_pipeline_writes_then_api_and_pipeline_agree(api, world):
    """A small new day goes through pipeline_job (a real Dagster run writing the warehouse, then
    publishing a snapshot) while clients keep calling the API; afterwards the API serves the new
    snapshot, and POST /predict on that day's events gives the scores the pipeline stored."""
    env = _pipeline_env(world)
    cli = [sys.executable, "-m", "bankanom_pipeline.cli"]
    config = _load(None).model_copy(update={"seed": 9})  # what `bankanom generate --seed 9` writes
    write_range(Generator(config), world / "landing" / "logs", _epoch(NEW_DAY), events=1500)
    before = api.get("/ready", headers=H).json()["snapshot"]["file"]
    stop, failures, calls = threading.Event(), [], [0]
    events = demo_events(world, 5)

    def traffic(path: str):
        while not stop.is_set():
            r = (
                api.post(path, json={"events": events}, headers=H)
                if path == "/predict"
                else api.get(path, headers=H)
            )
            calls[0] += 1
            if r.status_code != 200:
                failures.append((path, r.status_code, r.text[:200]))
            stop.wait(PAUSE)

    threads = [
        threading.Thread(target=traffic, args=(p,)) for p in ("/predict", "/incidents", "/scores/latest")
    ]
    for t in threads:
        t.start()
    try:
        run = subprocess.run(
            [*cli, "run", "--job", "pipeline_job", "--date", NEW_DAY],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        deadline = time.monotonic() + 20
        while api.get("/ready", headers=H).json()["snapshot"]["file"] == before:
            assert time.monotonic() < deadline, "the API did not pick up the new snapshot"
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert failures == [] and calls[0] > 20

    latest = api.get("/scores/latest", params={"limit": 1}, headers=H).json()
    assert latest["items"][0]["partition_date"] == NEW_DAY

    con = duckdb.connect(str(world / "warehouse.duckdb"), read_only=True)
    try:
        validated = accepted_lines(con, NEW_DAY)
        stored = {
            row[0]: row[1:]
            for row in con.execute(
                "SELECT event_id, if_score, lof_score, ensemble_score, is_anomaly FROM scored_events "
                "WHERE partition_date = ?",
                [NEW_DAY],
            ).fetchall()
        }
    finally:
        con.close()
    assert len(validated) == len(stored) > 1000
    # the day posted as one batch, without the API's state (the day before has no events: the pipeline's
    # windows read nothing back either)
    body = api.post("/predict", params={"context": "false"}, json={"events": validated}, headers=H).json()
    for p in body["predictions"]:
        if_score, lof_score, ensemble_score, is_anomaly = stored[p["event_id"]]
        assert p["isolation_forest"] == pytest.approx(if_score, abs=1e-9)
        assert p["local_outlier_factor"] == pytest.approx(lof_score, abs=1e-9)
        assert p["ensemble"] == pytest.approx(ensemble_score, abs=1e-9)
        assert p["is_anomaly"] == is_anomaly


def test_a_broken_snapshot_is_refused_and_the_previous_one_keeps_serving(api, world):
    root = world / "snapshots"
    good = snapshot.SnapshotPublisher(root).current()
    broken = {**good, "file": "snapshot-does-not-exist.duckdb"}
    (root / snapshot.CURRENT).write_text(json.dumps(broken))
    try:
        deadline = time.monotonic() + 20
        while True:
            ready = api.get("/ready", headers=H).json()
            if any(p.startswith("snapshot:") for p in ready["problems"]):
                break
            assert time.monotonic() < deadline, "the broken snapshot was not reported"
            time.sleep(0.2)
        assert ready["snapshot"]["file"] == good["file"]
        assert api.get("/incidents", headers=H).status_code == 200
    finally:
        (root / snapshot.CURRENT).write_text(json.dumps(good))


def test_readme_curl_examples_work(api, world, tmp_path):
    """Every curl line of docs/api.md's examples, run as written against a real uvicorn server (only the
    key, the address and the incident id are substituted); curl -f fails on any HTTP error."""
    readme = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    block = readme.split('K="X-API-Key: change-me"', 1)[1].split("```", 1)[0]
    incident = api.get("/incidents", params={"limit": 1}, headers=H).json()["items"][0]["incident_id"]
    (tmp_path / "data").symlink_to(world)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    limits = {
        "BANKANOM_API_MAX_BATCH": str(MAX_BATCH),
        "BANKANOM_INGEST_KEYS": "ingest-me",
        # a live store of its own: the module's in-process stream owns the world's
        "BANKANOM_LIVE_DIR": str(tmp_path / "live"),
    }
    with running_api(world, KEY, tmp_path / "api.log", stream=True, **limits) as url:
        script = (
            (f'set -euo pipefail\nK="X-API-Key: {KEY}"' + block.replace("curl -s ", "curl -sf "))
            .replace("http://127.0.0.1:8080", url)
            .replace("INC-20261124-3fa9c1d2e4", incident)
        )
        result = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert script.count("curl -sf") == 12
    assert '"predictions"' in result.stdout and "bankanom_api_requests_total" in result.stdout
