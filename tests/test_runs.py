"""The run record (pipeline_runs): written by the run-record sensor and the CLI from a real Dagster
instance's public run API, read by the console from its published copy, without Dagster: beside the
embedded warehouse's published tables, or in a lake that is a folder (``BANKANOM_STORAGE=lake``). That a
real `bankanom` process records its runs with no daemon is proven by the backfill test
(test_automation_e2e.py)."""

import datetime as dt
import json
import os
import re

import dagster as dg
import duckdb
import pytest
from fastapi.testclient import TestClient

from bankanom_api.app import create_app
from bankanom_api.runs import recent_runs
from bankanom_api.settings import ApiSettings
from bankanom_pipeline.automation import records, run_records
from bankanom_pipeline.defs.automation import run_record_sensor as sensor
from bankanom_pipeline.warehouse import lake, published

KEY = "runs-test-key"


@dg.op
def _ok():
    return 1


@dg.op
def _broken():
    raise RuntimeError("boom")


OK_JOB = dg.GraphDefinition(name="ok_job", node_defs=[_ok]).to_job()
BROKEN_JOB = dg.GraphDefinition(name="broken_job", node_defs=[_broken]).to_job()


# where readers find the record, by storage mode
READERS_ROOT = {"embedded": "published", "lake": "lake"}
BOTH_MODES = pytest.mark.parametrize("paths", sorted(READERS_ROOT), indirect=True)


@pytest.fixture
def paths(request, tmp_path, monkeypatch):
    """The sensors' file, the published root and a lake folder in ``tmp_path``; embedded mode unless the
    test asks for another (``BOTH_MODES``)."""
    monkeypatch.setenv("BANKANOM_ALERTS_DB", str(tmp_path / "alerts.duckdb"))
    monkeypatch.setenv("BANKANOM_PUBLISHED_DIR", str(tmp_path / "published"))
    monkeypatch.setenv("BANKANOM_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("BANKANOM_STORAGE", getattr(request, "param", "embedded"))
    return tmp_path


@pytest.fixture
def instance():
    """In memory, over the same SQL run and event storage as the default SQLite instance."""
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def _tick(instance, cursor=None):
    """One evaluation of the sensor: (the runs it recorded, its new cursor)."""
    data = sensor.run_record_sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))
    return int(data.skip_message.split()[0]), data.cursor


def _stored(paths) -> list[tuple]:
    with duckdb.connect(str(paths / "alerts.duckdb"), read_only=True) as con:
        return con.sql("SELECT run_id, status, failed_steps FROM pipeline_runs ORDER BY run_id").fetchall()


@BOTH_MODES
def test_the_sensor_records_a_real_instance_and_the_console_reads_it_newest_first(paths, instance):
    first = OK_JOB.execute_in_process(instance=instance, tags={"dagster/partition": "2026-01-05"})
    second = BROKEN_JOB.execute_in_process(instance=instance, raise_on_error=False)
    recorded, _ = _tick(instance)
    assert recorded == 2
    root = paths / READERS_ROOT[os.environ["BANKANOM_STORAGE"]]
    assert records.published_root() == root
    runs, problem = recent_runs()
    assert problem is None
    assert [(r["run_id"], r["job"], r["status"]) for r in runs] == [
        (second.run_id, "broken_job", "FAILURE"),
        (first.run_id, "ok_job", "SUCCESS"),
    ]
    assert runs[1]["partition"] == "2026-01-05" and runs[1]["seconds"] >= 0
    assert isinstance(runs[1]["started"], dt.datetime) and runs[1]["started"].tzinfo is None  # UTC
    assert sorted(_stored(paths)) == sorted(
        [(first.run_id, "SUCCESS", None), (second.run_id, "FAILURE", "_broken")]
    )
    # `bankanom sql` reads the same root, and sees the record as one more table (one row a run)
    with published.connect(root) as reader:
        assert sorted(reader.sql("SELECT run_id FROM pipeline_runs").fetchall()) == sorted(
            [(first.run_id,), (second.run_id,)]
        )


def test_in_a_lake_folder_the_record_is_one_more_table_of_the_lakes_layout(paths, instance, monkeypatch):
    monkeypatch.setenv("BANKANOM_STORAGE", "lake")
    for _ in range(2):
        OK_JOB.execute_in_process(instance=instance)
        _tick(instance)
    root = paths / "lake"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "pipeline_runs",
        "pipeline_runs/data.parquet",
    ]
    assert not (paths / "published").exists()
    with lake.connect(str(root)) as con:  # the pipeline's own view of the lake: one file, no duplicates
        assert con.sql("SELECT count(*), count(DISTINCT run_id) FROM pipeline_runs").fetchone() == (2, 2)


@BOTH_MODES
def test_no_run_record_is_a_note_not_an_error(paths):
    runs, problem = recent_runs()
    assert runs == [] and "no run recorded yet" in problem


def test_an_object_store_lake_gets_no_copy_and_the_console_says_where_the_record_is(
    paths, instance, monkeypatch
):
    monkeypatch.setenv("BANKANOM_STORAGE", "lake")
    monkeypatch.setenv("BANKANOM_LAKE_ROOT", "s3://bank-lake/prod")
    result = OK_JOB.execute_in_process(instance=instance)
    sensor.record_run(instance, result.run_id)
    assert _stored(paths) == [(result.run_id, "SUCCESS", None)]
    runs, problem = recent_runs()
    assert runs == [] and "s3://bank-lake/prod" in problem and str(paths / "alerts.duckdb") in problem


def test_a_run_keeps_one_row_at_its_latest_status_whatever_order_the_writes_come_in(paths):
    db, at = paths / "alerts.duckdb", dt.datetime(2026, 1, 5, 8)

    def state(status: str, seconds: int) -> run_records.PipelineRun:
        ended = at + dt.timedelta(seconds=seconds) if status != "STARTED" else None
        return run_records.PipelineRun(
            "run-1", "pipeline_job", "2026-01-05", status, at, ended, None, at + dt.timedelta(seconds=seconds)
        )

    run_records.upsert(db, [state("STARTED", 0)])
    assert [(r["status"], r["seconds"]) for r in run_records.latest(paths / "published")] == [
        ("STARTED", None)
    ]
    run_records.upsert(db, [state("SUCCESS", 42)])
    run_records.upsert(db, [state("STARTED", 0)])  # a late copy of an older state changes nothing
    assert [(r["status"], r["seconds"]) for r in run_records.latest(paths / "published")] == [
        ("SUCCESS", 42.0)
    ]
    assert _stored(paths) == [("run-1", "SUCCESS", None)]


def test_the_sensor_records_only_what_changed_and_rereads_a_late_stored_change(paths, instance):
    OK_JOB.execute_in_process(instance=instance)
    recorded, cursor = _tick(instance)
    assert recorded == 1
    recorded, cursor = _tick(instance, cursor)
    assert recorded == 0  # nothing changed: the file is not even opened
    late = OK_JOB.execute_in_process(instance=instance)
    recorded, cursor = _tick(instance, cursor)
    assert recorded == 1 and late.run_id in {r[0] for r in _stored(paths)}
    # a change stamped before the newest one the sensor has seen, stored after it read them
    missed = OK_JOB.execute_in_process(instance=instance)
    state = json.loads(cursor)
    updated = instance.get_run_record_by_id(missed.run_id).update_timestamp
    state["after"] = (updated + sensor.OVERLAP / 2).isoformat()
    recorded, _ = _tick(instance, json.dumps(state))
    assert recorded == 1 and missed.run_id in {r[0] for r in _stored(paths)}


@BOTH_MODES
def test_the_cli_records_its_own_run_without_the_sensor(paths, instance, monkeypatch):
    result = BROKEN_JOB.execute_in_process(instance=instance, raise_on_error=False)
    sensor.record_run(instance, result.run_id)
    assert _stored(paths) == [(result.run_id, "FAILURE", "_broken")]
    assert [r["run_id"] for r in recent_runs()[0]] == [result.run_id]
    # a record that cannot be written is a warning: the run itself went as it went
    monkeypatch.setattr(records, "ATTEMPTS", 1)
    (paths / "alerts.duckdb").unlink()
    (paths / "alerts.duckdb").mkdir()
    sensor.record_run(instance, result.run_id)


def _login(client: TestClient) -> None:
    form = client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert client.post("/console/login", data={"csrf": csrf, "api_key": KEY}).status_code == 303


@BOTH_MODES
def test_the_console_lists_the_recorded_runs_and_says_when_there_are_none(paths, instance):
    app = create_app(
        ApiSettings(
            api_keys=[KEY],
            models_dir=paths / "models",
            snapshots_dir=paths / "snapshots",
            feedback_db=paths / "feedback.duckdb",
            alerts_db=paths / "alerts.duckdb",
        )
    )
    with TestClient(app, follow_redirects=False) as client:
        _login(client)
        page = client.get("/console/models")
        assert page.status_code == 200 and "no run recorded yet" in page.text and 'id="runs"' not in page.text
        run = BROKEN_JOB.execute_in_process(instance=instance, raise_on_error=False)
        _tick(instance)
        page = client.get("/console/models")
        assert "no run recorded yet" not in page.text
        rows = page.text.split('<table id="runs">')[1].split("</table>")[0]
        assert "broken_job" in rows and "FAILURE" in rows and run.run_id[:8] in rows
