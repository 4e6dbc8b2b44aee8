"""Automation end to end, with real processes: `bankanom up` starts the Dagster UI and daemon, the mock
log server and the API; the daemon turns live traffic into scores and incidents with no manual trigger;
Ctrl-C stops everything. And a backfill from the CLI.

What needs no daemon is proven in the fast tier, on the real definitions: the landing sensor's requests
and cursor (test_automation.py), which assets a new or late partition re-runs (test_late_day.py), the
run record (test_runs.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from dagster._core.instance.ref import InstanceRef
from typer.testing import CliRunner

from bankanom_pipeline.automation import run_records
from bankanom_pipeline.cli import app
from tests import tiny_platform
from tests.api_server import free_port
from tests.servers import PROJECT_ROOT, start, stop

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "bankanom_pipeline.cli"]


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


def new_world(root: Path, demo=None) -> tuple[Path, Path, dict]:
    """A data folder (with a copy of the demo's models and warehouse when ``demo`` is given) and an
    empty Dagster instance with the committed dagster.yaml (the duckdb pool)."""
    data = root / "data"
    data.mkdir()
    if demo is not None:
        _, _, demo_data = demo
        shutil.copytree(demo_data / "models", data / "models")
        shutil.copy(demo_data / "warehouse.duckdb", data / "warehouse.duckdb")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    with instance_at(home):  # create the instance's storage now, not in a race with the daemon
        pass
    names = ("BANKANOM_", "DAGSTER_HOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(names)}
    return data, home, {**env, "BANKANOM_DATA_DIR": str(data), "DAGSTER_HOME": str(home)}


def landing_runs(instance: dg.DagsterInstance, day: str) -> list:
    """The runs the landing sensor requested for ``day``'s files (appends carry the day as a tag)."""
    return instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/sensor_name": "landing_sensor", "bankanom/day": day})
    )


def all_runs_done(instance: dg.DagsterInstance) -> bool:
    return all(r.is_finished for r in instance.get_runs())


def emit(mock: str, seconds: float) -> None:
    """Let the mock server write live traffic for a while; stopping it publishes the file."""
    assert httpx.post(f"{mock}/control", json={"action": "start", "logs_per_second": 300}).status_code == 200
    time.sleep(seconds)
    assert httpx.post(f"{mock}/control", json={"action": "stop"}).status_code == 200


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _failures(instance: dg.DagsterInstance) -> str:
    failed = [r for r in instance.get_runs() if r.status != dg.DagsterRunStatus.SUCCESS]
    return json.dumps([(r.job_name, r.tags.get("dagster/partition"), str(r.status)) for r in failed])


@pytest.mark.timeout(1200)  # bounded by its own waits; several Dagster runs on two cores
def test_up_runs_the_daemon_that_turns_live_mock_traffic_into_incidents_and_ctrl_c_stops_it(demo, tmp_path):
    """One `bankanom up` session: the daemon it starts (dagster dev) is the one the scenario needs, and
    its mock server is the traffic source."""
    root, home, env = new_world(tmp_path, demo)
    env = {**env, "BANKANOM_SENSOR_INTERVAL_SECONDS": "3", "BANKANOM_API_KEYS": "k"}
    ports = {"ui": free_port(), "mock": free_port(), "api": free_port(), "stream": free_port()}
    # the mock server emits from the start; one file, published when the test stops it
    options = [f"--{name}-port={port}" for name, port in ports.items()] + ["--rotate-seconds=3600"]
    up = start([*CLI, "up", *options], env, tmp_path / "up.log")
    mock = f"http://127.0.0.1:{ports['mock']}"
    try:
        for url in (
            f"http://127.0.0.1:{ports['ui']}/server_info",
            f"{mock}/health",
            f"http://127.0.0.1:{ports['api']}/health",
        ):
            wait_for(url, lambda u=url: _up(u), 180)
        instance = instance_at(home)
        day = dt.datetime.now(dt.UTC).date().isoformat()

        # live traffic lands; today is open, so the sensor appends the file to today's raw_logs (the
        # stream scores it live; the whole day is re-run once it closes: test_automation.py)
        emit(mock, 4)
        wait_for("the landing sensor's run", lambda: landing_runs(instance, day), 180)
        wait_for("runs to finish", lambda: all_runs_done(instance), 300)
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs()), _failures(instance)
        emitted = httpx.get(mock).json()["events_emitted"]
        with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
            loaded = con.execute(
                "SELECT (SELECT count(*) FROM raw_logs WHERE partition_date = $d), "
                "(SELECT count(*) FROM validated_logs WHERE partition_date = $d)",
                {"d": day},
            ).fetchone()
        assert loaded[0] == emitted > 100 and loaded[1] > 0.9 * emitted
        time.sleep(8)  # a few more sensor ticks: nothing new must be requested
        assert len(landing_runs(instance, day)) == 1
        assert all_runs_done(instance)
        # the demo's days already in the warehouse were untouched: nothing ran for them
        assert {r.job_name for r in instance.get_runs()} == {"landing_append_job"}
        # run_record_sensor lists the daemon's runs for the console (no CLI run has happened yet)
        landed = {(r.run_id, "landing_append_job", "SUCCESS") for r in landing_runs(instance, day)}

        def recorded():
            listed = run_records.latest(root / "published", limit=100) or []
            return landed <= {(r["run_id"], r["job"], r["status"]) for r in listed}

        wait_for("the daemon's runs in pipeline_runs", recorded, 120)

        # a failing CLI run (executed in process, no code location) lands in pipeline_alerts; the CLI app
        # runs in this test's process (tests/tiny_platform.py), which has Dagster imported already
        code, printed = tiny_platform.bankanom(env, "train", "--end-date", "1999-01-01")
        assert code == 1 and "failed" in printed, printed[-2000:]
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

        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert up.wait(timeout=60) == 0, (tmp_path / "up.log").read_text()[-3000:]
        for port in ports.values():
            assert not _up(f"http://127.0.0.1:{port}/health"), f"port {port} still answers"
    finally:
        stop(up)


DAYS = ["2026-02-01", "2026-02-02", "2026-02-03"]


def test_backfill_from_the_cli_runs_and_records_every_day(tmp_path):
    """Each day its own recorded Dagster run of the real definitions, by `bankanom backfill` with no
    daemon: the UI's run list and materialized partitions, and the console's run record. The CLI app
    runs in this test's process (tests/tiny_platform.py), which has Dagster imported already."""
    root, home, env = new_world(tmp_path)
    landing = root / "landing"
    for i, day in enumerate(DAYS):  # a tiny day each (--events writes that many from --start on)
        made = CliRunner().invoke(
            app,
            ["generate", "--start", day, "--events", "300", "--seed", str(21 + i), "--landing", str(landing)],
        )
        assert made.exit_code == 0, made.output
    code, printed = tiny_platform.bankanom(
        env, "backfill", "--start", DAYS[0], "--end", DAYS[-1], "--job", "features_job"
    )
    assert code == 0, printed[-3000:]
    assert f"{len(DAYS)} of {len(DAYS)} partitions succeeded" in printed
    with instance_at(home) as instance:
        runs = instance.get_runs(
            filters=dg.RunsFilter(job_name="features_job", statuses=[dg.DagsterRunStatus.SUCCESS])
        )
        # one run per day, in the order asked (get_runs is newest first)
        assert [r.tags["dagster/partition"] for r in reversed(runs)] == DAYS
        # what the UI's asset page shows as materialized partitions
        assert set(DAYS) <= instance.get_materialized_partitions(dg.AssetKey("features_events"))
    # each CLI run recorded itself for the console's run list, with no daemon running
    listed = run_records.latest(root / "published", limit=100)
    assert sorted((r["job"], r["partition"], r["status"]) for r in listed) == [
        ("features_job", day, "SUCCESS") for day in DAYS
    ]
    assert {r["run_id"] for r in listed} == {r.run_id for r in runs}
