"""The warehouse as plain classes: the embedded DuckDB file or the Parquet lake, behind one interface.

Both open DuckDB connections on which the pipeline's SQL runs unchanged; they differ in where rows
live and how a write of a partition lands (``rewriting``: delete-then-insert in one transaction, then
published for readers; or a shadow table published as the partition's Parquet file). ``build`` picks
the class from the settings. The Dagster resource (``defs/resources.py``) is a thin wrapper over it;
code outside Dagster (tests, benchmarks, tools) uses these classes directly.

A writable connection brings the schema to ``migrations.LATEST`` when the warehouse is behind: the
first step that opens the embedded file after an upgrade migrates it, inside the "duckdb" pool, so no
other writer is in between (lake steps run at once; recording the lake's version is one atomic file).
Otherwise it only reads the version. A warehouse newer than this code is refused on every open.
"""

from __future__ import annotations

import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from bankanom_pipeline import settings
from bankanom_pipeline.warehouse import lake, migrations, published


class Warehouse(ABC):
    """Where the pipeline's tables live, and how a write of a partition reaches them."""

    @abstractmethod
    def check(self) -> None:
        """Fail fast, naming the setting, on a configuration that cannot work."""

    @abstractmethod
    def connect(self) -> duckdb.DuckDBPyConnection:
        """A writable connection, its schema at ``migrations.LATEST``."""

    @abstractmethod
    def connect_read_only(self) -> duckdb.DuckDBPyConnection:
        """A connection for reading only (the CLI's summaries)."""

    @abstractmethod
    def migrate(self) -> tuple[int, int]:
        """Bring the schema to ``migrations.LATEST``; returns (version before, version after)."""

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.connect()
        try:
            yield con
        finally:
            con.close()

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self.connect_read_only()
        try:
            yield con
        finally:
            con.close()

    @staticmethod
    @abstractmethod
    def rewriting(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...], day: str | None) -> Iterator[None]:
        """Context manager: the block's statements replace partition ``day`` of ``tables`` (no day: the
        whole tables), then the result is published for readers."""

    @staticmethod
    @abstractmethod
    def replace_table(con: duckdb.DuckDBPyConnection, table: str, query: str, params: list) -> None:
        """Make unpartitioned ``table`` the result of ``query``, published for readers."""


class EmbeddedWarehouse(Warehouse):
    """One DuckDB file: one writer at a time; each committed partition is also published as Parquet under
    ``published_root`` (when given) for readers that must not lock the file (published.py)."""

    def __init__(self, database: str | Path, published_root: str | Path | None = None):
        self.database = Path(database)
        self.published_root = None if published_root is None else Path(published_root)

    def check(self) -> None:
        pass  # the file and its folder are created on the first writable open

    def connect(self) -> duckdb.DuckDBPyConnection:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        # DuckDB's default cap is 80% of RAM: a day's partition would then sit in memory whole and peak
        # memory would grow with the day's size; with a fixed cap the large operators spill instead.
        limit = settings.duckdb_memory_limit()
        # The buffer pool's blocks come from memory DuckDB keeps for reuse (up to the cap, freed on
        # close), not fresh pages from the kernel each time: fewer page faults, less system time.
        con = duckdb.connect(
            str(self.database), config={"memory_limit": limit, "block_allocator_memory": limit}
        )
        try:
            migrations.migrate(con)
            if self.published_root is not None:
                published.attach(con, self.published_root)
        except BaseException:
            con.close()
            raise
        return con

    def connect_read_only(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(str(self.database), read_only=True)
        try:
            migrations.require_supported(migrations.version(con))
        except BaseException:
            con.close()
            raise
        return con

    def migrate(self) -> tuple[int, int]:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(str(self.database)) as con:
            return migrations.migrate(con)

    @staticmethod
    @contextmanager
    def rewriting(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...], day: str | None) -> Iterator[None]:
        # one transaction that first deletes the partition, so a re-run never duplicates rows and a
        # failure leaves the old rows; published once committed
        con.execute("BEGIN TRANSACTION")
        try:
            if day is not None:
                for table in tables:
                    if lake.kind(con, table) is not None:
                        con.execute(f'DELETE FROM "{table}" WHERE partition_date = ?', [day])
            yield
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        for table in tables:
            if lake.kind(con, table) is not None:
                published.publish(con, table, day)

    @staticmethod
    def replace_table(con: duckdb.DuckDBPyConnection, table: str, query: str, params: list) -> None:
        con.execute(f'CREATE OR REPLACE TABLE "{table}" AS {query}', params)
        published.publish(con, table, None)


class LakeWarehouse(Warehouse):
    """Parquet per table partition under ``root`` (a folder or an s3:// URL), seen through an in-memory
    DuckDB's views (lake.py): steps of different partitions write at the same time.

    The lake records its schema version in ``<root>/schema_version.parquet`` (outside every table's
    folder). Its files need no rewriting between versions: a connection builds the current tables from
    schema.sql in memory and reads older files as they are (lake.py), so migrating records the version."""

    MARKER = "schema_version.parquet"

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def check(self) -> None:
        lake.check_root(self.root)

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = lake.connect(self.root)
        try:
            if self._version(con) < migrations.LATEST:
                self._record(con)
        except BaseException:
            con.close()
            raise
        return con

    def connect_read_only(self) -> duckdb.DuckDBPyConnection:
        con = lake.connect(self.root)
        try:
            self._version(con)
        except BaseException:
            con.close()
            raise
        return con

    def migrate(self) -> tuple[int, int]:
        with lake.connect(self.root) as con:
            found = self._version(con)
            if found < migrations.LATEST:
                self._record(con)
            return found, migrations.LATEST

    def _version(self, con: duckdb.DuckDBPyConnection) -> int:
        """The recorded version (0: none recorded), refused when newer than this code."""
        marker = f"{self.root}/{self.MARKER}"
        if not con.execute("SELECT count(*) FROM glob(?)", [marker]).fetchone()[0]:
            return 0
        found = con.execute("SELECT max(version) FROM read_parquet(?)", [marker]).fetchone()[0]
        migrations.require_supported(found)
        return found

    def _record(self, con: duckdb.DuckDBPyConnection) -> None:
        marker = f"{self.root}/{self.MARKER}"
        rows = f"SELECT {int(migrations.LATEST)}::INTEGER AS version, now() AS recorded_at"
        if lake.is_url(self.root):
            con.execute(f"COPY ({rows}) TO {lake.literal(marker)} (FORMAT parquet)")
            return
        # concurrent steps may record at once: each writes its own file and renames it into place
        temporary = Path(self.root) / f".{self.MARKER}.{secrets.token_hex(4)}.tmp"
        try:
            con.execute(f"COPY ({rows}) TO {lake.literal(str(temporary))} (FORMAT parquet)")
            os.replace(temporary, marker)
        finally:
            temporary.unlink(missing_ok=True)

    @staticmethod
    @contextmanager
    def rewriting(con: duckdb.DuckDBPyConnection, tables: tuple[str, ...], day: str | None) -> Iterator[None]:
        # the block writes into temporary tables of the same names; each is then published as its
        # partition's one Parquet file
        try:
            for table in tables:
                lake.shadow(con, table, day)
            yield
            for table in tables:
                lake.publish(con, table, day)
        finally:
            for table in tables:
                lake.drop_shadow(con, table)

    @staticmethod
    def replace_table(con: duckdb.DuckDBPyConnection, table: str, query: str, params: list) -> None:
        con.execute(f'CREATE OR REPLACE TEMP TABLE "{table}" AS {query}', params)
        lake.publish(con, table, None)


def build(
    storage: str, *, database: str | Path, lake_root: str, published_root: str | Path | None = None
) -> Warehouse:
    """The warehouse the settings name: ``embedded`` (the DuckDB file ``database``, publishing under
    ``published_root``) or ``lake`` (Parquet under ``lake_root``)."""
    if storage == "embedded":
        return EmbeddedWarehouse(database, published_root)
    if storage == "lake":
        return LakeWarehouse(lake_root)
    raise settings.SettingError(
        f"BANKANOM_STORAGE={storage!r} is not a storage mode; use one of {list(settings.STORAGE_MODES)}"
    )


def from_settings() -> Warehouse:
    """The warehouse of the environment's settings (BANKANOM_STORAGE, BANKANOM_WAREHOUSE, ...)."""
    database = settings.warehouse_path()
    return build(
        settings.storage_mode(),
        database=database,
        lake_root=settings.lake_root(),
        published_root=settings.published_dir(database),
    )


def of(con: duckdb.DuckDBPyConnection) -> type[Warehouse]:
    """Which kind of warehouse ``con`` was opened on: how a write through it lands."""
    return EmbeddedWarehouse if lake.root_of(con) is None else LakeWarehouse
