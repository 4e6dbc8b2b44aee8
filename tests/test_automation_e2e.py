"""Automation end to end, with real processes: the Dagster daemon and the mock log server turn live
traffic into scores and incidents with no manual trigger; a backfill from the CLI; `bankanom up`."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from dagster._core.instance.ref import InstanceRef

from bankanom_pipeline.automation import run_records
from bankanom_pipeline.serving import snapshot
from tests.api_server import free_port
from tests.servers import PROJECT_ROOT, start, stop

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "bankanom_pipeline.cli"]
BIN = Path(sys.executable).parent


def wait_for(what: str, check, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def instance_at(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


@pytest.fixture
def world(demo, tmp_path):
    """A copy of the demo's models and warehouse, and an empty Dagster instance with the committed
    dagster.yaml (the duckdb pool)."""
    _, _, data = demo
    root = tmp_path / "data"
    root.mkdir()
    shutil.copytree(data / "models", root / "models")
    shutil.copy(data / "warehouse.duckdb", root / "warehouse.duckdb")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with instance_at(home):  # create the instance's storage now, not in a race with the daemon
        pass
    env = {**os.environ, "BANKANOM_DATA_DIR": str(root), "DAGSTER_HOME": str(home)}
    return root, home, env


def landing_runs(instance: dg.DagsterInstance, day: str) -> list:
    return instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/sensor_name": "landing_sensor", "dagster/partition": day})
    )


def all_runs_done(instance: dg.DagsterInstance) -> bool:
    return all(r.is_finished for r in instance.get_runs())


def published_rows(root: Path, day: str) -> tuple[int, int]:
    pointer = snapshot.SnapshotPublisher(root / "snapshots").current()
    if pointer is None:
        return 0, 0
    with duckdb.connect(str(root / "snapshots" / pointer["file"]), read_only=True) as con:
        events = con.execute("SELECT count(*) FROM scored_events WHERE partition_date = ?", [day]).fetchone()[
            0
        ]
        incidents = con.execute("SELECT count(*) FROM incidents WHERE partition_date = ?", [day]).fetchone()[
            0
        ]
    return events, incidents


def emit(mock: str, seconds: float) -> None:
    """Let the mock server write live traffic for a while; stopping it publishes the file."""
    assert httpx.post(f"{mock}/control", json={"action": "start", "logs_per_second": 300}).status_code == 200
    time.sleep(seconds)
    assert httpx.post(f"{mock}/control", json={"action": "stop"}).status_code == 200


@pytest.mark.timeout(1500)  # bounded by its own waits; several Dagster runs on two cores
def test_daemon_turns_live_mock_traffic_into_incidents_without_a_trigger(world, tmp_path):
    root, home, env = world
    env = {**env, "BANKANOM_SENSOR_INTERVAL_SECONDS": "3"}
    port = free_port()
    daemon = start([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, tmp_path / "daemon.log")
    mock_server = start(
        [*CLI, "mock-server", "--port", str(port), "--rotate-seconds", "3600"], env, tmp_path / "mock.log"
    )
    mock = f"http://127.0.0.1:{port}"
    try:
        wait_for("the mock server", lambda: _up(f"{mock}/health"), 60)
        instance = instance_at(home)
        day = dt.datetime.now(dt.UTC).date().isoformat()

        # 1. live traffic lands; the sensor runs features_job, automation scores it and builds incidents
        emit(mock, 4)
        wait_for("the landing sensor's run", lambda: landing_runs(instance, day), 180)
        events, _ = wait_for(
            "scores and incidents in a published snapshot",
            lambda: (rows := published_rows(root, day))[0] > 0 and rows[1] > 0 and rows,
            300,
        )
        assert events > 100
        wait_for("runs to finish", lambda: all_runs_done(instance), 300)
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs()), _failures(instance)

        # 2. a second file for the same partition: exactly one more sensor run, and fresh scores
        emit(mock, 3)
        wait_for("the second sensor run", lambda: len(landing_runs(instance, day)) == 2, 180)
        wait_for("the new file's scores, published", lambda: published_rows(root, day)[0] > events, 300)
        wait_for("runs to finish", lambda: all_runs_done(instance), 300)
        time.sleep(8)  # a few more sensor ticks: nothing new must be requested
        assert len(landing_runs(instance, day)) == 2
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs()), _failures(instance)
        # the demo's days already in the warehouse were untouched: nothing ran for them
        assert {r.tags.get("dagster/partition") for r in instance.get_runs()} == {day}
        # run_record_sensor lists the daemon's runs for the console (no CLI run has happened yet)
        landed = {(r.run_id, "features_job", "SUCCESS") for r in landing_runs(instance, day)}

        def recorded():
            listed = run_records.latest(root / "published", limit=100) or []
            return landed <= {(r["run_id"], r["job"], r["status"]) for r in listed}

        wait_for("the daemon's runs in pipeline_runs", recorded, 120)

        # 3. a failing run lands in pipeline_alerts
        failing = subprocess.run(
            [*CLI, "train", "--end-date", "1999-01-01"], env=env, capture_output=True, text=True, timeout=300
        )
        assert "failed" in failing.stdout
        failed_run = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))[0]

        def alerted():
            db = root / "alerts.duckdb"
            if not db.exists():
                return None
            try:
                with duckdb.connect(str(db), read_only=True) as con:
                    return con.execute(
                        "SELECT job_name FROM pipeline_alerts WHERE run_id = ?", [failed_run.run_id]
                    ).fetchall()
            except duckdb.IOException:  # the sensor is writing it right now
                return None
            except duckdb.CatalogException:  # the file holds pipeline_runs, no alert yet
                return None

        assert wait_for("the failure alert", alerted, 120) == [("train_job",)]
    finally:
        stop(mock_server)
        stop(daemon)


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _failures(instance: dg.DagsterInstance) -> str:
    failed = [r for r in instance.get_runs() if r.status != dg.DagsterRunStatus.SUCCESS]
    return json.dumps([(r.job_name, r.tags.get("dagster/partition"), str(r.status)) for r in failed])


def test_backfill_of_seven_days_from_the_cli(world):
    _, home, env = world
    for i in range(1, 8):  # a small day each (--events writes that many from --start on)
        subprocess.run(
            [*CLI, "generate", "--start", f"2026-02-0{i}", "--events", "1000", "--seed", str(20 + i)],
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
    result = subprocess.run(
        [*CLI, "backfill", "--start", "2026-02-01", "--end", "2026-02-07", "--job", "features_job"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "7 of 7 partitions succeeded" in result.stdout
    instance = instance_at(home)
    days = {f"2026-02-0{i}" for i in range(1, 8)}
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name="features_job", statuses=[dg.DagsterRunStatus.SUCCESS])
    )
    assert {r.tags["dagster/partition"] for r in runs} == days
    # what the UI's asset page shows as materialized partitions
    assert days <= instance.get_materialized_partitions(dg.AssetKey("features_events"))


def test_up_starts_everything_and_ctrl_c_stops_it(world, tmp_path):
    _, _, env = world
    ports = {"ui": free_port(), "mock": free_port(), "api": free_port()}
    up = start(
        [
            *CLI,
            "up",
            "--ui-port",
            str(ports["ui"]),
            "--mock-port",
            str(ports["mock"]),
            "--api-port",
            str(ports["api"]),
        ],
        {**env, "BANKANOM_API_KEYS": "k"},
        tmp_path / "up.log",
    )
    try:
        for url in (
            f"http://127.0.0.1:{ports['ui']}/server_info",
            f"http://127.0.0.1:{ports['mock']}/health",
            f"http://127.0.0.1:{ports['api']}/health",
        ):
            wait_for(url, lambda u=url: _up(u), 120)
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert up.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()[-3000:]
        for port in ports.values():
            assert not _up(f"http://127.0.0.1:{port}/health"), f"port {port} still answers"
    finally:
        stop(up)
