"""A killed run never wedges the platform, for real: ``bankanom run`` is killed with SIGKILL inside each
step of pipeline_job (just before the step's write commits), and the plain CLI run after it must clean up
the dead run (mark it failed, free its duckdb pool slot, say so) and leave every table equal to an
uninterrupted run's. A run waiting for the pool says who holds it, goes on when the holder dies, and stops
on SIGTERM or SIGINT. Real DuckDB files, a real Dagster instance with the committed concurrency pools; the
runs killed, signalled or waiting are CLI processes of their own (forked by tests/fork_server.py, which
imported the heavy libraries once), the reruns and the reference run the CLI in the test's process
(tests/tiny_platform.py); a tiny day (~5k events)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import duckdb
import psutil
import pytest

from bankanom_pipeline.defs.automation import recovery
from tests import fork_server, tiny_platform
from tests.tiny_platform import DAY, ROOT, TRAIN_DAY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

# step of pipeline_job -> the write it is killed in (tests/crash_point.py pauses before it commits)
KILL_POINTS = {
    "raw_logs": "raw_logs",
    "validated_logs": "quarantine_logs",
    "features_events": "features_events",
    "scored_events": "scored_events",
    "incidents": "incidents",
    "api_snapshot": "current.json",
}


def _start(env: dict, log: Path, *args: str, module: str = "bankanom_pipeline.cli") -> fork_server.Child:
    """The CLI (or ``module``) in a process of its own, printing to ``log``: forked by the fork server
    (tests/fork_server.py), which has the heavy libraries imported already."""
    return fork_server.start(env, log, module, *args, cwd=ROOT)


def _wait_for(predicate, what: str, process: fork_server.Child, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, (
            f"exited {process.returncode} before {what}:\n{log.read_text()[-3000:]}"
        )
        assert time.monotonic() < deadline, f"no {what} in {timeout}s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def _instance(env: dict) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(env["DAGSTER_HOME"])


def _fingerprint(data: Path) -> dict:
    """Per table (day DAY's partition of the partitioned ones): rows, distinct rows, distinct keys, and
    an order-free hash of every value but the load times (columns named *_at)."""
    found = {}
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = 'main'"
        ).fetchall()
        for (table,) in sorted(tables):
            columns = [
                c
                for (c,) in con.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_catalog = "
                    "current_database() AND table_name = ? ORDER BY ordinal_position",
                    [table],
                ).fetchall()
            ]
            values = ", ".join(f'"{c}"' for c in columns if not c.endswith("_at"))
            key = next((c for c in ("event_id", "incident_id", "event_key") if c in columns), columns[0])
            where = "WHERE partition_date = ?" if "partition_date" in columns else ""
            found[table] = con.execute(
                f'SELECT count(*), count(DISTINCT row({values})), count(DISTINCT "{key}"), '
                f'sum(hash({values})::HUGEINT) FROM "{table}" {where}',
                [DAY] if where else [],
            ).fetchone()
    pointer = json.loads((data / "snapshots" / "current.json").read_text())
    assert (data / "snapshots" / pointer["file"]).exists()
    found["snapshot rows"] = pointer["rows"]
    return found


def _scores(data: Path) -> dict:
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT event_id, if_score, lof_score, ensemble_score FROM scored_events WHERE partition_date = ?",
            [DAY],
        ).fetchall()
    return {event: scores for event, *scores in rows}


def _kill_mid_step(env: dict, base: Path, step: str) -> int:
    """``bankanom run`` of DAY on a copy of ``base``, killed with SIGKILL paused inside ``step``; its pid."""
    data = Path(env["BANKANOM_DATA_DIR"])
    shutil.copytree(base, data)
    marker, log = data.parent / f"{step}.paused", data.parent / f"{step}-killed.log"
    crash = {**env, "CRASH_AT": KILL_POINTS[step], "CRASH_MARKER": str(marker)}
    killed = _start(crash, log, "run", "--date", DAY, module="tests.crash_point")
    try:
        _wait_for(marker.exists, f"pause in {step}", killed, log)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    return killed.pid


@pytest.fixture(scope="module")
def platform(tiny_world, tmp_path_factory, request):
    """The tiny platform (tests/tiny_platform.py), the reference (pipeline_job on a copy of it,
    uninterrupted: the ``tiny_day_run`` fixture) and the kill cases' killed runs. Those run one after
    another on a thread beside the tests, each in its own data folder and Dagster instance, so a test
    reruns one case while the next case's run is on its way to its pause."""
    root = tmp_path_factory.mktemp("crash")

    def env(name: str, home: str | None = None) -> dict:
        return tiny_platform.cli_env(root / name, tiny_world / "landing", root / f"{home or name}-home")

    kill_test = test_a_run_killed_mid_step_is_cleaned_up_by_the_next_plain_run_with_equal_results
    steps = [item.callspec.params["step"] for item in request.session.items if item.obj is kill_test]
    killer = ThreadPoolExecutor(max_workers=1)
    killed = {step: killer.submit(_kill_mid_step, env(step), tiny_world / "base", step) for step in steps}
    try:
        reference = request.getfixturevalue("tiny_day_run")  # while the first case's run gets ready
        yield {
            "env": env,
            "base": tiny_world / "base",
            "killed": killed,
            "reference": _fingerprint(reference),
            "scores": _scores(reference),
        }
    finally:
        killer.shutdown(cancel_futures=True)


@pytest.mark.parametrize("step", list(KILL_POINTS))
def test_a_run_killed_mid_step_is_cleaned_up_by_the_next_plain_run_with_equal_results(platform, step):
    pid = platform["killed"][step].result(timeout=600)
    env = platform["env"](step)
    with _instance(env) as instance:
        (run,) = [
            r
            for r in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            if r.tags[recovery.PID_TAG] == str(pid)
        ]
        assert run.tags["dagster/partition"] == DAY
        held = instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots
        assert [(s.run_id, s.step_key) for s in held] == [(run.run_id, step)]  # what wedged the next run

    printed = tiny_platform.ok(env, "run", "--date", DAY)

    assert (
        f"cleaned up run {run.run_id} (pipeline_job {DAY}): its process (pid {pid} on "
        f"{socket.gethostname()}) is gone; marked failed; freed pool duckdb slot (step {step})"
    ) in printed
    with _instance(env) as instance:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots == []
    data = Path(env["BANKANOM_DATA_DIR"])
    assert _fingerprint(data) == platform["reference"]
    assert _scores(data) == platform["scores"]


@pytest.fixture
def holder(platform):
    """A run record holding the duckdb pool's one slot, executed (so its tags say) by a live process."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    run = dg.DagsterRun(
        job_name="pipeline_job",
        run_id=str(uuid.uuid4()),
        status=dg.DagsterRunStatus.STARTED,
        tags={
            "dagster/partition": TRAIN_DAY,
            recovery.PID_TAG: str(process.pid),
            recovery.HOST_TAG: socket.gethostname(),
            recovery.STARTED_TAG: repr(psutil.Process(process.pid).create_time()),
        },
    )
    with _instance(platform["env"]("holder", home="waiting")) as instance:
        instance.add_run(run)
        instance.event_log_storage.initialize_concurrency_limit_to_default("duckdb")
        assert instance.event_log_storage.claim_concurrency_slot(
            "duckdb", run.run_id, "scored_events"
        ).is_claimed
    yield run, process
    process.kill()
    process.wait()
    with _instance(platform["env"]("holder", home="waiting")) as instance:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        if not instance.get_run_by_id(run.run_id).is_finished:
            instance.report_run_failed(instance.get_run_by_id(run.run_id))


def _start_waiting(platform, holder_run, process_pid: int, name: str):
    """``bankanom ingest`` (raw_logs, in the duckdb pool) started and waiting for the slot; the holder's
    instance is the one of the tests with a holder."""
    env = platform["env"](name, home="waiting")
    data = Path(env["BANKANOM_DATA_DIR"])
    shutil.copytree(platform["base"], data)
    log = data.parent / f"{name}.log"
    waiting = _start(env, log, "ingest", "--date", DAY)
    said = (
        f"step raw_logs is waiting for pool duckdb, held by run {holder_run.run_id} "
        f"(pipeline_job {TRAIN_DAY}, pid {process_pid})"
    )
    _wait_for(lambda: said in log.read_text(), "INFO line naming the holder", waiting, log)
    return waiting, log, said


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_run_waiting_for_the_pool_says_who_holds_it_and_stops_on_a_signal(platform, holder, stop):
    holder_run, holder_process = holder
    waiting, log, said = _start_waiting(platform, holder_run, holder_process.pid, f"wait-{stop.name}")
    with _instance(platform["env"]("waiting")) as instance:
        (run,) = [
            r
            for r in instance.get_runs(filters=dg.RunsFilter(job_name="ingest_job"))
            if r.tags[recovery.PID_TAG] == str(waiting.pid)
        ]
        events = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
        assert said in [e.event_log_entry.dagster_event.message for e in events]  # in the run's event log too

    began = time.monotonic()
    waiting.send_signal(stop)
    code = waiting.wait(timeout=30)

    # prompt, not instant: Python's exit with Dagster loaded takes seconds on a loaded 2-core machine
    assert time.monotonic() - began < 15
    assert code == 128 + stop
    assert (
        f"stopped by {stop.name}: run {run.run_id} (ingest_job {DAY}, pid {waiting.pid}) marked canceled"
        in (log.read_text())
    )
    with _instance(platform["env"]("waiting")) as instance:
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
        info = instance.event_log_storage.get_concurrency_info("duckdb")
        assert [s.step_key for s in info.pending_steps if s.run_id == run.run_id] == []
        assert [s.run_id for s in info.claimed_slots] == [holder_run.run_id]  # a live holder is left alone
        assert instance.get_run_by_id(holder_run.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_waiting_run_cleans_up_a_holder_that_dies_and_goes_on(platform, holder):
    holder_run, holder_process = holder
    waiting, log, _ = _start_waiting(platform, holder_run, holder_process.pid, "wait-holder-dies")
    holder_process.kill()
    holder_process.wait()

    assert waiting.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert (
        f"cleaned up run {holder_run.run_id} (pipeline_job {TRAIN_DAY}): its process (pid " in log.read_text()
    )
    with _instance(platform["env"]("waiting")) as instance:
        assert instance.get_run_by_id(holder_run.run_id).status == dg.DagsterRunStatus.FAILURE


@pytest.mark.parametrize("stubborn", [False, True], ids=["step-interrupted", "step-ignores-interrupts"])
def test_sigterm_stops_a_run_inside_a_step(platform, stubborn):
    """Dagster interrupts a running step itself; a step that does not stop is ended by the guard after
    its grace period. Either way the run ends, marked, with no pool slot left held."""
    name = f"sigterm-{'stubborn' if stubborn else 'step'}"
    env = platform["env"](name)
    data = Path(env["BANKANOM_DATA_DIR"])
    shutil.copytree(platform["base"], data)
    marker, log = data.parent / f"{name}.paused", data.parent / f"{name}.log"
    crash = {**env, "CRASH_AT": "raw_logs", "CRASH_MARKER": str(marker)}
    if stubborn:
        crash["CRASH_STUBBORN"] = "1"
    running = _start(crash, log, "ingest", "--date", DAY, module="tests.crash_point")
    _wait_for(marker.exists, "pause in raw_logs", running, log)

    began = time.monotonic()
    running.send_signal(signal.SIGTERM)
    code = running.wait(timeout=60)
    took = time.monotonic() - began

    printed = log.read_text()
    assert "SIGTERM: interrupting the running step of run " in printed
    with _instance(env) as instance:
        (run,) = [
            r
            for r in instance.get_runs(filters=dg.RunsFilter(job_name="ingest_job"))
            if r.tags[recovery.PID_TAG] == str(running.pid)
        ]
        if stubborn:
            assert took >= 15
            assert code == 128 + signal.SIGTERM
            assert "marked canceled because its running step did not stop within 15 s" in printed
            assert run.status == dg.DagsterRunStatus.CANCELED
        else:
            # interrupted, not stopped by the 15 s grace that ends a stubborn step (that path exits 143
            # and says so: a wall-clock bound would fail on a loaded machine)
            assert "did not stop within" not in printed
            assert code == 1
            assert run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
        info = instance.event_log_storage.get_concurrency_info("duckdb")
        assert [s.run_id for s in info.claimed_slots if s.run_id == run.run_id] == []
