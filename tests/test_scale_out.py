"""Scale-out correctness, the parts that need no cluster: days that read earlier days are declared so
to Dagster, and the step fence (distributed/fence.py), on a real Redis and a real lake, with two
executions of one step attempt publishing the same partition as a Celery redelivery makes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import redis

from bankanom_pipeline.definitions import defs
from bankanom_pipeline.distributed.fence import FencedOut, StepFence
from tests import servers
from tests.fence_outputs import ATTEMPT, publish, writers

LEASE = 4.0


def parents(child: str, parent: str, day: str) -> list[str]:
    graph = defs.get_repository_def().asset_graph
    result = graph.get_parent_partition_keys_for_child(day, dg.AssetKey(parent), dg.AssetKey(child))
    return sorted(result.partitions_subset.get_partition_keys())


def test_models_that_read_earlier_days_depend_on_them_and_the_first_day_on_itself():
    # the feature models read the previous day (lookback_days=1: a 24-hour horizon, docs/features.md)
    for model in ("feat_user_activity", "feat_ip_activity", "feat_service_activity", "feat_rarity"):
        assert parents(model, "stg_logs", "2026-02-04") == ["2026-02-03", "2026-02-04"]
        assert parents(model, "stg_logs", "2025-01-01") == ["2025-01-01"]  # no earlier partition
    assert parents("features_transactions", "validated_transactions", "2025-01-03") == [
        "2025-01-01",
        "2025-01-02",
        "2025-01-03",
    ]
    # the rest read their own day only
    assert parents("features_events", "feat_user_activity", "2026-02-04") == ["2026-02-04"]
    assert parents("stg_logs", "validated_logs", "2026-02-04") == ["2026-02-04"]


@pytest.fixture
def client(tmp_path):
    servers.require_servers()
    with servers.redis(tmp_path / "redis.log") as url:
        yield redis.Redis.from_url(f"{url}/0")


@pytest.mark.e2e
def test_a_second_delivery_waits_for_the_first_and_returns_its_result_without_publishing(client, tmp_path):
    root = tmp_path / "lake"
    claimed, go = threading.Event(), threading.Event()
    results, executed = {}, []

    def first():
        claimed.set()
        assert go.wait(60)
        executed.append("A")
        return publish(root, "A")

    def second():
        executed.append("B")
        return publish(root, "B")

    a = threading.Thread(target=lambda: results.update(A=StepFence(client, LEASE, 0.05).run(ATTEMPT, first)))
    a.start()
    assert claimed.wait(10)
    b = threading.Thread(target=lambda: results.update(B=StepFence(client, LEASE, 0.05).run(ATTEMPT, second)))
    b.start()
    time.sleep(2 * LEASE)  # the first is alive: its heartbeat keeps the claim past the lease
    assert b.is_alive() and executed == []
    go.set()
    a.join(10)
    b.join(10)
    assert results == {"A": ("events of A", True), "B": ("events of A", False)}
    assert executed == ["A"] and writers(root) == ["A"]
    # a delivery long after the step ended (the visibility timeout's late copy) does not run either
    assert StepFence(client, LEASE).run(ATTEMPT, second) == ("events of A", False)
    assert writers(root) == ["A"]
    # another attempt (a Dagster step retry) is a step of its own
    assert StepFence(client, LEASE).run("run-1/stg_logs/1", second) == ("events of B", True)


# An execution in a process of its own: it claims the attempt, says so, waits for a go file, publishes.
EXECUTION = """
import sys, time
from pathlib import Path
import redis
from bankanom_pipeline.distributed.fence import StepFence
from tests.fence_outputs import ATTEMPT, publish
url, root, go, lease = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
def execute():
    print("claimed", flush=True)
    while not go.exists():
        time.sleep(0.05)
    return publish(root, "A")
print(StepFence(redis.Redis.from_url(url), lease, 0.05).run(ATTEMPT, execute), flush=True)
"""


def start_execution(client, tmp_path) -> tuple[subprocess.Popen, Path]:
    url = "redis://{host}:{port}/{db}".format(**client.connection_pool.connection_kwargs)
    go = tmp_path / "go"
    process = subprocess.Popen(
        [sys.executable, "-c", EXECUTION, url, str(tmp_path / "lake"), str(go), str(LEASE)],
        cwd=servers.PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "claimed", process.stderr.read()
    return process, go


@pytest.mark.e2e
def test_a_step_whose_execution_died_runs_again_once_its_lease_lapses(client, tmp_path):
    process, _ = start_execution(client, tmp_path)
    began = time.monotonic()
    process.kill()  # SIGKILL mid-step, before it published: no result, and its heartbeat stops
    process.wait()
    result = StepFence(client, LEASE, 0.05).run(ATTEMPT, lambda: publish(tmp_path / "lake", "B"))
    assert result == ("events of B", True)
    assert time.monotonic() - began < 3 * LEASE
    assert writers(tmp_path / "lake") == ["B"]


@pytest.mark.e2e
def test_an_execution_that_stalled_past_its_lease_cannot_publish_over_its_successor(client, tmp_path):
    process, go = start_execution(client, tmp_path)
    os.kill(process.pid, signal.SIGSTOP)  # a stall (swapping, a paused VM): no heartbeat for > the lease
    try:
        result = StepFence(client, LEASE, 0.05).run(ATTEMPT, lambda: publish(tmp_path / "lake", "B"))
    finally:
        go.touch()
        os.kill(process.pid, signal.SIGCONT)
    assert result == ("events of B", True)
    _, errors = process.communicate(timeout=60)
    assert process.returncode != 0 and FencedOut.__name__ in errors, errors
    assert writers(tmp_path / "lake") == ["B"]
    assert not list((tmp_path / "lake").rglob("*.tmp"))


def test_outside_a_fenced_step_publishing_is_unchanged(tmp_path):
    publish(tmp_path / "lake", "A")
    assert writers(tmp_path / "lake") == ["A"]


def test_a_step_attempt_is_the_run_the_step_and_its_retry_count():
    from types import SimpleNamespace

    from dagster._core.execution.plan.state import KnownExecutionState

    from bankanom_pipeline.defs.celery_app import step_attempt

    def args(
        retries: dict[str, int] | None,
    ) -> SimpleNamespace:  # the fields of dagster's ExecuteStepArgs read
        state = KnownExecutionState(previous_retry_attempts=retries) if retries is not None else None
        return SimpleNamespace(run_id="r1", step_keys_to_execute=["stg_logs"], known_state=state)

    assert step_attempt(args(None)) == step_attempt(args({})) == "r1/stg_logs/0"
    assert step_attempt(args({"stg_logs": 2, "raw_logs": 5})) == "r1/stg_logs/2"
