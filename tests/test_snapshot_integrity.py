"""What the API serves is what was published: a snapshot's sha256 is recorded in current.json at publish
and verified before the API swaps it in; a snapshot or model that fails is refused, reported by /ready
and in the 503s (which one, why), and whatever was serving before keeps serving."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

from bankanom_pipeline.detection.registry import ARTIFACT, MANIFEST, Registry
from bankanom_pipeline.online.version import FEATURES_TABLE, current_version
from bankanom_pipeline.serving import snapshot
from tests.api_server import api_client

KEY = "integrity-key"
H = {"X-API-Key": KEY}
DAY = dt.date(2026, 1, 6)
PAGE = "SELECT * FROM scored_events ORDER BY ts DESC, event_id LIMIT 100"  # what /scores/latest reads
# a ~1 MB file (four of DuckDB's 256 KiB blocks): one of them holds data to corrupt (corrupt_a_data_block)
ROWS = 20_000


def warehouse(rows: int, seed: int) -> duckdb.DuckDBPyConnection:
    """An in-memory warehouse with the tables a snapshot serves the scores and incidents of."""
    con = duckdb.connect()
    con.execute(f"SELECT setseed({seed / 10})")
    con.execute(
        f"""CREATE TABLE scored_events AS SELECT DATE '{DAY}' AS partition_date, 'e' || i AS event_id,
                TIMESTAMP '{DAY}' + i * INTERVAL 100 millisecond AS ts, 'auth-service' AS source_service,
                'USR-' || (i % 500) AS user_id, '10.0.0.' || (i % 250) AS ip_address,
                NULL::VARCHAR AS correlation_id, random() AS if_score, random() AS lof_score,
                random() AS ensemble_score, false AS if_flag, false AS lof_flag, false AS is_anomaly,
                'if-v' AS if_version, 'lof-v' AS lof_version
            FROM range({rows}) AS t(i)"""
    )
    return con


def publish(root: Path, rows: int = ROWS, seed: int = 1) -> dict:
    con = warehouse(rows, seed)
    try:
        return snapshot.SnapshotPublisher(root).publish(con, DAY, 2)
    finally:
        con.close()


def corrupt_a_data_block(path: Path) -> None:
    """Flip one byte in a block of the file such that DuckDB still opens it and counts its rows (the
    API's old load check) but the scores page fails: the corruption the issue found served."""
    original = path.read_bytes()
    block, header = 256 * 1024, 3 * 4096  # DuckDB's block size, after its three header blocks
    for start in range(header, len(original) - block, block):
        damaged = bytearray(original)
        damaged[start + block // 2] ^= 0xFF
        path.write_bytes(damaged)
        if still_loads(path) and not _reads(path, PAGE):
            return
    path.write_bytes(original)
    raise AssertionError("no block found whose corruption passes the load check")


def _reads(path: Path, sql: str) -> bool:
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return False
    try:
        con.execute(sql).fetchall()
        return True
    except duckdb.Error:
        return False
    finally:
        con.close()


def still_loads(path: Path) -> bool:
    return _reads(path, "SELECT count(*) FROM scored_events")


def client_for(data: Path) -> TestClient:
    return api_client(data, KEY, reload_seconds=3600)  # the tests call refresh() themselves


def console_login(client: TestClient) -> str:
    """Log the client in to the console; returns the session's CSRF token."""
    form = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    client.post("/console/login", data={"csrf": csrf, "api_key": KEY, "next": "/console/incidents"})
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/console/predict").text).group(1)


def test_publish_records_the_snapshots_sha256(tmp_path):
    pointer = publish(tmp_path)
    file = tmp_path / pointer["file"]
    assert pointer["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert snapshot.SnapshotPublisher(tmp_path).current()["sha256"] == pointer["sha256"]
    assert not file.with_name(file.name + ".wal").exists()  # the checksum covers all of it


def test_a_corrupt_snapshot_is_refused_and_the_previous_one_keeps_serving(tmp_path):
    root = tmp_path / "snapshots"
    good = publish(root, seed=1)
    with client_for(tmp_path) as client:
        assert client.get("/scores/latest", headers=H).status_code == 200
        bad = publish(root, seed=2)
        corrupt_a_data_block(root / bad["file"])
        assert still_loads(root / bad["file"])  # the old check would have swapped it in
        client.app.state.serving.refresh()
        ready = client.get("/ready", headers=H).json()
        assert ready["snapshot"]["file"] == good["file"]
        problem = " ".join(ready["problems"])
        assert bad["file"] in problem and "checksum" in problem
        scores = client.get("/scores/latest", headers=H)
        assert scores.status_code == 200 and scores.json()["total"] == ROWS
        # the next good publication is taken
        newer = publish(root, seed=3)
        client.app.state.serving.refresh()
        ready = client.get("/ready", headers=H).json()
        assert ready["snapshot"]["file"] == newer["file"] and ready["problems"] == [
            "no promoted models loaded"
        ]


def test_a_cold_start_with_only_a_corrupt_snapshot_is_a_clear_503(tmp_path, caplog):
    root = tmp_path / "snapshots"
    bad = publish(root)
    corrupt_a_data_block(root / bad["file"])
    with caplog.at_level(logging.ERROR, logger="bankanom_api"), client_for(tmp_path) as client:
        for path in ("/scores/latest", "/incidents"):
            response = client.get(path, headers=H)
            assert response.status_code == 503, (path, response.text)
            detail = response.json()["detail"]
            assert bad["file"] in detail and "checksum" in detail and "no snapshot loaded" in detail
            assert "run pipeline_job" not in detail  # one was published: running it again says nothing
        ready = client.get("/ready", headers=H)
        assert ready.status_code == 503 and ready.json()["snapshot"] is None
        assert any(bad["file"] in p and "checksum" in p for p in ready.json()["problems"])
        # the console's pages that need the snapshot say the same
        console_login(client)
        listing = client.get("/console/incidents")
        assert bad["file"] in listing.text and "refused" in listing.text
        page = client.get("/console/incidents/INC-20260106-0001")
        assert page.status_code == 503 and bad["file"] in page.text and "checksum" in page.text
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert bad["file"] in logged and "still serving" not in logged


def test_a_snapshot_named_outside_its_folder_is_refused(tmp_path):
    root = tmp_path / "snapshots"
    pointer = publish(root)
    elsewhere = tmp_path / "elsewhere.duckdb"
    (root / pointer["file"]).rename(elsewhere)
    (root / snapshot.CURRENT).write_text(json.dumps({**pointer, "file": "../elsewhere.duckdb"}))
    with client_for(tmp_path) as client:
        assert client.get("/scores/latest", headers=H).status_code == 503
        assert "not a snapshot file" in " ".join(client.get("/ready", headers=H).json()["problems"])


def test_a_snapshot_published_before_checksums_is_served_with_a_warning(tmp_path, caplog):
    root = tmp_path / "snapshots"
    pointer = publish(root)
    legacy = {k: v for k, v in pointer.items() if k != "sha256"}
    (root / snapshot.CURRENT).write_text(json.dumps(legacy))
    with caplog.at_level(logging.WARNING, logger="bankanom_api"), client_for(tmp_path) as client:
        assert client.get("/scores/latest", headers=H).status_code == 200
    assert any("without a checksum" in r.getMessage() for r in caplog.records)


def broken_registry(models: Path, table: str = FEATURES_TABLE) -> str:
    """A registry whose promoted versions' artifacts do not match their manifests' checksums (trained on
    ``table``'s current features: the checksum is what is wrong with them)."""
    trained_on = {"features_table": table, "feature_set_version": current_version(table)}
    current = {}
    for name in ("isolation_forest", "local_outlier_factor"):
        version = f"{name}-20260106T000000-abcdef"
        folder = models / version
        folder.mkdir(parents=True)
        (folder / ARTIFACT).write_bytes(b"not the artifact that was saved")
        (folder / MANIFEST).write_text(
            json.dumps(
                {"name": name, "version": version, "artifact": ARTIFACT, "sha256": "0" * 64, **trained_on}
            )
        )
        current[name] = version
    (models / "current.json").write_text(json.dumps(current))
    return current["isolation_forest"]


def test_a_cold_start_with_a_corrupt_model_says_what_happened(tmp_path, caplog):
    version = broken_registry(tmp_path / "models")
    assert Registry(tmp_path / "models").current()
    with caplog.at_level(logging.ERROR, logger="bankanom_api"), client_for(tmp_path) as client:
        for response in (
            client.get("/models/isolation_forest", headers=H),
            client.post("/predict", headers=H, json={"events": [_event()]}),
        ):
            assert response.status_code == 503, response.text
            detail = response.json()["detail"]
            assert version in detail and "checksum" in detail and "no models loaded" in detail, detail
            assert "run train_job" not in detail
        problems = " ".join(client.get("/ready", headers=H).json()["problems"])
        assert version in problems and "checksum" in problems
        csrf = console_login(client)
        page = client.post("/console/predict/event", data={"csrf": csrf, "event": json.dumps(_event())})
        assert page.status_code == 503 and version in page.text and "checksum" in page.text
    logged = [r.getMessage() for r in caplog.records if version in r.getMessage()]
    assert logged and not any("still serving" in m for m in logged), logged
    assert any("no models loaded" in m for m in logged), logged


def _event() -> dict:
    return {
        "timestamp": "2026-01-06T00:00:00Z",
        "source_service": "auth-service",
        "log_level": "INFO",
        "event_id": "e1",
        "message": "hello",
    }


@pytest.mark.e2e
def test_verifying_a_large_snapshot_keeps_the_api_answering(tmp_path):
    """The reloader verifies a new snapshot's sha256 in its own thread (hashlib releases the GIL): while
    it hashes a large file, requests are answered from the previous snapshot."""
    import threading
    import time

    root = tmp_path / "snapshots"
    publish(root, rows=10_000)
    with client_for(tmp_path) as client:
        big = publish(root, rows=4_000_000, seed=4)
        size = (root / big["file"]).stat().st_size
        state = client.app.state.serving
        reload = threading.Thread(target=state.refresh)
        began = time.perf_counter()
        reload.start()
        latencies = []
        while reload.is_alive():
            t = time.perf_counter()
            assert client.get("/scores/latest", params={"limit": 1}, headers=H).status_code == 200
            latencies.append(time.perf_counter() - t)
        verified = time.perf_counter() - began
        reload.join()
        assert client.get("/ready", headers=H).json()["snapshot"]["file"] == big["file"]
    print(
        f"{size / 2**20:.0f} MiB verified and loaded in {verified:.2f} s; {len(latencies)} requests meanwhile, slowest {max(latencies) * 1000:.0f} ms"
    )
    assert latencies and max(latencies) < 1.0


def test_the_transaction_routes_say_which_transaction_model_failed(tmp_path):
    version = broken_registry(tmp_path / "models" / "transactions", "features_transactions")
    with client_for(tmp_path) as client:
        response = client.post("/models/predict", headers=H, json=[])
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        assert version in detail and "checksum" in detail and "no transaction models loaded" in detail
        assert "run transaction_train_job" not in detail
