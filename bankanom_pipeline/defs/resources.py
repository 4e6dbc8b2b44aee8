"""The resources assets and sensors reach storage through, each a thin wrapper over a plain class: the
warehouse (warehouse/store.py), the model registry (detection/registry.py) and the API's snapshots
(serving/snapshot.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import Field

from bankanom_pipeline import settings
from bankanom_pipeline.detection.registry import Registry
from bankanom_pipeline.detection.sources import Source
from bankanom_pipeline.serving.snapshot import SnapshotPublisher
from bankanom_pipeline.warehouse import store


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse (the embedded DuckDB file, or the Parquet lake) and the landing zone that feeds it."""

    storage: str = Field(
        default_factory=settings.storage_mode,
        description="embedded (one DuckDB file) or lake (Parquet per partition); env BANKANOM_STORAGE",
    )
    lake_root: str = Field(
        default_factory=settings.lake_root,
        description="Lake mode's root folder or s3:// URL (env BANKANOM_LAKE_ROOT; default data/lake)",
    )
    database: str = Field(
        default_factory=lambda: str(settings.warehouse_path()),
        description="DuckDB file (env BANKANOM_WAREHOUSE; default data/warehouse.duckdb)",
    )
    landing_dir: str = Field(
        default_factory=lambda: str(settings.landing_dir()),
        description="Landing zone root (env BANKANOM_LANDING_DIR; default data/landing)",
    )
    published_dir: str = Field(
        default="",
        description=(
            "Embedded mode: where runs publish every table as Parquet for analysts (bankanom sql); "
            "env BANKANOM_PUBLISHED_DIR; default published/ beside the DuckDB file (data/published)"
        ),
    )

    @property
    def landing_logs(self) -> Path:
        return Path(self.landing_dir) / "logs"

    @property
    def landing_transactions(self) -> Path:
        return Path(self.landing_dir) / "transactions"

    @property
    def published_root(self) -> Path:
        return Path(self.published_dir) if self.published_dir else settings.published_dir(Path(self.database))

    def warehouse(self) -> store.Warehouse:
        """The plain warehouse these settings name (warehouse/store.py)."""
        return store.build(
            self.storage, database=self.database, lake_root=self.lake_root, published_root=self.published_root
        )

    def check(self) -> None:
        """Fail fast, naming the setting, on a storage configuration that cannot work."""
        self.warehouse().check()

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one step: to the DuckDB file (one writer at a time: the "duckdb" pool), which
        publishes what it commits for readers (published.py), or an in-memory DuckDB over the lake (steps
        of different partitions write at the same time)."""
        with self.warehouse().connection() as con:
            yield con

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for reading only (the CLI's summaries): read-only on the embedded file."""
        with self.warehouse().reading() as con:
            yield con


class RegistryResource(dg.ConfigurableResource):
    """The model registries (logs' and transactions') under one models root."""

    models_dir: str = Field(
        default="",
        description=(
            "Models root, each source's registry under it (env BANKANOM_MODELS_DIR, read when a run uses "
            "it; default data/models)"
        ),
    )

    @property
    def root(self) -> Path:
        return Path(self.models_dir) if self.models_dir else settings.models_dir()

    def registry(self, source: Source) -> Registry:
        """The plain registry of ``source``'s models."""
        return source.registry(self.root)


class SnapshotPublisherResource(dg.ConfigurableResource):
    """The folder of the read-only snapshots the API serves."""

    snapshots_dir: str = Field(
        default="",
        description=(
            "Where snapshots are published (env BANKANOM_SNAPSHOTS_DIR, read when a run uses it; default "
            "data/snapshots)"
        ),
    )

    @property
    def root(self) -> Path:
        return Path(self.snapshots_dir) if self.snapshots_dir else settings.snapshots_dir()

    def publisher(self) -> SnapshotPublisher:
        """The plain publisher of that folder."""
        return SnapshotPublisher(self.root)
