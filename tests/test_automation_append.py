"""The live day's per-file path: a landing file appended to its day, validated, replacing only its own
lines when re-delivered, with the same rows a whole-day load and validation of the same files give."""

import json
import os

import pytest

from bankanom_pipeline.ingest.append import DeclaredRules, append_file
from bankanom_pipeline.ingest.raw_logs import load_partition
from bankanom_pipeline.validation.logs import validate_partition
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse
from tests.conftest import DAY, DAY_START
from tests.test_validation import CASES, SERVICES, record

ROWS = {
    "raw_logs": "SELECT source_file, line_no, event_id FROM raw_logs",
    "raw_logs_rejected": "SELECT source_file, line_no, reason FROM raw_logs_rejected",
    "quarantine_logs": "SELECT source_file, line_no, event_id, rules, kind FROM quarantine_logs",
    "validated_logs": "SELECT source_file, line_no, event_id, ts FROM validated_logs",
}


def _state(con) -> dict[str, list]:
    return {table: sorted(con.execute(sql).fetchall(), key=str) for table, sql in ROWS.items()}


def _files(folder):
    """Three files of one day: every rule broken somewhere, raw-level rejects, an id repeated within a
    file and ids repeated across files (the earlier file's line is the one validated)."""
    cases = [json.dumps(r) for r, _ in CASES.values()]
    first = [*cases[: len(cases) // 2], json.dumps(record("good-1"))]  # a duplicate in its own file
    second = [*cases[len(cases) // 2 :], "{not json", json.dumps(record("good-1", message="again"))]
    third = [json.dumps(record("late-1")), '{"event_id": "x"}', json.dumps(record("ts-garbage"))]
    names = []
    for name, lines in (("a.jsonl", first), ("b.jsonl", second), ("c.jsonl", third)):
        (folder / name).write_text("\n".join(lines) + "\n")
        names.append(folder / name)
    return names


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing" / "logs"
    (root / DAY).mkdir(parents=True)
    return root


def test_appending_file_by_file_gives_the_whole_day_load_and_validation(tmp_path, landing):
    files = _files(landing / DAY)
    appended = EmbeddedWarehouse(tmp_path / "appended.duckdb").connect()
    counts = [append_file(appended, landing, path, SERVICES) for path in files]
    whole = EmbeddedWarehouse(tmp_path / "whole.duckdb").connect()
    raw = load_partition(whole, landing, DAY)
    day = validate_partition(whole, DAY, SERVICES, DeclaredRules())[0]
    assert _state(appended) == _state(whole)
    # every line accounted for, per file and summed over the day
    for c in counts:
        assert (
            c.lines_read == c.loaded + c.rejected and c.loaded == c.validated + c.quarantined + c.duplicates
        )
    assert sum(c.lines_read for c in counts) == raw.lines_read
    assert sum(c.duplicates for c in counts) == day.duplicates == 3  # good-1 twice, ts-garbage once
    assert sum(c.validated for c in counts) == day.validated > 0
    assert sum(c.quarantined for c in counts) == day.quarantined
    assert raw.landing_files == {f"{DAY}/{p.name}": c.signature for p, c in zip(files, counts, strict=True)}


def test_a_redelivered_file_replaces_its_own_lines_not_the_day(tmp_path, landing):
    a, b, c = _files(landing / DAY)
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    for path in (a, b, c):
        assert append_file(con, landing, path, SERVICES).replaced == 0
    before = {t: [r for r in rows if r[0] != f"{DAY}/b.jsonl"] for t, rows in _state(con).items()}
    lines_before = len(b.read_text().splitlines())
    b.write_text(json.dumps(record("fixed-1")) + "\n" + json.dumps(record("good-1")) + "\n")
    os.utime(b, ns=(1, 1))
    again = append_file(con, landing, b, SERVICES)
    assert again.replaced == lines_before
    assert (again.lines_read, again.validated, again.duplicates) == (2, 1, 1)  # good-1 is a.jsonl's
    after = _state(con)
    assert {t: [r for r in rows if r[0] != f"{DAY}/b.jsonl"] for t, rows in after.items()} == before
    assert [r[2] for r in after["validated_logs"] if r[0] == f"{DAY}/b.jsonl"] == ["fixed-1"]
    # and the same file appended twice (a retried run) changes nothing
    assert append_file(con, landing, b, SERVICES).replaced == 2
    assert _state(con) == after


def test_a_file_that_does_not_reconcile_leaves_the_day_as_it_was(tmp_path, landing, monkeypatch):
    a, b, _ = _files(landing / DAY)
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    append_file(con, landing, a, SERVICES)
    before = _state(con)
    from bankanom_pipeline.ingest import append

    monkeypatch.setattr(
        append, "REJECT_SQL", "SELECT ?::DATE"
    )  # rejected lines lost: read != loaded + rejected
    with pytest.raises(RuntimeError, match="do not reconcile"):
        append_file(con, landing, b, SERVICES)
    assert _state(con) == before
    assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0] == 0


def test_the_append_job_records_every_file_the_day_holds(tmp_path, landing, monkeypatch):
    import dagster as dg

    from bankanom_pipeline.defs.ingest.jobs import landing_append_job
    from bankanom_pipeline.defs.ingest.records import recorded_files
    from bankanom_pipeline.defs.resources import WarehouseResource

    a, b, _ = _files(landing / DAY)
    warehouse = WarehouseResource(database=str(tmp_path / "w.duckdb"), landing_dir=str(tmp_path / "landing"))
    with dg.instance_for_test() as instance:
        for names in ([f"{DAY}/a.jsonl"], [f"{DAY}/b.jsonl"]):
            result = landing_append_job.execute_in_process(
                run_config={"ops": {"append_landing_files": {"config": {"day": DAY, "files": names}}}},
                resources={"warehouse": warehouse},
                instance=instance,
            )
            assert result.success
        signed = {f"{DAY}/{p.name}": f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (a, b)}
        assert recorded_files(instance, DAY) == signed

        # a sensor whose cursor was lost (reset in the UI) knows these files and that the day still
        # needs its whole-day run once it closes
        from bankanom_pipeline.automation import landing
        from bankanom_pipeline.definitions import defs
        from bankanom_pipeline.defs.automation.sensors import landing_sensor

        sensor_warehouse = WarehouseResource(
            database=str(tmp_path / "other.duckdb"), landing_dir=str(tmp_path / "landing")
        )
        context = dg.build_sensor_context(
            instance=instance, resources={"warehouse": sensor_warehouse}, definitions=defs
        )
        monkeypatch.setattr(landing, "now", lambda: DAY_START + 12 * 3600)  # the day still open
        sensed = landing_sensor(context)
        [request] = sensed.run_requests
        assert request.run_config["ops"]["append_landing_files"]["config"]["files"] == [f"{DAY}/c.jsonl"]
        assert json.loads(sensed.cursor)["open_days"] == [DAY]
        [last] = result.asset_materializations_for_node("append_landing_files")
        assert last.metadata["loaded"].value == (
            last.metadata["validated"].value
            + last.metadata["quarantined"].value
            + last.metadata["duplicate_event_ids"].value
        )
        bad = landing_append_job.execute_in_process(
            run_config={"ops": {"append_landing_files": {"config": {"day": DAY, "files": ["x/../b.jsonl"]}}}},
            resources={"warehouse": warehouse},
            instance=instance,
            raise_on_error=False,
        )
        assert not bad.success
