"""Runs whose process died: found, marked failed, their concurrency-pool slots freed; and who holds the
pool a run waits for.

Dagster's run monitoring learns that a run worker died only through the run launcher's health check.
The default run launcher (``bankanom up``, ``dagster dev``) has none in Dagster 1.13, and a run the CLI
executes in its own process has no launcher at all. A killed run would stay STARTED and keep the one
slot of the ``duckdb`` pool, and every later run would wait for it forever. So the process executing
each run is identified (pid, host, and the process's start time, which tells a reused pid apart) and
checked here: by the CLI before every run and while one waits, and by ``dead_run_sensor`` in the daemon.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
import psutil
from dagster._core.storage.runs import SqliteRunStorage

PID_TAG = "bankanom/pid"
HOST_TAG = "bankanom/host"
STARTED_TAG = "bankanom/process_started"
LIVE_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# process start times are read from the kernel in clock ticks: equal starts may differ by a tick
START_SLACK_SECONDS = 1.0


@dataclass(frozen=True)
class Worker:
    """The process executing a run. ``exact``: ``started`` is that process's start time; otherwise a
    moment at which it was already running (the time of an event it wrote)."""

    pid: int
    host: str
    started: float
    exact: bool

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            created = process.create_time()
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:  # includes zombies psutil cannot read
            return False
        except psutil.AccessDenied:  # someone else's process with that pid: cannot tell, assume alive
            return True
        if self.exact:
            return abs(created - self.started) <= START_SLACK_SECONDS
        return created <= self.started + START_SLACK_SECONDS


def process_tags() -> dict[str, str]:
    """Run tags naming this process as the one executing the run (the CLI's in-process runs)."""
    me = psutil.Process()
    return {PID_TAG: str(me.pid), HOST_TAG: socket.gethostname(), STARTED_TAG: repr(me.create_time())}


def _local(instance: dg.DagsterInstance) -> bool:
    """Whether the instance is files on this machine (SQLite under DAGSTER_HOME, the embedded default):
    then its daemon, code server and run workers are on this machine too."""
    return isinstance(instance.run_storage, SqliteRunStorage)


def worker_of(
    instance: dg.DagsterInstance, run: dg.DagsterRun, beside_run_workers: bool = False
) -> Worker | None:
    """The process executing ``run``, when this process can check it (else None: not ours to judge).
    ``beside_run_workers``: the caller runs where the default run launcher starts run workers (in the
    code server, as sensors do)."""
    tags = run.tags
    if HOST_TAG in tags:
        if tags[HOST_TAG] != socket.gethostname():
            return None
        return Worker(int(tags[PID_TAG]), tags[HOST_TAG], float(tags[STARTED_TAG]), exact=True)
    if run.remote_job_origin is not None:
        # Launched by the daemon. The default run launcher starts the run worker as a subprocess of the
        # code server, so its pid means something in the code server (where sensors run) and, with a
        # local instance, on this machine. Other launchers (Kubernetes) run workers elsewhere, with a
        # health check of their own (run monitoring).
        if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
            return None
        if not (beside_run_workers or _local(instance)):
            return None
    elif not _local(instance):
        # executed in process without these tags (another program, or a bankanom before them): its
        # host is known only when the instance itself is local
        return None
    # the run worker's "Started process for run (pid: N)" comes first, or the in-process executor's
    # "Executing steps in process (pid: N)"
    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        metadata = record.dagster_event.engine_event_data.metadata or {}
        if "pid" in metadata:
            return Worker(int(metadata["pid"].value), socket.gethostname(), record.timestamp, exact=False)
    return None  # not started yet: run monitoring's start timeout covers a launch that never started


def describe(instance: dg.DagsterInstance, run_id: str) -> str:
    """``run <id> (<job> <partition>, pid <pid>)``: a run as the messages below name it."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id} (no longer in the instance)"
    worker = worker_of(instance, run)
    where = f", pid {worker.pid}" if worker else ""
    partition = run.tags.get("dagster/partition", "")
    return f"run {run_id} ({' '.join(filter(None, [run.job_name, partition]))}{where})"


def _pool_infos(instance: dg.DagsterInstance) -> Iterable:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    return storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).values()


def holdings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What ``run_id`` holds in the concurrency pools: claimed slots and queued claims, one phrase each."""
    held = []
    for info in _pool_infos(instance):
        slots = [slot.step_key for slot in info.claimed_slots if slot.run_id == run_id]
        claims = [s.step_key for s in info.pending_steps if s.run_id == run_id and s.step_key not in slots]
        held += [f"pool {info.concurrency_key} slot (step {step})" for step in slots]
        held += [f"pool {info.concurrency_key} queued claim (step {step})" for step in claims]
    return held


@dataclass(frozen=True)
class Wait:
    """A step of a run waiting for a pool slot, and the runs holding that pool's slots."""

    run_id: str
    pool: str
    step: str
    holders: tuple[str, ...]


def waits(instance: dg.DagsterInstance) -> list[Wait]:
    """Every step that waits for a pool slot now."""
    found = []
    for info in _pool_infos(instance):
        holders = tuple(sorted({slot.run_id for slot in info.claimed_slots}))
        found += [
            Wait(step.run_id, info.concurrency_key, step.step_key, holders)
            for step in info.pending_steps
            if step.assigned_timestamp is None
        ]
    return found


def say_wait(instance: dg.DagsterInstance, wait: Wait) -> str:
    holders = ", ".join(describe(instance, run_id) for run_id in wait.holders) or "no run (being freed)"
    return f"step {wait.step} is waiting for pool {wait.pool}, held by {holders}"


@dataclass(frozen=True)
class Cleanup:
    """A run found dead (or finished with slots still held) and what was done about it."""

    run_id: str
    job_name: str
    partition: str
    worker: Worker | None
    marked_failed: bool
    freed: tuple[str, ...]

    def __str__(self) -> str:
        what = " ".join(filter(None, [self.job_name, self.partition]))
        if self.worker:
            gone = f"its process (pid {self.worker.pid} on {self.worker.host}) is gone"
        else:
            gone = "it has ended"
        done = ["marked failed"] if self.marked_failed else []
        done.append(f"freed {', '.join(self.freed)}" if self.freed else "it held no pool slot")
        return f"cleaned up run {self.run_id} ({what}): {gone}; {'; '.join(done)}"


def _clean(instance: dg.DagsterInstance, run: dg.DagsterRun, worker: Worker | None, by: str) -> Cleanup:
    freed = tuple(holdings(instance, run.run_id))
    marked = False
    current = instance.get_run_by_id(run.run_id)
    if worker is not None and current is not None and not current.is_finished:
        instance.report_run_failed(
            current,
            message=f"The run's process (pid {worker.pid} on {worker.host}) died before the run ended; "
            f"marked failed by {by}.",
        )
        marked = True
    instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return Cleanup(run.run_id, run.job_name, run.tags.get("dagster/partition", ""), worker, marked, freed)


def clean_dead_runs(instance: dg.DagsterInstance, by: str, beside_run_workers: bool = False) -> list[Cleanup]:
    """Mark failed every unfinished run whose process this one can check and finds gone, and free the
    pool slots of those runs and of finished runs that still hold some (their process died before
    freeing them). ``by`` names the caller in the failure message; ``beside_run_workers`` as for
    ``worker_of``."""
    cleaned = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=LIVE_STATUSES)):
        worker = worker_of(instance, run, beside_run_workers)
        if worker is not None and not worker.alive():
            cleaned.append(_clean(instance, run, worker, by))
    infos = list(_pool_infos(instance))
    holders = {slot.run_id for info in infos for slot in info.claimed_slots}
    holders |= {step.run_id for info in infos for step in info.pending_steps}
    for run_id in sorted(holders - {c.run_id for c in cleaned}):
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            cleaned.append(_clean(instance, run, None, by))
    return cleaned
