"""The published copy of the embedded warehouse (warehouse/published.py) and ``bankanom sql``'s shell."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.sqlmodels.runner import Project
from bankanom_pipeline.warehouse import frames, published, shell
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse

DAY = "2026-01-05"
NEXT = "2026-01-06"


def _frame(day: str, values: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"partition_date": [day] * len(values), "x": values}).with_columns(
        pl.col("partition_date").str.to_date()
    )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


@pytest.fixture
def warehouse(tmp_path) -> WarehouseResource:
    return WarehouseResource(database=str(tmp_path / "w.duckdb"), landing_dir=str(tmp_path / "landing"))


def test_the_published_folder_is_beside_the_warehouse_unless_set(tmp_path, monkeypatch, warehouse):
    monkeypatch.delenv("BANKANOM_PUBLISHED_DIR", raising=False)
    assert warehouse.published_root == tmp_path / "published"
    monkeypatch.setenv("BANKANOM_PUBLISHED_DIR", str(tmp_path / "elsewhere"))
    assert warehouse.published_root == tmp_path / "elsewhere"


def test_a_committed_partition_is_published_and_a_failed_write_leaves_the_previous_file(warehouse):
    reader = None
    with warehouse.connection() as con:
        frames.replace_partition(con, "scores", _frame(DAY, [1, 2, 3]), DAY)
        reader = published.connect(warehouse.published_root)
        assert reader.sql("SELECT count(*) FROM scores").fetchone() == (3,)
        before = _files(warehouse.published_root)

        with pytest.raises(RuntimeError), frames.rewriting(con, "scores", day=DAY):
            con.execute("INSERT INTO scores VALUES (?, 9)", [DAY])
            raise RuntimeError("the step fails before its commit")
        assert _files(warehouse.published_root) == before  # nothing published for the rolled-back write
        assert reader.sql("SELECT sum(x) FROM scores").fetchone() == (6,)

        frames.replace_partition(con, "scores", _frame(DAY, [4, 5]), DAY)
        frames.replace_partition(con, "scores", _frame(NEXT, [7]), NEXT)
    # the same connection sees the new version and the new partition: views list the files per query
    rows = reader.sql("SELECT partition_date::VARCHAR, count(*), sum(x) FROM scores GROUP BY 1 ORDER BY 1")
    assert rows.fetchall() == [(DAY, 2, 9), (NEXT, 1, 7)]
    # a new version is a new file: the one a running query may have listed is still there, unchanged
    old = warehouse.published_root / before[0]
    assert old.exists() and duckdb.sql(f"SELECT sum(x) FROM '{old}'").fetchone() == (6,)


def test_whole_tables_are_published_seeds_registry_and_sql_models(tmp_path, warehouse):
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "whole.sql").write_text("{{ config(materialized='table') }}\nSELECT 42 AS answer\n")
    with warehouse.connection() as con:
        frames.replace_table(con, "seed", "SELECT * FROM range(3)")
        con.execute("CREATE TABLE registry (version VARCHAR, status VARCHAR)")
        with frames.rewriting(con, "registry"):
            con.execute("INSERT INTO registry VALUES ('v1', 'promoted')")
        Project(tmp_path / "sql").materialize(con, "whole")
    reader = published.connect(warehouse.published_root)
    assert reader.sql("SELECT count(*) FROM seed").fetchone() == (3,)
    assert reader.sql("SELECT * FROM registry").fetchall() == [("v1", "promoted")]
    assert reader.sql("SELECT * FROM whole").fetchall() == [(42,)]
    assert [f.split("/")[0] for f in _files(warehouse.published_root)] == ["registry", "seed", "whole"]


def test_a_warehouse_written_before_publishing_is_published_when_a_step_opens_it(warehouse):
    con = EmbeddedWarehouse(warehouse.database).connect()  # a plain connection publishes nothing
    frames.replace_partition(con, "scores", _frame(DAY, [1, 2]), DAY)
    frames.replace_partition(con, "scores", _frame(NEXT, [3]), NEXT)
    con.execute("CREATE TABLE feedback AS SELECT DATE '2026-01-05' AS partition_date, 'tp' AS label")
    con.close()
    assert not warehouse.published_root.exists()

    with warehouse.connection():
        pass
    files = _files(warehouse.published_root)
    assert [f.rsplit("/", 1)[0] for f in files] == ["feedback", f"scores/date={DAY}", f"scores/date={NEXT}"]
    reader = published.connect(warehouse.published_root)
    assert reader.sql("SELECT count(*), sum(x) FROM scores").fetchone() == (3, 6)
    assert reader.sql("SELECT label FROM feedback").fetchall() == [("tp",)]
    with warehouse.connection():  # published already: nothing written again
        pass
    assert _files(warehouse.published_root) == files


def test_superseded_versions_are_deleted_only_after_the_grace(warehouse):
    with warehouse.connection() as con:
        for values in ([1], [1, 2], [1, 2, 3]):
            frames.replace_partition(con, "scores", _frame(DAY, values), DAY)
    root = warehouse.published_root
    folder = root / "scores" / f"date={DAY}"
    _, second, third = sorted(folder.iterdir())
    (folder / ".part-1.parquet.abcd.tmp").write_bytes(b"left by a killed writer")
    published.sweep(root)
    assert len(list(folder.iterdir())) == 4  # within the grace everything stays

    now = time.time()
    os.utime(second, (now - published.GRACE_SECONDS - 5,) * 2)
    os.utime(folder / ".part-1.parquet.abcd.tmp", (now - published.GRACE_SECONDS - 5,) * 2)
    published.sweep(root, now)
    # first was superseded (by second) long ago; second only just now (by third); third is current
    assert sorted(folder.iterdir()) == [second, third]
    published.sweep(root, now + 2 * published.GRACE_SECONDS)
    assert sorted(folder.iterdir()) == [third]
    assert published.connect(root).sql("SELECT count(*) FROM scores").fetchone() == (3,)


def test_the_reader_follows_tables_appearing_and_disappearing(warehouse):
    reader = published.connect(warehouse.published_root)
    assert reader.sql("SELECT count(*) FROM raw_logs").fetchone() == (0,)  # schema.sql's empty table
    with warehouse.connection() as con:
        frames.replace_partition(con, "scores", _frame(DAY, [1]), DAY)
    assert "scores" in published.refresh(reader)
    assert reader.sql("SELECT count(*) FROM scores").fetchone() == (1,)
    (warehouse.published_root / "scores").rename(warehouse.published_root / "renamed")
    assert published.refresh(reader) == ["renamed"]
    assert reader.sql("SELECT count(*) FROM renamed").fetchone() == (1,)
    with pytest.raises(duckdb.CatalogException):
        reader.sql("SELECT count(*) FROM scores")


def test_shell_prints_results_and_the_prompt_survives_errors(warehouse, capsys, monkeypatch):
    with warehouse.connection() as con:
        frames.replace_partition(con, "scores", _frame(DAY, [1, 2]), DAY)
    reader = published.connect(warehouse.published_root)
    shell.run(reader, "SELECT sum(x) AS total FROM scores; SELECT 'second' AS s")
    out = capsys.readouterr().out
    assert "total" in out and "3" in out and "second" in out
    with pytest.raises(duckdb.BinderException):
        shell.run(reader, "SELECT nope FROM scores")

    lines = iter([".tables", "SELECT nope", "FROM scores;", "SELECT max(x) AS biggest", "FROM scores;"])

    def typed(prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", typed)
    shell.interactive(reader)
    out = capsys.readouterr().out
    assert "scores" in out and "Error: Binder Error" in out and "biggest" in out


@pytest.mark.e2e
def test_bankanom_sql_reads_commands_and_stdin_and_exits_1_on_error(warehouse):
    with warehouse.connection() as con:
        frames.replace_partition(con, "scores", _frame(DAY, [1, 2]), DAY)
    command = [sys.executable, "-m", "bankanom_pipeline.cli", "sql", "--root", str(warehouse.published_root)]
    result = subprocess.run(
        [*command, "-c", "SELECT count(*) AS row_count FROM scores"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "row_count" in result.stdout and "│         2 │" in result.stdout, result.stdout
    piped = subprocess.run(command, input="SELECT 40 + 2 AS answer;", capture_output=True, text=True)
    assert piped.returncode == 0 and "42" in piped.stdout, piped.stderr
    failed = subprocess.run([*command, "-c", "SELECT nope"], capture_output=True, text=True)
    assert failed.returncode == 1 and "Binder Error" in failed.stderr


def test_pipeline_alerts_are_published_from_their_own_file(tmp_path, monkeypatch):
    from bankanom_pipeline.automation import alerts

    monkeypatch.setenv("BANKANOM_PUBLISHED_DIR", str(tmp_path / "published"))
    monkeypatch.delenv("BANKANOM_STORAGE", raising=False)
    alerts.record(tmp_path / "alerts.duckdb", "run-1", "pipeline_job", DAY, "boom", None)
    reader = published.connect(tmp_path / "published")
    alerts.record(tmp_path / "alerts.duckdb", "run-2", "pipeline_job", NEXT, "bang", None)
    rows = reader.sql("SELECT run_id, error FROM pipeline_alerts ORDER BY run_id").fetchall()
    assert rows == [("run-1", "boom"), ("run-2", "bang")]


def test_steps_sweep_the_published_folder_at_most_once_per_grace(warehouse):
    """Every step opens a connection: walking every partition of every table each time cost seconds."""
    with warehouse.connection() as con:
        for values in ([1], [1, 2]):
            frames.replace_partition(con, "scores", _frame(DAY, values), DAY)
    folder = warehouse.published_root / "scores" / f"date={DAY}"
    old, new = sorted(folder.iterdir())
    long_ago = time.time() - published.GRACE_SECONDS - 5
    os.utime(new, (long_ago, long_ago))
    with warehouse.connection():
        pass
    assert sorted(folder.iterdir()) == [old, new]  # swept when the first step opened it, not again
    swept = warehouse.published_root / ".swept"
    os.utime(swept, (long_ago, long_ago))
    with warehouse.connection():
        pass
    assert sorted(folder.iterdir()) == [new]
