"""The mock server as a real process on a free port, driven over HTTP."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from bankanom_pipeline.ingest.raw_logs import landing_files, load_partition
from bankanom_pipeline.ports import free_port
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse

pytestmark = pytest.mark.e2e


def _wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def server(tmp_path):
    port = free_port()
    landing = tmp_path / "landing"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bankanom_pipeline.cli",
            "mock-server",
            "--port",
            str(port),
            "--landing",
            str(landing),
            "--rotate-seconds",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    def healthy():
        try:
            return client.get("/health").status_code == 200
        except httpx.TransportError:
            assert process.poll() is None, process.stderr.read().decode()
            return False

    _wait_until(healthy, 60, "the mock server to answer")
    yield client, landing / "logs"
    client.close()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=20)


def test_control_api_and_atomic_rotating_files(server):
    client, logs_root = server
    status = client.get("/").json()
    assert status["status"] == "stopped" and status["events_emitted"] == 0
    assert len(status["enabled_scenarios"]) == 16
    assert client.get("/health").json() == {"status": "healthy"}

    bad = client.post("/control", json={"action": "explode"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "action"]
    assert client.post("/control", json={"action": "start", "logs_per_second": -5}).status_code == 422
    assert client.post("/control", json={"action": "start", "anomaly_rate": 2}).status_code == 422

    started = client.post("/control", json={"action": "start", "logs_per_second": 300, "anomaly_rate": 0.2})
    assert started.status_code == 200 and started.json()["status"] == "running"
    _wait_until(lambda: client.get("/").json()["events_emitted"] >= 600, 30, "events to be emitted")
    _wait_until(lambda: client.get("/").json()["files_published"] >= 2, 30, "a file to be rotated")
    logs = client.get("/logs", params={"limit": 50}).json()
    assert len(logs) == 50
    assert {"timestamp", "event_id", "anomaly_details", "metrics"} <= set(logs[0])
    assert client.get("/logs", params={"limit": 0}).status_code == 422

    stopped = client.post("/control", json={"action": "stop"}).json()
    assert stopped["status"] == "stopped"
    emitted = stopped["events_emitted"]
    time.sleep(0.5)
    assert client.get("/").json()["events_emitted"] == emitted, "nothing is emitted after stop"

    days = sorted(p.name for p in logs_root.iterdir())
    files = [f for day in days for f in landing_files(logs_root / day)]
    assert len(files) >= 2, "files rotate every second"
    assert not [p for p in logs_root.rglob(".*")], "no half-written file is left behind"
    lines = [line for f in files for line in f.read_bytes().splitlines()]
    assert len(lines) == emitted
    records = [orjson.loads(line) for line in lines]
    anomalous = sum(r["anomaly_details"]["is_anomaly"] for r in records)
    assert anomalous > 0

    con = EmbeddedWarehouse(Path(logs_root).parent.parent / "w.duckdb").connect()
    loaded = sum(load_partition(con, logs_root, day).loaded for day in days)
    assert loaded == emitted
