"""The embedded warehouse's schema version and the ordered migrations that bring a file up to it.

A file records the migrations applied to it in ``bankanom_meta.schema_version`` (its own schema, so the
tables in ``main``, the published copies and the snapshots are unchanged by it). ``migrate`` applies the
missing ones in order, in one transaction, and records them; a file at ``LATEST`` is left alone (one read
of the version), and a file newer than this code is refused before anything reads or writes it.

``schema.sql`` is always the whole current schema: a new file gets it as version 1 and then every later
migration, so a migration must leave a file that already has its change as it is (``IF NOT EXISTS``,
checking the catalog first). A change to a table adds a migration here and edits ``schema.sql`` in the
same commit.

A file with tables but no version record was written before versions were recorded: it is at version 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from bankanom_pipeline.warehouse import SCHEMA_SQL, lake

META = "bankanom_meta"
_TABLE = f"{META}.schema_version"


class SchemaVersionError(Exception):
    """A warehouse written by a newer bankanom than this one."""


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[duckdb.DuckDBPyConnection], None]


def _create_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(SCHEMA_SQL.read_text())


def _validated_logs_view(con: duckdb.DuckDBPyConnection) -> None:
    # A file from before the view holds validated_logs as a copy of the checked raw rows. The days it
    # holds were validated against the raw rows still stored, so the view shows the same rows once those
    # days are marked. schema.sql runs here with the copy out of the view's name: it creates what such a
    # file lacks and replaces the macro and the view with today's.
    legacy = lake.kind(con, "validated_logs") == "BASE TABLE"
    if legacy:
        con.execute("ALTER TABLE validated_logs RENAME TO validated_logs_copy")
    con.execute(SCHEMA_SQL.read_text())
    if legacy:
        con.execute(
            "INSERT INTO validated_partitions SELECT partition_date, max(ingested_at), now() FROM raw_logs "
            "WHERE partition_date IN (SELECT partition_date FROM validated_logs_copy) GROUP BY ALL"
        )
        con.execute("DROP TABLE validated_logs_copy")


def _registry_source(con: duckdb.DuckDBPyConnection) -> None:
    # model_registry is created by the first trained model (detection/registry.py), already with source
    if lake.kind(con, "model_registry") == "BASE TABLE":
        con.execute("ALTER TABLE model_registry ADD COLUMN IF NOT EXISTS source VARCHAR DEFAULT 'logs'")


def _registry_feature_set(con: duckdb.DuckDBPyConnection) -> None:
    # versions recorded before hold no feature-set version in the table; their manifests say which
    # (docs/features.md: a manifest without one is the look-ahead features, version 1)
    if lake.kind(con, "model_registry") == "BASE TABLE":
        con.execute("ALTER TABLE model_registry ADD COLUMN IF NOT EXISTS feature_set_version VARCHAR")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "schema.sql: the tables written by Python assets, the utc_time macro, validated_logs",
        _create_schema,
    ),
    Migration(
        2, "validated_logs is a view over the checked raw rows, not a copy of them", _validated_logs_view
    ),
    Migration(3, "model_registry.source: which source's registry a version belongs to", _registry_source),
    Migration(
        4,
        "model_registry.feature_set_version: the features' version a model was trained on",
        _registry_feature_set,
    ),
)
LATEST = MIGRATIONS[-1].version


def version(con: duckdb.DuckDBPyConnection) -> int:
    """The file's schema version: 0 for an empty file, 1 for one written before versions were recorded."""
    if lake.kind(con, "schema_version", META) is not None:
        return con.execute(f"SELECT max(version) FROM {_TABLE}").fetchone()[0] or 0
    tables = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = 'main'"
    ).fetchone()[0]
    return 1 if tables else 0


def require_supported(found: int) -> None:
    if found > LATEST:
        raise SchemaVersionError(
            f"the warehouse is at schema version {found}, newer than this bankanom knows (up to {LATEST}): "
            "upgrade bankanom, or point BANKANOM_WAREHOUSE at another file"
        )


def migrate(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """Apply the migrations the file lacks, in one transaction; returns (version before, version after)."""
    found = version(con)
    require_supported(found)
    if found == LATEST:
        return found, found
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"CREATE SCHEMA IF NOT EXISTS {META}; CREATE TABLE IF NOT EXISTS {_TABLE} "
            "(version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        if found == 1 and not con.execute(f"SELECT count(*) FROM {_TABLE}").fetchone()[0]:
            con.execute(
                f"INSERT INTO {_TABLE} VALUES (1, 'written before schema versions were recorded', now())"
            )
        for migration in MIGRATIONS[found:]:
            migration.apply(con)
            con.execute(
                f"INSERT INTO {_TABLE} VALUES (?, ?, now())", [migration.version, migration.description]
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return found, LATEST
