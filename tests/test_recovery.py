"""Dead runs: how a run's process is told alive or dead, and the daemon's dead_run_sensor on a real
instance (SQLite under a tmp DAGSTER_HOME, the committed concurrency pools) with run records whose
processes are gone. The CLI's side, with real runs killed mid-step, is in test_crash_recovery.py."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster._core.events import EngineEventData
from dagster._core.remote_origin import (
    GrpcServerCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)

from bankanom_pipeline.defs.automation import recovery
from bankanom_pipeline.defs.automation.sensors import dead_run_sensor

ROOT = Path(__file__).resolve().parent.parent
DAY = "2026-02-03"


def _dead_process() -> psutil.Process:
    """A process that has exited and been reaped, read while it ran (its pid and start time)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    process = psutil.Process(child.pid)
    process.create_time()  # psutil caches it: read while alive
    child.kill()
    child.wait()
    return process


def test_a_worker_is_alive_only_while_its_own_process_runs():
    me = psutil.Process()
    assert recovery.Worker(me.pid, socket.gethostname(), me.create_time(), exact=True).alive()
    gone = _dead_process()
    assert not recovery.Worker(gone.pid, socket.gethostname(), gone.create_time(), exact=True).alive()
    # the pid now belongs to another process (started at another time): the run's process is gone
    assert not recovery.Worker(me.pid, socket.gethostname(), me.create_time() - 60, exact=True).alive()
    # known from an event written at some time: a process started after it is not the run's
    assert recovery.Worker(me.pid, socket.gethostname(), me.create_time() + 5, exact=False).alive()
    assert not recovery.Worker(me.pid, socket.gethostname(), me.create_time() - 60, exact=False).alive()


@pytest.fixture
def instance(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")  # the duckdb pool, limit 1
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.event_log_storage.initialize_concurrency_limit_to_default("duckdb")
        yield instance


def _run(instance, tags: dict[str, str], origin: RemoteJobOrigin | None = None) -> dg.DagsterRun:
    run = dg.DagsterRun(
        job_name="pipeline_job",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags={"dagster/partition": DAY, **tags},
        remote_job_origin=origin,
    )
    instance.add_run(run)
    return run


def _cli_tags(process: psutil.Process) -> dict[str, str]:
    return {
        recovery.PID_TAG: str(process.pid),
        recovery.HOST_TAG: socket.gethostname(),
        recovery.STARTED_TAG: repr(process.create_time()),
    }


def _claimed(instance, step: str = "scored_events") -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots}


def test_the_sensor_marks_a_dead_cli_run_failed_and_frees_its_slot_and_leaves_live_runs(instance):
    dead = _run(instance, _cli_tags(_dead_process()))
    assert instance.event_log_storage.claim_concurrency_slot(
        "duckdb", dead.run_id, "scored_events"
    ).is_claimed
    live = _run(instance, _cli_tags(psutil.Process()))
    elsewhere = _run(instance, {**_cli_tags(_dead_process()), recovery.HOST_TAG: "another-host"})

    result = dead_run_sensor(dg.build_sensor_context(instance=instance))

    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert _claimed(instance) == set()
    assert f"cleaned up run {dead.run_id} (pipeline_job {DAY})" in result.skip_reason.skip_message
    assert "freed pool duckdb slot (step scored_events)" in result.skip_reason.skip_message
    failure = instance.get_records_for_run(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    assert "marked failed by dead_run_sensor" in failure[0].event_log_entry.dagster_event.message
    # a live process, or one on a host this one cannot see, is left alone
    assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED
    assert instance.get_run_by_id(elsewhere.run_id).status == dg.DagsterRunStatus.STARTED
    again = dead_run_sensor(dg.build_sensor_context(instance=instance))
    assert again.skip_reason.skip_message == "no run whose process died"


def test_the_sensor_cleans_a_dead_daemon_launched_run_from_its_workers_pid(instance, monkeypatch):
    """A run the daemon launched through the default run launcher carries no bankanom tags: its worker
    is known from the pid in Dagster's "Started process for run" engine event."""
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            GrpcServerCodeLocationOrigin(host="localhost", port=4000, location_name="bankanom"),
            "__repository__",
        ),
        "pipeline_job",
    )
    gone = _dead_process()
    run = _run(instance, {}, origin)
    instance.report_engine_event(
        f"Started process for run (pid: {gone.pid}).", run, EngineEventData.in_process(gone.pid)
    )
    instance.event_log_storage.claim_concurrency_slot("duckdb", run.run_id, "raw_logs")
    live = _run(instance, {}, origin)
    me = psutil.Process().pid
    instance.report_engine_event(
        f"Started process for run (pid: {me}).", live, EngineEventData.in_process(me)
    )

    # on a shared (Postgres) instance a CLI elsewhere cannot see the code server's processes
    monkeypatch.setattr(recovery, "_local", lambda instance: False)
    assert recovery.clean_dead_runs(instance, by="a CLI") == []
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED

    dead_run_sensor(dg.build_sensor_context(instance=instance))  # the sensor runs in the code server

    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert _claimed(instance) == set()
    assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED


def test_the_sensor_frees_slots_a_finished_run_still_holds(instance):
    run = _run(instance, _cli_tags(psutil.Process()))
    instance.event_log_storage.claim_concurrency_slot("duckdb", run.run_id, "incidents")
    instance.report_run_failed(run)  # ended without freeing its slot (it was interrupted in the step)

    dead_run_sensor(dg.build_sensor_context(instance=instance))

    assert _claimed(instance) == set()


def test_the_sensor_writes_in_a_waiting_runs_event_log_which_run_holds_the_pool(instance):
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            GrpcServerCodeLocationOrigin(host="localhost", port=4000, location_name="bankanom"),
            "__repository__",
        ),
        "pipeline_job",
    )
    holder = _run(instance, _cli_tags(psutil.Process()))
    instance.event_log_storage.claim_concurrency_slot("duckdb", holder.run_id, "scored_events")
    waiting = _run(instance, {}, origin)
    assert not instance.event_log_storage.claim_concurrency_slot(
        "duckdb", waiting.run_id, "raw_logs"
    ).is_claimed

    context = dg.build_sensor_context(instance=instance)
    result = dead_run_sensor(context)
    dead_run_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))  # said once only

    said = [
        r.event_log_entry.dagster_event.message
        for r in instance.get_records_for_run(
            waiting.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT
        ).records
    ]
    assert said == [
        f"step raw_logs is waiting for pool duckdb, held by run {holder.run_id} "
        f"(pipeline_job {DAY}, pid {psutil.Process().pid})"
    ]


def test_bankanom_runs_shows_a_dead_run_and_the_slot_it_holds(instance, monkeypatch):
    from typer.testing import CliRunner

    from bankanom_pipeline.cli import app

    dead = _run(instance, _cli_tags(gone := _dead_process()))
    instance.event_log_storage.claim_concurrency_slot("duckdb", dead.run_id, "scored_events")
    monkeypatch.setenv("DAGSTER_HOME", instance.root_directory)

    result = CliRunner().invoke(app, ["runs"])

    assert result.exit_code == 0, result.output
    assert (
        f"run {dead.run_id} pipeline_job {DAY} STARTED, pid {gone.pid} on {socket.gethostname()}: DEAD\n"
        "  holds pool duckdb slot (step scored_events)\n"
    ) in result.output
    assert dead_run_sensor(dg.build_sensor_context(instance=instance)).skip_reason  # cleaned: none left
    assert "0 unfinished runs" in CliRunner().invoke(app, ["runs"]).output


def test_the_sensor_cleans_an_untagged_in_process_run_of_a_local_instance(instance):
    """A run executed in process without bankanom's tags (by a bankanom from before them, or another
    program) on a local (SQLite) instance: its process is known from the executor's engine event."""
    gone = _dead_process()
    run = _run(instance, {})
    instance.report_engine_event(
        f"Executing steps in process (pid: {gone.pid})", run, EngineEventData.in_process(gone.pid)
    )
    instance.event_log_storage.claim_concurrency_slot("duckdb", run.run_id, "scored_events")

    dead_run_sensor(dg.build_sensor_context(instance=instance))

    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert _claimed(instance) == set()
