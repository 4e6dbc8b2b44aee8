"""Lake mode (BANKANOM_STORAGE=lake): the demo's three jobs on a tiny pair of days give the same tables as
the embedded warehouse, and the demo's summary reads them from the lake."""

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from bankanom_pipeline import settings
from bankanom_pipeline.definitions import defs
from bankanom_pipeline.defs.detection.jobs import train_run_config
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.generator.config import load_config
from bankanom_pipeline.serving import snapshot
from bankanom_pipeline.warehouse import lake
from bankanom_pipeline.warehouse.frames import replace_partition, rewriting
from tests.conftest import generated_days

TRAIN_DAY, DEMO_DAY = "2026-01-05", "2026-01-06"
RATE = 0.05  # events per second: ~4k a day, enough for anomalies, incidents and an evaluation
# table -> key columns; every other column is compared too, except load times
COMPARED = {
    "raw_logs": ["event_id", "source_file", "line_no"],
    "validated_logs": ["event_id"],
    "incidents": ["incident_id"],
    "evaluation_metrics": ["model", "metric"],
    "log_labels": ["event_id"],
    "features_events": ["event_id"],
    "scored_events": ["event_id"],
    "incident_events": ["incident_id", "event_id"],
}
VOLATILE = {"ingested_at", "quarantined_at", "if_version", "lof_version", "scored_at"}


def _demo(data: Path, warehouse: WarehouseResource) -> None:
    """What `bankanom demo` runs after generating the days: features of the training day, training and
    promotion, then the daily pipeline on the held-out day, in process, into ``data``."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BANKANOM_DATA_DIR", str(data))
        for name in ("BANKANOM_MODELS_DIR", "BANKANOM_SNAPSHOTS_DIR", "BANKANOM_WAREHOUSE"):
            env.delenv(name, raising=False)
        for job, partition, config in [
            ("features_job", TRAIN_DAY, None),
            ("train_job", None, train_run_config(TRAIN_DAY)),
            ("pipeline_job", DEMO_DAY, None),
        ]:
            result = defs.resolve_job_def(job).execute_in_process(
                resources={"warehouse": warehouse}, partition_key=partition, run_config=config
            )
            assert result.success, job


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """The same two generated days (the demo's seeds and customers) through the demo's jobs twice: into
    the embedded DuckDB file and into the lake. Yields both connections and the lake's data folder.
    In process, yet marked e2e: six job runs cost ~45 CPU-s, more than the fast tier can take."""
    root = tmp_path_factory.mktemp("lake-twins")
    landing = root / "landing"
    seed = load_config().seed  # the demo's seeds: the config's, then the next for the held-out day
    generated_days(landing, {TRAIN_DAY: seed, DEMO_DAY: seed + 1}, RATE)
    embedded, lakeside = root / "embedded", root / "lake"
    for data in (embedded, lakeside):
        shutil.copytree(landing, data / "landing")
    _demo(
        embedded,
        WarehouseResource(database=str(embedded / "warehouse.duckdb"), landing_dir=str(embedded / "landing")),
    )
    _demo(
        lakeside,
        WarehouseResource(
            storage="lake", lake_root=str(lakeside / "lake"), landing_dir=str(lakeside / "landing")
        ),
    )
    con = duckdb.connect(str(embedded / "warehouse.duckdb"), read_only=True)
    lake_con = lake.connect(str(lakeside / "lake"))
    yield con, lake_con, lakeside
    con.close()
    lake_con.close()


def _columns(con, table):
    return [name for name, *_ in con.execute(f"DESCRIBE {table}").fetchall() if name not in VOLATILE]


@pytest.mark.e2e
def test_lake_demo_writes_one_parquet_file_per_table_partition(twins, capsys, monkeypatch):
    from bankanom_pipeline.cli.demo import _summary

    _, _, data = twins
    root = data / "lake"
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    for table in ("raw_logs", "validated_partitions", "features_events", "scored_events", "incidents"):
        assert f"{table}/date={DEMO_DAY}/part-0.parquet" in files
    assert "model_registry/data.parquet" in files
    assert not [p for p in root.rglob("*.tmp")], "a temporary file was left behind"
    # the demo's summary reads the lake and says where it is
    monkeypatch.setenv("BANKANOM_STORAGE", "lake")
    monkeypatch.setenv("BANKANOM_DATA_DIR", str(data))
    _summary(DEMO_DAY)
    out = capsys.readouterr().out
    assert f"evaluation on {DEMO_DAY}" in out and "incident precision" in out
    assert f"lake: {root}" in out


@pytest.mark.e2e
@pytest.mark.parametrize("table", sorted(COMPARED))
def test_lake_rows_equal_the_embedded_warehouse(twins, table):
    embedded, lake_con, _ = twins
    columns = _columns(embedded, table)
    assert columns == _columns(lake_con, table)
    keys = ", ".join(COMPARED[table])
    select = f"SELECT {', '.join(columns)} FROM {table} WHERE partition_date = '{DEMO_DAY}' ORDER BY {keys}"
    a = embedded.execute(select).fetchall()
    b = lake_con.execute(select).fetchall()
    assert len(a) == len(b) > 0
    assert [_rounded(row) for row in a] == [_rounded(row) for row in b]


def _rounded(row):
    # Floating sums may differ in the last bits with the order threads add them; nothing else may.
    return tuple(float(f"{v:.9g}") if isinstance(v, float) else v for v in row)


@pytest.mark.e2e
def test_lake_scores_and_incidents_equal_the_embedded_ones(twins):
    embedded, lake_con, _ = twins
    scores = (
        "SELECT count(*), sum(is_anomaly::INT), sum(ensemble_score), sum(if_score), sum(lof_score) "
        f"FROM scored_events WHERE partition_date = '{DEMO_DAY}'"
    )
    assert _rounded(embedded.execute(scores).fetchone()) == _rounded(lake_con.execute(scores).fetchone())
    incidents = (
        "SELECT incident_id, severity, event_count, max_score, scenario_id FROM incidents "
        f"WHERE partition_date = '{DEMO_DAY}' ORDER BY incident_id"
    )
    assert [_rounded(r) for r in embedded.execute(incidents).fetchall()] == [
        _rounded(r) for r in lake_con.execute(incidents).fetchall()
    ]


def test_rewriting_a_partition_replaces_it_and_a_failed_block_leaves_it(tmp_path):
    con = lake.connect(str(tmp_path / "lake"))
    first = pl.DataFrame({"partition_date": ["2026-01-01"] * 3, "x": [1, 2, 3]}).with_columns(
        pl.col("partition_date").str.to_date()
    )
    replace_partition(con, "t", first, "2026-01-01")
    replace_partition(con, "t", first.head(2), "2026-01-01")  # a re-run replaces, never appends
    replace_partition(
        con, "t", first.with_columns(pl.lit(dt.date(2026, 1, 2)).alias("partition_date")), "2026-01-02"
    )
    assert con.execute(
        "SELECT partition_date::VARCHAR, count(*) FROM t GROUP BY 1 ORDER BY 1"
    ).fetchall() == [
        ("2026-01-01", 2),
        ("2026-01-02", 3),
    ]
    with pytest.raises(RuntimeError), rewriting(con, "t", day="2026-01-01"):
        con.execute("INSERT INTO t VALUES ('2026-01-01', 9)")
        raise RuntimeError("the step failed half-way")
    assert con.execute("SELECT count(*) FROM t WHERE partition_date = '2026-01-01'").fetchone()[0] == 2
    # a second connection (another run) sees the same files
    other = lake.connect(str(tmp_path / "lake"))
    assert other.execute("SELECT sum(x) FROM t").fetchone()[0] == 1 + 2 + 6


def test_files_a_lake_kept_for_a_table_that_is_now_a_view_are_not_read(tmp_path):
    # validated_logs was a table, published as files; it is now a view over raw_logs and the quarantine
    root = tmp_path / "lake"
    old = root / "validated_logs" / "date=2026-01-01"
    old.mkdir(parents=True)
    duckdb.execute(
        f"COPY (SELECT DATE '2026-01-01' AS partition_date, 'stale' AS event_id) TO '{old}/part-0.parquet'"
    )
    con = lake.connect(str(root))
    assert lake.kind(con, "validated_logs") == "VIEW"
    assert "ts" in {c[0] for c in con.execute("DESCRIBE validated_logs").fetchall()}
    assert con.execute("SELECT count(*) FROM validated_logs").fetchone()[0] == 0


def test_unknown_storage_mode_and_unwritable_lake_fail_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("BANKANOM_STORAGE", "parquet")
    with pytest.raises(settings.SettingError, match="BANKANOM_STORAGE='parquet'"):
        settings.storage_mode()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    resource = WarehouseResource(storage="lake", lake_root=str(blocked / "lake"))
    with pytest.raises(settings.SettingError, match=r"BANKANOM_LAKE_ROOT=.*is not writable"):
        resource.check()


def test_embedded_connection_is_not_a_lake(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    assert lake.root_of(con) is None
    assert Path(tmp_path / "w.duckdb").exists()


def test_an_older_window_finishing_last_does_not_replace_the_current_snapshot(tmp_path):
    """Runs of several days finish in any order (at once, in lake mode): the API keeps the newest window."""
    con = lake.connect(str(tmp_path / "lake"))
    root = tmp_path / "snapshots"
    newer = snapshot.SnapshotPublisher(root).publish(con, dt.date(2026, 1, 6), 3)
    older = snapshot.SnapshotPublisher(root).publish(con, dt.date(2026, 1, 4), 3)
    assert older["superseded"] and older["file"] == newer["file"]
    assert snapshot.SnapshotPublisher(root).current()["through"] == "2026-01-06"
    assert not (root / older["superseded"]).exists()
    # the same day again does replace it
    again = snapshot.SnapshotPublisher(root).publish(con, dt.date(2026, 1, 6), 3)
    assert "superseded" not in again and snapshot.SnapshotPublisher(root).current()["file"] == again["file"]
