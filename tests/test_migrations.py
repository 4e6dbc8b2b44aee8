"""The warehouse's schema version: a new file gets every migration, an older one the missing ones with its
data kept, a current one none, and one newer than the code is refused."""

from __future__ import annotations

import duckdb
import pytest

from bankanom_pipeline.detection import registry
from bankanom_pipeline.warehouse import SCHEMA_SQL, migrations
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse, LakeWarehouse

DAY = "2026-01-05"
REGISTRY_BEFORE_TRANSACTIONS = """
CREATE TABLE model_registry (
    version VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL, path VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL, params JSON NOT NULL, features JSON NOT NULL, window_start DATE NOT NULL,
    window_end DATE NOT NULL, training_rows BIGINT NOT NULL, metrics JSON NOT NULL, status VARCHAR NOT NULL,
    promoted_at TIMESTAMPTZ
)"""


def _versions(con: duckdb.DuckDBPyConnection) -> list[int]:
    return [
        v for (v,) in con.execute("SELECT version FROM bankanom_meta.schema_version ORDER BY 1").fetchall()
    ]


def _main_tables(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = con.execute(
        "SELECT table_name, table_type FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = 'main'"
    ).fetchall()
    return dict(rows)


def _version_one(path) -> None:
    """A file as the code before schema versions left it: schema.sql applied, no version recorded, a
    model registry from before bank transactions (no source column), and a day of validated events."""
    with duckdb.connect(str(path)) as con:
        con.execute(SCHEMA_SQL.read_text())
        con.execute(REGISTRY_BEFORE_TRANSACTIONS)
        con.execute(
            "INSERT INTO model_registry VALUES ('if-1', 'isolation_forest', now(), 'p', 's', '{}', '[]', "
            "DATE '2026-01-01', DATE '2026-01-04', 10, '{}', 'promoted', now())"
        )
        _a_day_of_raw_logs(con)
        con.execute("INSERT INTO validated_partitions SELECT ?, max(ingested_at), now() FROM raw_logs", [DAY])


def _a_day_of_raw_logs(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "INSERT INTO raw_logs SELECT ?, 'f.jsonl', i, 'e' || i, '2026-01-05T10:00:00Z', 'auth', 'INFO', 'm', "
        "NULL, 'u', '1.2.3.4', 'X', NULL, '{}', NULL, TIMESTAMPTZ '2026-01-05 11:00:00+00' FROM range(1, 6) t(i)",
        [DAY],
    )


def test_the_migrations_are_numbered_in_order():
    assert [m.version for m in migrations.MIGRATIONS] == list(range(1, migrations.LATEST + 1))


def test_a_new_file_gets_every_migration(tmp_path):
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    assert migrations.version(con) == migrations.LATEST
    assert _versions(con) == list(range(1, migrations.LATEST + 1))
    tables = _main_tables(con)
    assert tables["raw_logs"] == "BASE TABLE" and tables["validated_logs"] == "VIEW"
    assert "schema_version" not in tables  # recorded outside main: the published tables are unchanged


def test_a_file_from_before_versions_is_migrated_with_its_data(tmp_path):
    path = tmp_path / "w.duckdb"
    _version_one(path)
    with duckdb.connect(str(path)) as con:
        before = {t: con.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall() for t in _main_tables(con)}
        assert migrations.version(con) == 1
    assert EmbeddedWarehouse(path).migrate() == (1, migrations.LATEST)
    con = EmbeddedWarehouse(path).connect()
    assert _versions(con) == list(range(1, migrations.LATEST + 1))
    for table, rows in before.items():
        after = con.execute(f'SELECT * FROM "{table}" ORDER BY ALL').fetchall()
        if table == "model_registry":
            # the registry gained its source column (the versions it held are logs') and its feature-set
            # version (unknown in the table for versions recorded before: their manifests say)
            after = [row[:-2] for row in after]
            assert con.execute(
                "SELECT DISTINCT source, feature_set_version FROM model_registry"
            ).fetchall() == [("logs", None)]
        assert after == rows, table
    assert con.execute("SELECT count(*) FROM validated_logs").fetchone()[0] == 5
    # the migrated registry has the shape a new one gets
    fresh = duckdb.connect()
    fresh.execute(registry.REGISTRY_DDL)
    assert _columns(con, "model_registry") == _columns(fresh, "model_registry")


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return con.execute(
        "SELECT column_name, data_type, column_default FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()


def test_a_warehouse_that_stored_validated_logs_as_a_table_keeps_its_rows(tmp_path):
    # before validated_logs was a view it was a copy of the checked raw rows; migrating such a file turns
    # it into the view, with the days it held marked validated
    path = tmp_path / "w.duckdb"
    _version_one(path)
    with duckdb.connect(str(path)) as con:
        rows = con.execute("SELECT * FROM validated_logs ORDER BY line_no").fetchall()
        con.execute("CREATE TABLE copied AS SELECT * FROM validated_logs")
        con.execute("DROP VIEW validated_logs")
        con.execute("ALTER TABLE copied RENAME TO validated_logs")
        con.execute("DELETE FROM validated_partitions")
    con = EmbeddedWarehouse(path).connect()
    assert _main_tables(con)["validated_logs"] == "VIEW"
    assert con.execute("SELECT * FROM validated_logs ORDER BY line_no").fetchall() == rows


def test_opening_a_current_file_applies_no_ddl(tmp_path):
    warehouse = EmbeddedWarehouse(tmp_path / "w.duckdb")
    with warehouse.connection() as con:
        con.execute("DROP TABLE log_labels")  # schema.sql would create it again
    with warehouse.connection() as con:
        assert "log_labels" not in _main_tables(con)
        assert _versions(con) == list(range(1, migrations.LATEST + 1))


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "w.duckdb"
    _version_one(path)

    def broken(con):
        con.execute("DROP TABLE raw_logs")
        raise RuntimeError("migration failed")

    last = migrations.MIGRATIONS[-1]
    monkeypatch.setattr(
        migrations, "MIGRATIONS", (*migrations.MIGRATIONS[:-1], last.__class__(last.version, "x", broken))
    )
    with pytest.raises(RuntimeError, match="migration failed"):
        EmbeddedWarehouse(path).migrate()
    with duckdb.connect(str(path)) as con:
        assert migrations.version(con) == 1
        assert con.execute("SELECT count(*) FROM raw_logs").fetchone()[0] == 5


def test_a_file_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "w.duckdb"
    warehouse = EmbeddedWarehouse(path)
    warehouse.connect().close()
    with duckdb.connect(str(path)) as con:
        con.execute(
            "INSERT INTO bankanom_meta.schema_version VALUES (?, 'from the future', now())",
            [migrations.LATEST + 1],
        )
    message = f"schema version {migrations.LATEST + 1}, newer than this bankanom knows"
    with pytest.raises(migrations.SchemaVersionError, match=message):
        warehouse.connect()
    with pytest.raises(migrations.SchemaVersionError, match=message):
        warehouse.connect_read_only()
    with duckdb.connect(str(path)) as con:
        assert _versions(con) == [*range(1, migrations.LATEST + 1), migrations.LATEST + 1]


def test_the_lake_records_its_version_and_refuses_a_newer_one(tmp_path):
    root = tmp_path / "lake"
    lake = LakeWarehouse(str(root))
    assert lake.migrate() == (0, migrations.LATEST)
    with lake.connection() as con:
        assert lake.migrate() == (migrations.LATEST, migrations.LATEST)
        assert "schema_version" not in _main_tables(con)  # the marker is no table of the lake
        con.execute(
            f"COPY (SELECT {migrations.LATEST + 1}::INTEGER AS version) TO '{root / LakeWarehouse.MARKER}' (FORMAT parquet)"
        )
    with pytest.raises(migrations.SchemaVersionError, match="newer than this bankanom knows"):
        lake.connect()
