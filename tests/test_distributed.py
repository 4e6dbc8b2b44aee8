"""Beyond one machine, for real: a Postgres-backed Dagster instance (infra/dagster.yaml), the daemon, two
Celery workers on a Redis broker, and a backfill of two daily partitions through raw -> incidents in
lake mode, with one worker killed half-way. The results must equal an embedded run of the same days."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import httpx
import pytest

from bankanom_pipeline import settings
from bankanom_pipeline.warehouse import lake
from tests import servers, tiny_platform
from tests.api_server import free_port, wait_for_http
from tests.conftest import generated_days

# the fixture runs the embedded reference, a training run and the whole backfill: a few minutes on an idle
# 2-core machine, far more with other work on it (measured: docs/scale-out.md); the limits catch a hang
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(5400)]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "distributed"
# the tiny platform's days (tests/tiny_platform.py: its training day and its day, ~5k events each, enough
# to train on and to find incidents every day), then one more under the next seed: the embedded reference
# starts from the tiny platform's folder, whose training day's features and model pair are what the
# reference's own `run --job features_job` and `train` computed, the same seeded days
TRAIN_DAY = dt.date.fromisoformat(tiny_platform.TRAIN_DAY)
# two days: the second reads the first (the lookback models), so the order rule is exercised
DAYS = [(TRAIN_DAY + dt.timedelta(days=i)).isoformat() for i in range(1, 3)]
assert DAYS[0] == tiny_platform.DAY
RATE = tiny_platform.RATE  # events per second
LAST_SEED = max(tiny_platform.SEEDS.values()) + 1  # DAYS[1]'s traffic: the next seed
TABLES = ("raw_logs", "validated_logs", "features_events", "scored_events", "incidents", "incident_events")
WORKERS = ("w1", "w2")
# steps begun (by any worker) before w1 is killed: half of the backfill's (12 steps a partition), so
# the kill lands with both workers busy and enough steps left for a step process to be killed after it
KILL_AFTER = 12


def _cli(env: dict, *args: str, log: Path) -> float:
    began = time.perf_counter()
    with log.open("a") as out:
        result = subprocess.run(
            [sys.executable, "-m", "bankanom_pipeline.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=2400,  # a hang, not a slow machine (measured times: docs/scale-out.md)
        )
    assert result.returncode == 0, f"bankanom {' '.join(args)} failed: {log.read_text()[-4000:]}"
    return time.perf_counter() - began


LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""


def _launch_backfill(url: str, days: list[str]) -> str:
    from bankanom_pipeline.definitions import defs

    assets = defs.resolve_job_def("pipeline_job").asset_layer.selected_asset_keys
    # the days for every asset: by partition names alone, Dagster would add the partitions downstream of
    # them, here the day after the last for the models that read the previous day (docs/scale-out.md)
    window = {"range": {"start": days[0], "end": days[-1]}}
    params = {
        "partitionsByAssets": [
            {"assetKey": {"path": key.path}, "partitions": window} for key in sorted(assets)
        ],
    }
    response = httpx.post(
        f"{url}/graphql", json={"query": LAUNCH_BACKFILL, "variables": {"params": params}}, timeout=60
    )
    result = response.json()["data"]["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


SENSORS = """
query { repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name sensorState { id } } } } } }"""
STOP_SENSOR = """
mutation($id: String) { stopSensor(id: $id) { __typename ... on PythonError { message } } }"""


def _stop_sensors(url: str, names: set[str]) -> None:
    """What the UI's sensor toggle does (and ``dagster sensor stop``, without loading the code again)."""
    response = httpx.post(f"{url}/graphql", json={"query": SENSORS}, timeout=60).json()
    nodes = response["data"]["repositoriesOrError"]["nodes"]
    states = {s["name"]: s["sensorState"]["id"] for node in nodes for s in node["sensors"]}
    assert names <= set(states), (names, sorted(states))
    for name in sorted(names):
        variables = {"id": states[name]}
        stopped = httpx.post(
            f"{url}/graphql", json={"query": STOP_SENSOR, "variables": variables}, timeout=60
        )
        result = stopped.json()["data"]["stopSensor"]
        assert result["__typename"] == "StopSensorMutationResult", (name, result)


def _embedded_reference(env: dict, log: Path) -> float:
    """The embedded default, one day after another in runs of its own, on a copy of the tiny platform's
    folder (the training day's features and the model pair trained on them); the backfill's seconds."""
    return _cli(env, "backfill", "--start", DAYS[0], "--end", DAYS[-1], log=log)


def _children(pid: int) -> list[int]:
    """The pool processes of a Celery worker (the processes that execute its tasks)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def _celery_steps(instance, run_ids) -> list[tuple[str, str, str, float]]:
    """(run id, step key, worker, time) of every step a Celery worker began, oldest first."""
    import dagster as dg

    began = []
    for run_id in run_ids:
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            metadata = record.dagster_event.engine_event_data.metadata or {}
            if "Celery worker" in metadata:
                worker = metadata["Celery worker"].value.split("@")[0]
                began.append((run_id, record.dagster_event.step_key, worker, record.timestamp))
    return sorted(began, key=lambda b: b[3])


def _finished_steps(instance, run_ids) -> set[tuple[str, str]]:
    import dagster as dg

    done = set()
    for run_id in run_ids:
        for kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            done |= {(run_id, r.dagster_event.step_key) for r in instance.all_logs(run_id, of_type=kind)}
    return done


def _step_records(instance, runs) -> list[tuple[float, str, str, str, str]]:
    """(time, kind, asset or step, partition, detail) of every step start, end, materialization and
    Celery hand-over of the backfill's runs, oldest first."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.ASSET_MATERIALIZATION,
        dg.DagsterEventType.ENGINE_EVENT,
    }
    found = []
    for run in runs:
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None or event.event_type not in kinds:
                continue
            detail, name = run.run_id[:8], event.step_key
            if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
                metadata = event.engine_event_data.metadata or {}
                if "Celery worker" not in metadata:
                    continue
                detail += " on " + metadata["Celery worker"].value
            if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                name = event.asset_key.to_user_string()
            kind = event.event_type_value
            found.append((record.timestamp, kind, name, run.tags.get("dagster/partition"), detail))
    return sorted(found)


def _write_evidence(records, lake_root: Path) -> None:
    """What a failure is diagnosed from: every step event (which worker, when) and every lake file's
    modification time, in the order they happened."""
    lines = [(t, f"{partition} {kind} {name} {detail}") for t, kind, name, partition, detail in records]
    for path in lake_root.rglob("*.parquet"):
        lines.append((path.stat().st_mtime, f"file {path.relative_to(lake_root)}"))
    text = "".join(
        f"{dt.datetime.fromtimestamp(t, dt.UTC):%H:%M:%S.%f} {line}\n" for t, line in sorted(lines)
    )
    (ARTIFACTS / "events.log").write_text(text)


def _fence_log(lines: list[str]) -> dict[str, int]:
    """How often the step fence stopped a second delivery, from the workers' logs."""
    return {
        "duplicates returned the first result": sum("already ran to completion" in line for line in lines),
        "duplicates waited for a running step": sum("is running elsewhere" in line for line in lines),
        "re-executions after a death": sum("the claim lapsed without a result" in line for line in lines),
    }


@pytest.fixture(scope="module")
def backfill(tiny_world, tmp_path_factory):
    servers.require_servers()
    root = tmp_path_factory.mktemp("distributed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    landing = root / "landing"
    shutil.copytree(tiny_world / "landing", landing)  # the training day and DAYS[0]
    generated_days(landing, {DAYS[1]: LAST_SEED}, RATE)
    # the reference starts where the tiny platform's `run --job features_job` and `train` left it
    shutil.copytree(tiny_world / "base", root / "embedded")
    base = {**os.environ, "BANKANOM_LANDING_DIR": str(landing), "PYTHONUNBUFFERED": "1"}
    for name in ("BANKANOM_STORAGE", "BANKANOM_EXECUTOR", "BANKANOM_LAKE_ROOT", "BANKANOM_WAREHOUSE"):
        base.pop(name, None)

    # the reference runs beside the deployment (separate folders and instances): only the comparisons
    # need it, and they come after the distributed backfill
    embedded = {
        **base,
        "BANKANOM_DATA_DIR": str(root / "embedded"),
        "DAGSTER_HOME": str(root / "embedded-home"),
    }
    (ARTIFACTS / "embedded.log").write_text("")
    beside = ThreadPoolExecutor(max_workers=1)
    reference = beside.submit(_embedded_reference, embedded, ARTIFACTS / "embedded.log")

    with beside, servers.postgres() as pg, servers.redis(root / "redis.log") as redis_url:
        home = root / "dagster-home"
        home.mkdir()
        shutil.copy(ROOT / "infra" / "dagster.yaml", home / "dagster.yaml")
        distributed = {
            **base,
            **pg,
            "DAGSTER_HOME": str(home),
            "DAGSTER_MAX_CONCURRENT_RUNS": "4",
            "BANKANOM_DATA_DIR": str(root / "distributed"),
            "BANKANOM_STORAGE": "lake",
            "BANKANOM_EXECUTOR": "celery",
            "BANKANOM_CELERY_BROKER": f"{redis_url}/0",
            "BANKANOM_CELERY_BACKEND": f"{redis_url}/1",
            # a killed worker's step goes back to the queue after this long (steps here take seconds)
            "BANKANOM_CELERY_VISIBILITY_TIMEOUT": "20",
            # so a step slower than that runs twice unless the fence stops it; a dead step's claim
            # lapses after this long
            "BANKANOM_STEP_LEASE_SECONDS": "30",
        }
        log = ARTIFACTS / "distributed.log"
        log.write_text("")
        _cli(distributed, "check-deployment", log=log)
        bin_dir = Path(sys.executable).parent

        def worker(name: str) -> subprocess.Popen:
            command = [str(bin_dir / "celery"), "-A", "bankanom_pipeline.defs.celery_app", "worker"]
            command += ["-Q", "dagster", "--concurrency", "1", "-n", f"{name}@%h", "--loglevel", "INFO"]
            return servers.start(command, distributed, ARTIFACTS / f"worker-{name}.log")

        saved = {k: os.environ.get(k) for k in pg}
        os.environ.update(pg)  # infra/dagster.yaml reads them when this process opens the instance
        workers: dict[str, subprocess.Popen] = {}
        daemon = webserver = None
        try:
            import dagster as dg

            # opening it creates the instance's tables, before the processes below open it side by side
            instance = dg.DagsterInstance.from_config(str(home))
            # the servers load the code while the training day's features and the model are computed
            workers.update({name: worker(name) for name in WORKERS})
            port = free_port()
            webserver = servers.start(
                [
                    str(bin_dir / "dagster-webserver"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-w",
                    str(ROOT / "workspace.yaml"),
                ],
                distributed,
                ARTIFACTS / "webserver.log",
            )
            _cli(distributed, "run", "--job", "features_job", "--date", TRAIN_DAY.isoformat(), log=log)
            _cli(distributed, "train", "--end-date", TRAIN_DAY.isoformat(), log=log)
            url = f"http://127.0.0.1:{port}"
            wait_for_http(
                f"{url}/server_info", webserver, ARTIFACTS / "webserver.log", timeout=600, interval=0.5
            )
            # the product's own sensors would add runs of their own (new landing files, eager
            # follow-ups): stopped before the daemon that ticks them starts
            _stop_sensors(url, {"landing_sensor", "automation_sensor", "drift_sensor"})
            began = time.perf_counter()
            # what the UI's "Materialize selected partitions" does: an asset backfill the daemon runs
            backfill_id = _launch_backfill(url, DAYS)
            daemon = servers.start(
                [str(bin_dir / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
                distributed,
                ARTIFACTS / "daemon.log",
            )
            killed = crashed = None
            victim, spare = "w1", 3  # the worker to kill, and the number its replacement gets
            confirmed = False
            deadline = time.monotonic() + 3600
            while True:
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                run_ids = [r.run_id for r in runs]
                if not confirmed:  # the step events matter until the step process's kill is confirmed
                    steps = _celery_steps(instance, run_ids)
                    done = _finished_steps(instance, run_ids)
                    running = [s for s in steps if (s[0], s[1]) not in done]
                if killed is None:
                    running_on_victim = [s for s in running if s[2] == victim]
                    # half-way: both workers busy for a while, the victim inside a step
                    half_way = len(steps) >= KILL_AFTER and {s[2] for s in steps} >= set(WORKERS)
                    if half_way and running_on_victim:
                        os.killpg(workers[victim].pid, signal.SIGKILL)
                        workers[victim].wait()
                        killed = running_on_victim[-1]
                        replacement, spare = f"w{spare}", spare + 1
                        workers[replacement] = worker(replacement)  # what an orchestrator does
                        # the step may have ended between the last look and the kill; a dead worker
                        # writes nothing more, so a success on record now came before the kill and
                        # the kill proved nothing: the replacement is killed inside a step instead
                        if killed[:2] in _finished_steps(instance, run_ids):
                            killed, victim = None, replacement
                elif crashed is not None and not confirmed:
                    if sum(s[:2] == crashed[:2] for s in steps) > 1:
                        confirmed = True  # the step is running (or ran) a second time
                    elif crashed[:2] in done:
                        crashed = None  # it had just ended: its process died idle, so try another step
                elif crashed is None:
                    # then a step's own process dies (as under the OOM killer) while its worker lives on
                    candidates = [s for s in running if s[2] == "w2" and s[:2] != killed[:2]]
                    pool = _children(workers["w2"].pid)
                    if candidates and pool:
                        os.kill(pool[0], signal.SIGKILL)
                        crashed = candidates[-1]
                finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}
                in_flight = not {r.status for r in runs} <= finished
                status = instance.get_backfill(backfill_id).status
                # the backfill waits for the daemon's retries of failed runs before it ends
                if status.value not in ("REQUESTED", "CANCELING", "FAILING") and not in_flight:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"backfill did not finish: {[(r.run_id, r.status) for r in runs]}")
                # quick looks while a kill must land inside a step (steps take seconds); then only the
                # runs' and the backfill's statuses are read
                time.sleep(2 if confirmed else 0.3)
            distributed_seconds = time.perf_counter() - began
            embedded_seconds = reference.result(timeout=3600)
            runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
            steps = _celery_steps(instance, [r.run_id for r in runs])
            timings = {
                "partitions": len(DAYS),
                "events_per_day": round(RATE * 86_400),
                "embedded_sequential_seconds": round(embedded_seconds, 1),
                "distributed_backfill_seconds": round(distributed_seconds, 1),
                "killed": list(killed[:3]) if killed else None,
                "crashed": list(crashed[:3]) if crashed else None,
                "steps_per_worker": {w: sum(s[2] == w for s in steps) for w in sorted({s[2] for s in steps})},
                "fence": _fence_log(
                    [
                        line
                        for w in workers
                        for line in (ARTIFACTS / f"worker-{w}.log").read_text().splitlines()
                    ]
                ),
            }
            (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2))
            records = _step_records(instance, runs)
            _write_evidence(records, root / "distributed" / "lake")
            yield {
                "instance_home": home,
                "pg": pg,
                "runs": runs,
                "records": records,
                "steps": steps,
                "killed": killed,
                "crashed": crashed,
                "backfill": instance.get_backfill(backfill_id),
                "embedded": duckdb.connect(str(root / "embedded" / "warehouse.duckdb"), read_only=True),
                "embedded_path": root / "embedded" / "warehouse.duckdb",
                "lake": lake.connect(str(root / "distributed" / "lake")),
            }
            instance.dispose()
        finally:
            for process in [webserver, daemon, *workers.values()]:
                if process is not None:
                    servers.stop(process)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def test_every_partition_ran_in_postgres_backed_runs_on_both_workers(backfill):
    import dagster as dg

    runs = backfill["runs"]
    succeeded = {r.tags.get("dagster/partition") for r in runs if r.status == dg.DagsterRunStatus.SUCCESS}
    assert succeeded == set(DAYS), [(r.tags.get("dagster/partition"), r.status) for r in runs]
    assert backfill["backfill"].status.value == "COMPLETED_SUCCESS", backfill["backfill"].status
    assert {s[2] for s in backfill["steps"]} >= set(WORKERS)
    # a fresh instance object (another process would do the same) reads the history from Postgres
    fresh = dg.DagsterInstance.from_config(str(backfill["instance_home"]))
    try:
        assert type(fresh.run_storage).__name__ == "PostgresRunStorage"
        assert {r.run_id for r in fresh.get_runs()} >= {r.run_id for r in runs}
    finally:
        fresh.dispose()


def test_the_killed_workers_step_ran_again_on_the_other_worker(backfill):
    killed = backfill["killed"]
    assert killed is not None, "no worker was caught inside a step"
    run_id, step_key, worker, at = killed
    again = [s for s in backfill["steps"] if s[0] == run_id and s[1] == step_key and s[3] > at]
    assert again and again[0][2] != worker, (killed, again)


def test_a_step_whose_process_died_went_back_to_the_queue_and_ran_again(backfill):
    import dagster as dg

    crashed = backfill["crashed"]
    assert crashed is not None, "no step was caught running on w2 after w1 was killed"
    run_id, step_key, _, at = crashed
    again = [s for s in backfill["steps"] if s[0] == run_id and s[1] == step_key and s[3] > at]
    assert again, f"{step_key} of run {run_id} did not run again"
    assert next(r for r in backfill["runs"] if r.run_id == run_id).status == dg.DagsterRunStatus.SUCCESS


# Every column of these tables is compared row by row, joined by key; numbers within REL_TOL relative
# (parallel sums are not bit-for-bit repeatable). Left out: what names the load or the model, not the data.
CONTENT_KEYS = {
    "features_events": ("partition_date", "event_id"),
    "scored_events": ("partition_date", "event_id"),
    "incidents": ("partition_date", "incident_id"),
    "incident_events": ("partition_date", "incident_id", "event_id"),
}
RUN_DEPENDENT = {"ingested_at", "if_version", "lof_version"}
REL_TOL = 1e-9
NUMERIC = (
    "DOUBLE",
    "FLOAT",
    "REAL",
    "DECIMAL",
    "BIGINT",
    "INTEGER",
    "SMALLINT",
    "TINYINT",
    "UBIGINT",
    "UINTEGER",
)


def content_differences(con, embedded_path: Path, table: str, days: list[str]) -> dict[str, int]:
    """Per column, how many rows of ``days`` differ between the embedded warehouse (attached to the lake
    connection ``con``) and the lake; ``unmatched`` counts keys present on one side only."""
    keys = CONTENT_KEYS[table]
    if "reference" not in {
        row[0] for row in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
    }:
        con.execute(f"ATTACH '{embedded_path}' AS reference (READ_ONLY)")
    ours = {name for name, *_ in con.execute(f'DESCRIBE memory.main."{table}"').fetchall()}
    checks = []
    for name, kind, *_ in con.execute(f'DESCRIBE reference.main."{table}"').fetchall():
        if name in keys or name in RUN_DEPENDENT:
            continue
        assert name in ours, f"{table}.{name} is missing from the lake"
        a, b = f'e."{name}"', f'l."{name}"'
        if kind.split("(")[0] in NUMERIC:
            close = (
                f"abs({a}::DOUBLE - {b}::DOUBLE) <= {REL_TOL} * greatest(abs({a}::DOUBLE), abs({b}::DOUBLE))"
            )
            differs = f"NOT coalesce({a} IS NOT DISTINCT FROM {b} OR {close}, false)"
        else:
            differs = f"{a}::VARCHAR IS DISTINCT FROM {b}::VARCHAR"
        checks.append(f'count(*) FILTER ({differs}) AS "{name}"')
    on = " AND ".join(f'e."{k}" = l."{k}"' for k in keys)
    in_days = "partition_date::VARCHAR IN (" + ", ".join(f"'{d}'" for d in days) + ")"
    row = con.execute(
        f"""SELECT count(*) FILTER (e."{keys[-1]}" IS NULL OR l."{keys[-1]}" IS NULL) AS unmatched,
                   {", ".join(checks)}
            FROM (SELECT * FROM reference.main."{table}" WHERE {in_days}) AS e
            FULL JOIN (SELECT * FROM memory.main."{table}" WHERE {in_days}) AS l ON {on}"""
    )
    names = [d[0] for d in row.description]
    return {name: count for name, count in zip(names, row.fetchone(), strict=True) if count}


def test_every_partition_was_computed_from_the_final_version_of_what_it_reads(backfill):
    """Days in order and one publication per step: no upstream partition (the previous day's too, for
    the models that read it) was written again after the last start of a step that reads it."""
    import dagster as dg

    from bankanom_pipeline.definitions import defs

    graph = defs.get_repository_def().asset_graph
    last_write, last_start = {}, {}
    for at, kind, name, partition, _ in backfill["records"]:
        if kind == "ASSET_MATERIALIZATION":
            last_write[(name, partition)] = at
        elif kind == "STEP_START":
            last_start[(name, partition)] = at
    late = []
    for (name, partition), started in last_start.items():
        key = dg.AssetKey(name)
        if not graph.has(key) or graph.get(key).partitions_def is None:
            continue
        for parent in graph.get(key).parent_keys:
            if graph.get(parent).partitions_def is None:
                continue
            upstream = graph.get_parent_partition_keys_for_child(partition, parent, key).partitions_subset
            for day in upstream.get_partition_keys():
                written = last_write.get((parent.to_user_string(), day))
                if written is not None and written > started:
                    late.append(
                        f"{parent.to_user_string()}[{day}] written {written - started:.1f} s after {name}[{partition}] began"
                    )
    assert late == []
    # the lookback models of a day began after the previous day's staging rows were in
    for previous, day in itertools.pairwise(DAYS):
        for model in ("feat_user_activity", "feat_ip_activity"):
            assert last_write[("stg_logs", previous)] < last_start[(model, day)], (model, day)


@pytest.mark.parametrize("table", TABLES)
def test_distributed_results_equal_the_embedded_run_with_no_duplicates(backfill, table):
    embedded, lake_con = backfill["embedded"], backfill["lake"]
    key = {"incidents": "incident_id", "incident_events": "incident_id || event_id"}.get(table, "event_id")
    counts = (
        f"SELECT partition_date::VARCHAR, count(*), count(DISTINCT {key}) FROM {table} GROUP BY 1 ORDER BY 1"
    )
    expected = [row for row in embedded.execute(counts).fetchall() if row[0] in DAYS]
    got = [row for row in lake_con.execute(counts).fetchall() if row[0] in DAYS]
    assert got == expected
    assert [r[0] for r in got] == DAYS and all(r[1] == r[2] > 0 for r in got)
    if table in CONTENT_KEYS:
        assert content_differences(lake_con, backfill["embedded_path"], table, DAYS) == {}


def test_bad_deployment_settings_fail_fast_naming_the_setting(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bankanom_pipeline.cli import app

    # in process: the settings are read when the command runs (the fixture runs the real command)
    monkeypatch.setenv("BANKANOM_DATA_DIR", str(tmp_path))
    for name in ("BANKANOM_STORAGE", "BANKANOM_EXECUTOR", "BANKANOM_LAKE_ROOT", "BANKANOM_CELERY_BROKER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DAGSTER_PG_HOST", raising=False)
    cases = {
        "BANKANOM_STORAGE='warehouse'": {"BANKANOM_STORAGE": "warehouse"},
        "BANKANOM_EXECUTOR=celery needs BANKANOM_STORAGE=lake": {"BANKANOM_EXECUTOR": "celery"},
        "BANKANOM_CELERY_BROKER='redis://127.0.0.1:9/0' is unreachable": {
            "BANKANOM_STORAGE": "lake",
            "BANKANOM_EXECUTOR": "celery",
            "BANKANOM_CELERY_BROKER": "redis://127.0.0.1:9/0",
        },
        "DAGSTER_PG_HOST='127.0.0.1' DAGSTER_PG_PORT='9': Postgres is unreachable": {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": "9",
        },
        "BANKANOM_LAKE_ROOT='/proc/bankanom-lake' is not writable": {
            "BANKANOM_STORAGE": "lake",
            "BANKANOM_LAKE_ROOT": "/proc/bankanom-lake",
        },
    }
    for message, setting in cases.items():
        with monkeypatch.context() as patch:
            for name, value in setting.items():
                patch.setenv(name, value)
            result = CliRunner().invoke(app, ["check-deployment"])
        output = " ".join(result.output.split())
        assert result.exit_code == 2 and message in output, (output, result.exception)
        assert "Traceback" not in output
    with pytest.raises(settings.SettingError, match="BANKANOM_EXECUTOR='threads'"):
        os.environ["BANKANOM_EXECUTOR"] = "threads"
        try:
            settings.executor()
        finally:
            del os.environ["BANKANOM_EXECUTOR"]
