"""Sensors and schedules, evaluated the way the daemon does (build_sensor_context, instance_for_test),
on real landing folders and real snapshot files."""

from __future__ import annotations

import datetime as dt
import json
import os

import dagster as dg
import duckdb
import numpy as np
import pytest

from bankanom_pipeline.automation import alerts, landing
from bankanom_pipeline.automation.config import default_automation_config
from bankanom_pipeline.automation.drift import judge, psi, uniform_psi
from bankanom_pipeline.definitions import defs
from bankanom_pipeline.defs.automation.schedules import retrain_schedule, scoring_catchup_schedule
from bankanom_pipeline.defs.automation.sensors import drift_sensor, landing_sensor
from bankanom_pipeline.defs.resources import SnapshotPublisherResource, WarehouseResource

CONFIG = default_automation_config()


def land(root, day: str, name: str, lines: int = 3) -> None:
    folder = root / "logs" / day
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(f'{{"n": {i}}}\n' for i in range(lines)))


def evaluate(sensor, cursor, landing_dir, instance):
    context = dg.build_sensor_context(
        cursor=cursor,
        instance=instance,
        resources={
            "warehouse": WarehouseResource(
                database=str(landing_dir / "w.duckdb"), landing_dir=str(landing_dir)
            )
        },
        definitions=defs,
    )
    result = sensor(context)
    return result, result.cursor


def test_landing_sensor_requests_each_touched_partition_once(tmp_path):
    with dg.instance_for_test() as instance:
        land(tmp_path, "2026-01-05", "a.jsonl")
        land(tmp_path, "2026-01-05", "b.jsonl")
        land(tmp_path, "2026-01-06", "c.jsonl")
        (tmp_path / "logs" / "2026-01-06" / ".d.jsonl.part").write_text("half a line")  # still being written
        (tmp_path / "logs" / "not-a-day").mkdir()
        result, cursor = evaluate(landing_sensor, None, tmp_path, instance)
        assert sorted(r.partition_key for r in result.run_requests) == ["2026-01-05", "2026-01-06"]
        assert {r.tags["bankanom/new_files"] for r in result.run_requests} == {"2", "1"}
        assert all(r.job_name == "features_job" for r in result.run_requests)

        # nothing new: nothing requested, cursor unchanged (restart-safe: it is all in the cursor)
        again, cursor2 = evaluate(landing_sensor, cursor, tmp_path, instance)
        assert not again.run_requests and json.loads(cursor2) == json.loads(cursor)

        # a late file for the older partition re-runs exactly that partition
        land(tmp_path, "2026-01-05", "late.jsonl")
        late, cursor3 = evaluate(landing_sensor, cursor2, tmp_path, instance)
        assert [r.partition_key for r in late.run_requests] == ["2026-01-05"]
        assert late.run_requests[0].tags["bankanom/new_files"] == "1"

        # a re-delivered file (same name, new content) counts as new; the same set gives the same run key
        land(tmp_path, "2026-01-06", "c.jsonl", lines=5)
        redelivered, _ = evaluate(landing_sensor, cursor3, tmp_path, instance)
        replay, _ = evaluate(landing_sensor, cursor3, tmp_path, instance)
        assert [r.partition_key for r in redelivered.run_requests] == ["2026-01-06"]
        assert redelivered.run_requests[0].run_key == replay.run_requests[0].run_key


def test_landing_sensor_watches_transaction_deliveries_too(tmp_path):
    with dg.instance_for_test() as instance:
        land(tmp_path, "2026-01-05", "a.jsonl")
        folder = tmp_path / "transactions" / "2026-01-06"
        folder.mkdir(parents=True)
        (folder / "bank.csv").write_text("TransactionID,AccountID\n")
        (folder / ".bank2.csv.part").write_text("half")  # still being copied in
        (folder / "notes.txt").write_text("x")  # never read: named, not requested
        result, cursor = evaluate(landing_sensor, None, tmp_path, instance)
        by_job = {r.job_name: r.partition_key for r in result.run_requests}
        assert by_job == {"features_job": "2026-01-05", "transaction_features_job": "2026-01-06"}
        assert "transactions/2026-01-06/bank.csv" in json.loads(cursor)["seen"]
        assert landing.unreadable(tmp_path / "transactions", landing.transaction_files) == [
            "2026-01-06/notes.txt"
        ]

        # labels arriving after their CSV re-run that delivery day (transaction_labels reads them)
        (folder / "bank.labels.csv").write_text("TransactionID,is_fraud,pattern,instance_id\n")
        late, _ = evaluate(landing_sensor, cursor, tmp_path, instance)
        assert [(r.job_name, r.partition_key) for r in late.run_requests] == [
            ("transaction_features_job", "2026-01-06")
        ]


def test_files_outside_the_partitions_are_not_requested(tmp_path):
    with dg.instance_for_test() as instance:
        land(tmp_path, "1999-01-01", "old.jsonl")
        result, cursor = evaluate(landing_sensor, None, tmp_path, instance)
        assert not result.run_requests
        assert "1999-01-01/old.jsonl" in json.loads(cursor)["seen"]


def test_entries_that_will_never_be_loaded_are_named(tmp_path):
    land(tmp_path, "2026-01-06", "good.jsonl")
    (tmp_path / "logs" / "2026-01-06" / "notes.txt").write_text("x")
    (tmp_path / "logs" / "2026-01-06" / ".writing.jsonl.part").write_text("x")
    (tmp_path / "logs" / "misc").mkdir()
    assert landing.unreadable(tmp_path / "logs") == ["2026-01-06/notes.txt", "misc"]


def test_cursor_forgets_files_that_left_the_landing_zone(tmp_path):
    land(tmp_path, "2026-01-06", "kept.jsonl")
    cursor = landing.Cursor({"2026-01-01/archived.jsonl": "1:1", "2026-01-06/kept.jsonl": "1:1"})
    cursor.forget_missing(landing.scan(tmp_path / "logs"))
    assert list(cursor.seen) == ["2026-01-06/kept.jsonl"]


def _at(monkeypatch, when: str) -> None:
    monkeypatch.setattr(landing, "now", lambda: dt.datetime.fromisoformat(when).timestamp())


def test_an_open_day_is_appended_file_by_file_and_rerun_whole_once_it_closes(tmp_path, monkeypatch):
    close = landing.closes_at("2026-01-06", CONFIG.landing.live_day_close_seconds)
    assert close == dt.datetime(2026, 1, 7, 1, 1, tzinfo=dt.UTC).timestamp()  # midnight + 1 h + 60 s
    with dg.instance_for_test() as instance:
        _at(monkeypatch, "2026-01-06T12:00:00+00:00")
        land(tmp_path, "2026-01-06", "a.jsonl")
        land(tmp_path, "2026-01-05", "old.jsonl")  # yesterday, closed: re-run whole as before
        result, cursor = evaluate(landing_sensor, None, tmp_path, instance)
        by_job = {r.job_name: r for r in result.run_requests}
        assert sorted(by_job) == ["features_job", "landing_append_job"]
        assert by_job["features_job"].partition_key == "2026-01-05"
        append = by_job["landing_append_job"]
        assert append.partition_key is None  # an op job: it changes the day, it does not rebuild it
        assert append.run_config["ops"]["append_landing_files"]["config"] == {
            "day": "2026-01-06",
            "files": ["2026-01-06/a.jsonl"],
        }
        assert json.loads(cursor)["open_days"] == ["2026-01-06"]

        land(tmp_path, "2026-01-06", "b.jsonl")  # the next rotation: that file alone
        land(tmp_path, "2026-01-06", "a.jsonl", lines=5)  # and a re-delivery: its own lines replaced
        more, cursor = evaluate(landing_sensor, cursor, tmp_path, instance)
        [request] = more.run_requests
        assert request.run_config["ops"]["append_landing_files"]["config"]["files"] == [
            "2026-01-06/a.jsonl",
            "2026-01-06/b.jsonl",
        ]

        # still inside the lateness allowed after midnight: nothing to do yet
        _at(monkeypatch, "2026-01-07T01:00:59+00:00")
        waiting, cursor = evaluate(landing_sensor, cursor, tmp_path, instance)
        assert not waiting.run_requests

        # closed: the whole day once, through pipeline_job (the system of record)
        _at(monkeypatch, "2026-01-07T01:01:00+00:00")
        closed, cursor = evaluate(landing_sensor, cursor, tmp_path, instance)
        assert [(r.job_name, r.partition_key) for r in closed.run_requests] == [
            ("pipeline_job", "2026-01-06")
        ]
        assert json.loads(cursor)["open_days"] == []
        again, cursor = evaluate(landing_sensor, cursor, tmp_path, instance)
        assert not again.run_requests

        # a late file for the closed day re-runs what it touches, as before
        land(tmp_path, "2026-01-06", "late.jsonl")
        late, _ = evaluate(landing_sensor, cursor, tmp_path, instance)
        assert [(r.job_name, r.partition_key) for r in late.run_requests] == [("features_job", "2026-01-06")]


def test_the_lake_has_no_appends(tmp_path, monkeypatch):
    _at(monkeypatch, "2026-01-06T12:00:00+00:00")
    land(tmp_path, "2026-01-06", "a.jsonl")
    context = dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        resources={
            "warehouse": WarehouseResource(
                storage="lake", lake_root=str(tmp_path / "lake"), landing_dir=str(tmp_path)
            )
        },
        definitions=defs,
    )
    assert [(r.job_name, r.partition_key) for r in landing_sensor(context).run_requests] == [
        ("features_job", "2026-01-06")
    ]


def test_files_a_run_already_loaded_are_not_loaded_again(tmp_path, monkeypatch):
    """What bankanom up finds after bankanom demo: days loaded by CLI runs, with no sensor cursor."""
    from bankanom_pipeline.defs.ingest.assets import raw_logs

    _at(monkeypatch, "2026-01-06T12:00:00+00:00")
    warehouse = WarehouseResource(database=str(tmp_path / "w.duckdb"), landing_dir=str(tmp_path))
    with dg.instance_for_test() as instance:
        land(tmp_path, "2026-01-05", "a.jsonl")
        land(tmp_path, "2026-01-05", "b.jsonl")
        land(tmp_path, "2026-01-06", "c.jsonl")
        for day in ("2026-01-05", "2026-01-06"):
            assert dg.materialize(
                [raw_logs], partition_key=day, resources={"warehouse": warehouse}, instance=instance
            ).success
        result, cursor = evaluate(landing_sensor, None, tmp_path, instance)
        assert not result.run_requests
        assert sorted(json.loads(cursor)["seen"]) == [
            "2026-01-05/a.jsonl",
            "2026-01-05/b.jsonl",
            "2026-01-06/c.jsonl",
        ]

        # a file re-delivered since the load, and a new one, are loaded: only they
        land(tmp_path, "2026-01-05", "b.jsonl", lines=7)
        land(tmp_path, "2026-01-06", "d.jsonl")
        fresh, _ = evaluate(landing_sensor, None, tmp_path, instance)
        requested = {r.job_name: r for r in fresh.run_requests}
        assert requested["features_job"].partition_key == "2026-01-05"
        assert requested["features_job"].tags["bankanom/new_files"] == "1"
        assert requested["landing_append_job"].run_config["ops"]["append_landing_files"]["config"][
            "files"
        ] == ["2026-01-06/d.jsonl"]


def test_the_close_delay_covers_the_online_lateness_and_a_rotation():
    import inspect

    from bankanom_pipeline.cli import up
    from bankanom_pipeline.online.engine import OnlineEngine

    rotation = inspect.signature(up).parameters["rotate_seconds"].default
    assert CONFIG.landing.live_day_close_seconds >= OnlineEngine.DEFAULT_LATENESS_S + rotation


# -- drift --------------------------------------------------------------------------------------------


def test_psi_is_zero_for_identical_shares_and_grows_with_the_shift():
    even = np.full(10, 0.1)
    assert psi(even, even) == 0
    # hand-computed: (0.2 - 0.1) ln 2 + (0.0001 - 0.1) ln(0.001) for one bin moved onto another
    moved = even.copy()
    moved[0], moved[1] = 0.0, 0.2
    assert psi(even, moved) == pytest.approx(0.1 * np.log(2) + (1e-4 - 0.1) * np.log(1e-3), rel=1e-9)
    rng = np.random.default_rng(0)
    assert uniform_psi(rng.uniform(size=100_000), 10) < 0.001
    assert uniform_psi(rng.beta(2, 2, size=100_000), 10) > uniform_psi(rng.beta(1.2, 1.2, size=100_000), 10)


def test_drift_thresholds():
    rng = np.random.default_rng(1)
    calm = {"isolation_forest": rng.uniform(size=20_000), "local_outlier_factor": rng.uniform(size=20_000)}
    assert not judge(calm, threshold=0.25, bins=10, min_events=1000).drifted
    shifted = {**calm, "local_outlier_factor": rng.beta(5, 1, size=20_000)}  # mass moves to high scores
    verdict = judge(shifted, threshold=0.25, bins=10, min_events=1000)
    assert verdict.drifted and "local_outlier_factor" in verdict.reason
    assert verdict.psi["local_outlier_factor"] > 0.25 > verdict.psi["isolation_forest"]
    assert not judge(shifted, threshold=50, bins=10, min_events=1000).drifted
    few = judge({k: v[:10] for k, v in shifted.items()}, threshold=0.25, bins=10, min_events=1000)
    assert not few.drifted and "only 10" in few.reason


def publish_scores(root, name: str, if_scores, lof_scores) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(root / name)) as con:
        con.execute(
            "CREATE TABLE scored_events AS SELECT DATE '2026-01-06' AS partition_date, unnest(?) AS if_score, "
            "unnest(?) AS lof_score",
            [list(if_scores), list(lof_scores)],
        )
    (root / "current.json").write_text(json.dumps({"file": name}))


def test_drift_sensor_requests_training_once_per_drifted_snapshot(tmp_path, monkeypatch):
    # the snapshots resource's folder is what the sensor reads, not the environment's default
    monkeypatch.setenv("BANKANOM_SNAPSHOTS_DIR", str(tmp_path / "default-snapshots"))
    resources = {"snapshots": SnapshotPublisherResource(snapshots_dir=str(tmp_path))}
    rng = np.random.default_rng(2)
    with dg.instance_for_test() as instance:

        def drift(cursor=None):
            return drift_sensor(
                dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
            )

        assert isinstance(drift(), dg.SkipReason)
        publish_scores(tmp_path, "s1.duckdb", rng.uniform(size=8000), rng.uniform(size=8000))
        calm = drift()
        assert not calm.run_requests and calm.cursor == "s1.duckdb"
        publish_scores(tmp_path, "s2.duckdb", rng.beta(6, 1, size=8000), rng.uniform(size=8000))
        drifted = drift("s1.duckdb")
        (request,) = drifted.run_requests
        assert (
            request.run_key == "drift:s2.duckdb"
            and float(request.tags["bankanom/psi_isolation_forest"]) > 0.25
        )
        assert isinstance(drift("s2.duckdb"), dg.SkipReason)  # the same snapshot is judged once


# -- schedules and alerts -----------------------------------------------------------------------------


def test_schedules_target_the_right_partition_and_window():
    when = dt.datetime(2026, 1, 7, 13, 15, tzinfo=dt.UTC)
    with dg.instance_for_test() as instance:
        catchup = scoring_catchup_schedule(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        )
        assert catchup.partition_key == "2026-01-07"
        retrain = retrain_schedule(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
        )
        ops = retrain.run_config["ops"]
        assert (
            ops["isolation_forest_model"]["config"]["end_date"]
            == "2026-01-06"
            == (ops["local_outlier_factor_model"]["config"]["end_date"])
        )
    statuses = {s.name: s.default_status for s in defs.get_repository_def().schedule_defs}
    assert set(statuses.values()) == {dg.DefaultScheduleStatus.STOPPED}
    sensors = {s.name: s.default_status for s in defs.get_repository_def().sensor_defs}
    assert set(sensors.values()) == {dg.DefaultSensorStatus.RUNNING}


def test_alert_recording_with_and_without_a_webhook(tmp_path):
    db = tmp_path / "alerts.duckdb"
    alerts.record(
        db, run_id="r1", job_name="features_job", partition_key="2026-01-06", error="boom", webhook=None
    )
    unreachable = "http://127.0.0.1:9/hook"  # discard port: nothing listens
    second = alerts.record(
        db, run_id="r2", job_name="train_job", partition_key=None, error="x", webhook=unreachable
    )
    assert second["webhook_status"].startswith("error")
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT run_id, job_name, partition_key, error, webhook_status FROM pipeline_alerts ORDER BY run_id"
        ).fetchall()
    assert rows[0] == ("r1", "features_job", "2026-01-06", "boom", None)
    assert rows[1][:2] == ("r2", "train_job") and rows[1][4].startswith("error")
    assert os.path.getsize(db) > 0
