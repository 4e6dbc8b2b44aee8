"""Beyond one machine, for real: a Postgres-backed Dagster instance (infra/dagster.yaml), the daemon, two
Celery workers on a Redis broker, and a backfill of four daily partitions through raw -> incidents in
lake mode, with one worker killed half-way. The results must equal an embedded run of the same days."""

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

import duckdb
import pytest

from bankanom_pipeline import settings
from bankanom_pipeline.warehouse import lake
from tests import servers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "distributed"
TRAIN_DAY = dt.date(2026, 2, 1)
DAYS = [(TRAIN_DAY + dt.timedelta(days=i)).isoformat() for i in range(1, 5)]
RATE = 0.4  # events per second: ~35k a day, enough traffic for every scenario, quick to score
TABLES = ("raw_logs", "validated_logs", "features_events", "scored_events", "incidents", "incident_events")
WORKERS = ("w1", "w2")
KILL_AFTER = 12  # steps w1 has begun before it is killed (a partition is ~23 steps)


def _cli(env: dict, *args: str, log: Path) -> float:
    began = time.perf_counter()
    with log.open("a") as out:
        result = subprocess.run(
            [sys.executable, "-m", "bankanom_pipeline.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    assert result.returncode == 0, f"bankanom {' '.join(args)} failed: {log.read_text()[-4000:]}"
    return time.perf_counter() - began


def _write_landing(landing: Path) -> None:
    from bankanom_pipeline.cli import _load, _write_day

    cfg = _load(None)
    generation = cfg.log_generation.model_copy(update={"logs_per_second": RATE})
    cfg = cfg.model_copy(update={"log_generation": generation})
    for i, day in enumerate([TRAIN_DAY.isoformat(), *DAYS]):
        _write_day(cfg.model_copy(update={"seed": 100 + i}), day, landing)


def _spawn(env: dict, args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        # a session of its own: killing the worker kills its pool processes too, like losing its machine
        return subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


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


@pytest.fixture(scope="module")
def backfill(tmp_path_factory):
    servers.require_servers()
    root = tmp_path_factory.mktemp("distributed")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    landing = root / "landing"
    _write_landing(landing)
    base = {**os.environ, "BANKANOM_LANDING_DIR": str(landing), "PYTHONUNBUFFERED": "1"}
    for name in ("BANKANOM_STORAGE", "BANKANOM_EXECUTOR", "BANKANOM_LAKE_ROOT", "BANKANOM_WAREHOUSE"):
        base.pop(name, None)

    # the reference: the embedded default, one day after another in this process's own runs
    embedded = {
        **base,
        "BANKANOM_DATA_DIR": str(root / "embedded"),
        "DAGSTER_HOME": str(root / "embedded-home"),
    }
    log = ARTIFACTS / "embedded.log"
    log.write_text("")
    _cli(embedded, "run", "--job", "features_job", "--date", TRAIN_DAY.isoformat(), log=log)
    _cli(embedded, "train", "--end-date", TRAIN_DAY.isoformat(), log=log)
    embedded_seconds = _cli(embedded, "backfill", "--start", DAYS[0], "--end", DAYS[-1], log=log)

    with servers.postgres() as pg, servers.redis(root / "redis.log") as redis_url:
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
        }
        log = ARTIFACTS / "distributed.log"
        log.write_text("")
        _cli(distributed, "check-deployment", log=log)
        _cli(distributed, "run", "--job", "features_job", "--date", TRAIN_DAY.isoformat(), log=log)
        _cli(distributed, "train", "--end-date", TRAIN_DAY.isoformat(), log=log)

        bin_dir = Path(sys.executable).parent

        def worker(name: str) -> subprocess.Popen:
            command = [str(bin_dir / "celery"), "-A", "bankanom_pipeline.distributed.celery_app", "worker"]
            command += ["-Q", "dagster", "--concurrency", "1", "-n", f"{name}@%h", "--loglevel", "INFO"]
            return _spawn(distributed, command, ARTIFACTS / f"worker-{name}.log")

        workers = {name: worker(name) for name in WORKERS}
        daemon = _spawn(
            distributed,
            [str(bin_dir / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
            ARTIFACTS / "daemon.log",
        )
        saved = {k: os.environ.get(k) for k in pg}
        os.environ.update(pg)  # infra/dagster.yaml reads them when this process opens the instance
        try:
            import dagster as dg

            instance = dg.DagsterInstance.from_config(str(home))
            began = time.perf_counter()
            subprocess.run(
                [
                    str(bin_dir / "dagster"),
                    "job",
                    "backfill",
                    "-j",
                    "pipeline_job",
                    "-w",
                    str(ROOT / "workspace.yaml"),
                    "--partitions",
                    ",".join(DAYS),
                    "--noprompt",
                ],
                env=distributed,
                cwd=ROOT,
                check=True,
                capture_output=True,
                timeout=300,
            )
            killed = None
            deadline = time.monotonic() + 900
            while True:
                runs = instance.get_runs(filters=dg.RunsFilter(job_name="pipeline_job"))
                run_ids = [r.run_id for r in runs]
                steps = _celery_steps(instance, run_ids)
                if killed is None:
                    done = _finished_steps(instance, run_ids)
                    on_w1 = [s for s in steps if s[2] == "w1"]
                    running_on_w1 = [s for s in on_w1 if (s[0], s[1]) not in done]
                    # half-way: both workers busy for a while, w1 inside a step
                    if {s[2] for s in steps} == set(WORKERS) and len(on_w1) >= KILL_AFTER and running_on_w1:
                        os.killpg(workers["w1"].pid, signal.SIGKILL)
                        workers["w1"].wait()
                        killed = running_on_w1[-1]
                        workers["w3"] = worker("w3")  # what an orchestrator does: a replacement comes up
                finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}
                all_done = len(runs) >= len(DAYS) and {r.status for r in runs} <= finished
                # failed runs are retried by the daemon (run_retries): stop at success or when it gave up
                if all_done and (
                    all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs) or len(runs) > 3 * len(DAYS)
                ):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"backfill did not finish: {[(r.run_id, r.status) for r in runs]}")
                time.sleep(0.3)
            distributed_seconds = time.perf_counter() - began
            runs = instance.get_runs(filters=dg.RunsFilter(job_name="pipeline_job"))
            steps = _celery_steps(instance, [r.run_id for r in runs])
            timings = {
                "partitions": len(DAYS),
                "events_per_day": round(RATE * 86_400),
                "embedded_sequential_seconds": round(embedded_seconds, 1),
                "distributed_backfill_seconds": round(distributed_seconds, 1),
                "killed": list(killed[:3]) if killed else None,
                "steps_per_worker": {w: sum(s[2] == w for s in steps) for w in sorted({s[2] for s in steps})},
            }
            (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2))
            yield {
                "instance_home": home,
                "pg": pg,
                "runs": runs,
                "steps": steps,
                "killed": killed,
                "embedded": duckdb.connect(str(root / "embedded" / "warehouse.duckdb"), read_only=True),
                "lake": lake.connect(str(root / "distributed" / "lake")),
            }
            instance.dispose()
        finally:
            _stop(daemon)
            for process in workers.values():
                _stop(process)
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
    assert all(r.tags.get("dagster/backfill") for r in runs), "runs were not launched by a backfill"
    assert {s[2] for s in backfill["steps"]} >= set(WORKERS)
    # a fresh instance object (another process would do the same) reads the history from Postgres
    fresh = dg.DagsterInstance.from_config(str(backfill["instance_home"]))
    try:
        assert type(fresh.run_storage).__name__ == "PostgresRunStorage"
        assert {r.run_id for r in fresh.get_runs(filters=dg.RunsFilter(job_name="pipeline_job"))} >= {
            r.run_id for r in runs if r.status == dg.DagsterRunStatus.SUCCESS
        }
    finally:
        fresh.dispose()


def test_the_killed_workers_step_ran_again_on_the_other_worker(backfill):
    killed = backfill["killed"]
    assert killed is not None, "no step was caught running on w1"
    run_id, step_key, worker, at = killed
    again = [s for s in backfill["steps"] if s[0] == run_id and s[1] == step_key and s[3] > at]
    assert worker == "w1" and again and again[0][2] in {"w2", "w3"}


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
    if table == "scored_events":
        scores = "SELECT partition_date::VARCHAR, sum(is_anomaly::INT), round(sum(ensemble_score), 6) FROM scored_events GROUP BY 1 ORDER BY 1"
        assert [r for r in lake_con.execute(scores).fetchall() if r[0] in DAYS] == [
            r for r in embedded.execute(scores).fetchall() if r[0] in DAYS
        ]


def test_bad_deployment_settings_fail_fast_naming_the_setting(tmp_path):
    env = {**os.environ, "BANKANOM_DATA_DIR": str(tmp_path)}
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
        result = subprocess.run(
            [sys.executable, "-m", "bankanom_pipeline.cli", "check-deployment"],
            env={**env, **setting},
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 2 and message in output, output
        assert "Traceback" not in output
    with pytest.raises(settings.SettingError, match="BANKANOM_EXECUTOR='threads'"):
        os.environ["BANKANOM_EXECUTOR"] = "threads"
        try:
            settings.executor()
        finally:
            del os.environ["BANKANOM_EXECUTOR"]
