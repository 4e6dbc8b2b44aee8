"""Analysts query while runs write, for real: a reader process queries the published tables in a loop, with
the helper analysts use (``published.connect``), while ``bankanom run`` runs pipeline_job for a tiny day,
twice (the second run with a late landing file, so every partition of the day is replaced by a different
version). No run and no query may fail, and every count and checksum a query saw of a partition must be
one of its complete versions. Real DuckDB files, a real Dagster instance, the readers in processes of
their own; the CLI runs in the test's process (tests/tiny_platform.py), on a tiny day (~5k events)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import psutil
import pyarrow.parquet
import pytest

from bankanom_pipeline.warehouse import published
from tests import tiny_platform
from tests.tiny_platform import DAY, ROOT, TRAIN_DAY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# written once per run of pipeline_job, so each partition's versions are those of the two runs' ends
TABLES = (
    "raw_logs",
    "validated_partitions",
    "quarantine_logs",
    "validated_logs",  # the view, over the published raw_logs, validated_partitions and quarantine_logs
    "stg_logs",
    "features_events",
    "scored_events",
    "incidents",
    "incident_events",
)

# One analyst in a loop: per table and partition, the row count and a checksum of every row. A query can
# see a torn partition only while it runs across a publication, so what gives the loop its chance is the
# share of its time spent inside those queries. A round refreshes the views once (the refresh reads no
# table's rows; refreshing before each of the nine queries took most of the loop's time), runs the nine
# queries back to back, then pauses as long as the round took (at most a second, so that every version
# is still seen). Measured over the published tiny day at load 5, 8 s a loop: inside a query 26-30% of
# the time instead of 15-16%, 108 queries instead of 72-81, at 0.21 instead of 0.47-0.53 of a core.
READER = """
import json, sys, time
from pathlib import Path
from bankanom_pipeline.warehouse import published
root, out, stop, tables = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4].split(",")
con = published.connect(root)
with out.open("w") as log:
    while not stop.exists():
        round_began = time.monotonic()
        try:
            published.refresh(con)
        except Exception as error:
            log.write(json.dumps({"table": None, "at": time.time(), "error": repr(error)}) + "\\n")
        for table in tables:
            began = time.time()
            try:
                if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()[0]:
                    continue  # not written yet
                rows = con.execute(
                    f"SELECT partition_date::VARCHAR, count(*), sum(hash(t))::VARCHAR FROM {table} t GROUP BY 1"
                ).fetchall()
                log.write(json.dumps({"table": table, "at": began, "partitions": rows}) + "\\n")
            except Exception as error:
                log.write(json.dumps({"table": table, "at": began, "error": repr(error)}) + "\\n")
        log.flush()
        time.sleep(min(time.monotonic() - round_began, 1.0))
"""


def _versions(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str | None], tuple[int, str]]:
    """Every table's partitions (None: an unpartitioned table) with their count and checksum, computed
    as the reader does."""
    versions = {}
    tables = con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")
    for (table,) in tables.fetchall():
        columns = con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
        )
        day = "partition_date::VARCHAR" if ("partition_date",) in columns.fetchall() else "NULL"
        rows = con.execute(f'SELECT {day}, count(*), sum(hash(t))::VARCHAR FROM "{table}" t GROUP BY 1')
        versions |= {(table, day): (count, checksum) for day, count, checksum in rows.fetchall()}
    return versions


RECORDS = ("pipeline_runs",)  # published beside the warehouse's tables, from data/alerts.duckdb


def _layout(root: Path) -> set[str]:
    """The folders holding rows (a run also publishes a day that has none, such as no rejected lines;
    publishing a warehouse afresh cannot know such days)."""
    files = root.rglob("*.parquet")
    return {str(f.parent.relative_to(root)) for f in files if pyarrow.parquet.read_metadata(f).num_rows}


def _warehouse_versions(path: Path) -> dict:
    with duckdb.connect(str(path), read_only=True) as con:  # no run is writing now
        return _versions(con)


def test_queries_during_pipeline_runs_never_fail_and_see_whole_partitions(tmp_path, tiny_world):
    landing, data = tmp_path / "landing", tmp_path / "data"
    shutil.copytree(tiny_world / "landing", landing)
    shutil.copytree(tiny_world / "base", data)  # TRAIN_DAY's features, a promoted model pair
    day_files = sorted((landing / "logs" / DAY).iterdir())
    late = tmp_path / "late"
    late.mkdir()
    for path in day_files[len(day_files) // 2 :]:  # delivered before the second run only
        path.rename(late / path.name)
    env = tiny_platform.cli_env(data, landing, tmp_path / "dagster_home")
    before = _warehouse_versions(data / "warehouse.duckdb")  # TRAIN_DAY's partitions, which stay

    observations, stop = tmp_path / "reader.jsonl", tmp_path / "stop"
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            READER,
            str(data / "published"),
            str(observations),
            str(stop),
            ",".join(TABLES),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not observations.exists() or observations.stat().st_size == 0:  # its first query is done
            assert reader.poll() is None, reader.stderr.read()
            time.sleep(0.2)
        runs = []
        for landed in (day_files[: len(day_files) // 2], day_files):
            for path in landed:
                if not path.exists():
                    (late / path.name).rename(path)
            began = time.time()
            tiny_platform.ok(env, "run", "--job", "pipeline_job", "--date", DAY)
            runs.append((began, time.time(), _warehouse_versions(data / "warehouse.duckdb")))
            # the reader never opened the warehouse: it holds no lock a run could trip on
            files = {Path(f.path) for f in psutil.Process(reader.pid).open_files()}
            assert data / "warehouse.duckdb" not in files
    finally:
        stop.touch()
        reader.wait(timeout=120)
    assert reader.returncode == 0, reader.stderr.read()

    first, final = runs[0][2], runs[1][2]
    # the published copy is the warehouse: every table, the validated_logs view included; beside it
    # only the sensors' records (data/alerts.duckdb: each CLI run records itself in pipeline_runs)
    copy = _versions(published.connect(data / "published"))
    assert {key[0] for key in copy.keys() - final.keys()} == set(RECORDS)
    assert {k: v for k, v in copy.items() if k[0] not in RECORDS} == final
    # and a warehouse from before publishing would be published in the same layout, table by table
    with duckdb.connect(str(data / "warehouse.duckdb")) as con:
        published.attach(con, tmp_path / "caught-up")
    layout = {folder for folder in _layout(data / "published") if folder.split("/")[0] not in RECORDS}
    assert _layout(tmp_path / "caught-up") == layout
    assert {k: v for k, v in final.items() if k[1] == TRAIN_DAY} == {
        k: v for k, v in before.items() if k[1] == TRAIN_DAY
    }
    assert {key for key in final if key[1] == DAY} == {key for key in first if key[1] == DAY}
    assert first[("raw_logs", DAY)][0] < final[("raw_logs", DAY)][0]  # the late file made a new version

    lines = [json.loads(line) for line in observations.read_text().splitlines()]
    errors = [line for line in lines if "error" in line]
    assert errors == [], errors[:5]
    during = [line for line in lines if runs[0][0] <= line["at"] <= runs[1][1]]
    assert len(during) >= 3 * len(TABLES), f"only {len(during)} queries while the runs wrote"
    seen: dict[tuple[str, str], set] = {}
    for line in lines:
        for day, count, checksum in line["partitions"]:
            key = (line["table"], day)
            seen.setdefault(key, set()).add((count, checksum))
            allowed = {version[key] for version in (before, first, final) if key in version}
            assert (count, checksum) in allowed, f"{key}: saw {count} rows ({checksum}); versions: {allowed}"
    # not vacuous: queries saw the day's partitions of the last table of the run in both versions
    assert seen[("scored_events", DAY)] == {first[("scored_events", DAY)], final[("scored_events", DAY)]}


def test_an_open_analyst_session_does_not_make_a_run_fail(tmp_path, tiny_world):
    data = tmp_path / "data"
    shutil.copytree(tiny_world / "base", data)  # a warehouse and its published copy
    env = tiny_platform.cli_env(data, tiny_world / "landing", tmp_path / "dagster_home")
    warehouse = data / "warehouse.duckdb"

    def session(code: str) -> subprocess.Popen:
        """A Python session that runs ``code``, says so, and stays open until its stdin closes."""
        script = f"import sys\n{code}\nprint('open', flush=True)\nsys.stdin.read()\n"
        process = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout.readline().strip() == "open", process.stderr.read()
        return process

    # the way docs/querying.md documents: a read-only session on the warehouse file makes the run fail
    old = session(f"import duckdb\ncon = duckdb.connect({str(warehouse)!r}, read_only=True)")
    try:
        code, printed = tiny_platform.bankanom(env, "run", "--job", "ingest_job", "--date", DAY)
    finally:
        old.stdin.close()
        old.wait(timeout=60)
    assert code != 0 and "Conflicting lock" in printed

    # the documented way now: the published copy, which takes no lock on the warehouse
    code = (
        "from bankanom_pipeline.warehouse import published\n"
        f"con = published.connect({str(data / 'published')!r})\n"
        "assert con.sql('SELECT count(*) FROM raw_logs').fetchone()[0] > 0"
    )
    analyst = session(code)
    try:
        tiny_platform.ok(env, "run", "--job", "ingest_job", "--date", DAY)
    finally:
        analyst.stdin.close()
        analyst.wait(timeout=60)
    assert analyst.returncode == 0, analyst.stderr.read()
