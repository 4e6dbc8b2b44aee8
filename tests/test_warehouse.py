"""The two warehouses behind one interface (warehouse/store.py), chosen by the settings."""

from __future__ import annotations

import duckdb
import pytest

from bankanom_pipeline import settings
from bankanom_pipeline.warehouse import frames, published, store

DAY = "2026-01-05"


def _warehouses(tmp_path) -> list[store.Warehouse]:
    return [
        store.EmbeddedWarehouse(tmp_path / "w.duckdb", published_root=tmp_path / "published"),
        store.LakeWarehouse(str(tmp_path / "lake")),
    ]


def _readable_root(warehouse: store.Warehouse):
    """Where readers that take no lock find the tables (published.connect)."""
    return warehouse.published_root if isinstance(warehouse, store.EmbeddedWarehouse) else warehouse.root


def test_the_settings_choose_the_warehouse(tmp_path, monkeypatch):
    monkeypatch.setenv("BANKANOM_WAREHOUSE", str(tmp_path / "w.duckdb"))
    monkeypatch.setenv("BANKANOM_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.delenv("BANKANOM_PUBLISHED_DIR", raising=False)
    monkeypatch.delenv("BANKANOM_STORAGE", raising=False)
    embedded = store.from_settings()
    assert isinstance(embedded, store.EmbeddedWarehouse)
    assert (embedded.database, embedded.published_root) == (tmp_path / "w.duckdb", tmp_path / "published")
    monkeypatch.setenv("BANKANOM_STORAGE", "lake")
    lake = store.from_settings()
    assert isinstance(lake, store.LakeWarehouse) and lake.root == str(tmp_path / "lake")
    with pytest.raises(
        settings.SettingError,
        match=r"BANKANOM_STORAGE='parquet' is not a storage mode; use one of \['embedded', 'lake'\]",
    ):
        store.build("parquet", database=tmp_path / "w.duckdb", lake_root=str(tmp_path / "lake"))


@pytest.mark.parametrize("kind", [0, 1], ids=["embedded", "lake"])
def test_both_warehouses_replace_a_partition_and_publish_it_for_readers(tmp_path, kind):
    warehouse = _warehouses(tmp_path)[kind]
    warehouse.check()
    with warehouse.connection() as con:
        assert store.of(con) is type(warehouse)
        con.execute("CREATE TABLE IF NOT EXISTS scores (partition_date DATE, x INTEGER)")
        for values in ([1, 2, 3], [4, 5]):  # a re-run replaces the day, never appends to it
            with frames.rewriting(con, "scores", day=DAY):
                con.execute("INSERT INTO scores SELECT ?, unnest(?)", [DAY, values])
        with pytest.raises(RuntimeError), frames.rewriting(con, "scores", day=DAY):
            con.execute("INSERT INTO scores VALUES (?, 9)", [DAY])
            raise RuntimeError("the step fails before its end")
        frames.replace_table(con, "seeds", "SELECT 'a' AS code")
        assert con.execute("SELECT sum(x) FROM scores").fetchone() == (9,)
    reader = published.connect(_readable_root(warehouse))
    assert reader.execute("SELECT partition_date::VARCHAR, sum(x) FROM scores GROUP BY 1").fetchall() == [
        (DAY, 9)
    ]
    assert reader.execute("SELECT code FROM seeds").fetchall() == [("a",)]
    with warehouse.reading() as con:
        assert con.execute("SELECT sum(x) FROM scores").fetchone() == (9,)


def test_the_embedded_reading_connection_cannot_write(tmp_path):
    warehouse = store.EmbeddedWarehouse(tmp_path / "w.duckdb")
    warehouse.connect().close()
    with warehouse.reading() as con, pytest.raises(duckdb.InvalidInputException, match="read-only"):
        con.execute("CREATE TABLE t (x INTEGER)")
