"""Where things live. Files bankanom writes go under one home folder, ``BANKANOM_HOME`` (default: the
working directory): ``data/`` and ``dagster_home/``; environment variables override each place. What
bankanom only reads (the SQL models and seeds, the YAML configs) ships inside the package, so an
installed wheel runs from any folder and writes nothing where it is installed."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def home() -> Path:
    """The folder ``data/`` and ``dagster_home/`` default to: ``BANKANOM_HOME``, else the working
    directory (the checkout, when run as the README says)."""
    return Path(os.environ.get("BANKANOM_HOME") or Path.cwd()).absolute()


def sql_root() -> Path:
    """The SQL models and seeds (the checkout's ``dbt_like_sql/``, which the package links to and the
    wheel carries as package data)."""
    return Path(str(files("bankanom_pipeline") / "dbt_like_sql"))


def instance_config() -> str:
    """The Dagster instance settings the pipeline relies on (the checkout's ``dagster_home/dagster.yaml``,
    which the package links to as ``instance.yaml`` and the wheel carries)."""
    return (files("bankanom_pipeline") / "instance.yaml").read_text()


def data_dir() -> Path:
    return Path(os.environ.get("BANKANOM_DATA_DIR", home() / "data"))


def warehouse_path() -> Path:
    return Path(os.environ.get("BANKANOM_WAREHOUSE", data_dir() / "warehouse.duckdb"))


def landing_dir() -> Path:
    return Path(os.environ.get("BANKANOM_LANDING_DIR", data_dir() / "landing"))


def mock_config_path() -> Path | None:
    value = os.environ.get("BANKANOM_MOCK_CONFIG")
    return Path(value) if value else None


def models_dir() -> Path:
    return Path(os.environ.get("BANKANOM_MODELS_DIR", data_dir() / "models"))


def snapshots_dir() -> Path:
    return Path(os.environ.get("BANKANOM_SNAPSHOTS_DIR", data_dir() / "snapshots"))


def live_dir() -> Path:
    """The stream scorer's folder: its SQLite live store and its engine checkpoints (``bankanom stream``)."""
    return Path(os.environ.get("BANKANOM_LIVE_DIR", data_dir() / "live"))


def stream_url() -> str:
    """The stream scorer's internal service (loopback), which the API forwards ingest and peeks to."""
    return os.environ.get("BANKANOM_STREAM_URL", "http://127.0.0.1:8090").rstrip("/")


def stream_key() -> str | None:
    """When set, the stream's internal service requires it in the ``X-Stream-Key`` header."""
    return os.environ.get("BANKANOM_STREAM_KEY") or None


def published_dir(warehouse: Path | None = None) -> Path:
    """Where embedded runs publish each table as Parquet for analysts (``bankanom sql``): beside the
    DuckDB file (``data/published`` by default), so a warehouse elsewhere never writes into ``data/``."""
    value = os.environ.get("BANKANOM_PUBLISHED_DIR")
    return Path(value) if value else (warehouse or warehouse_path()).parent / "published"


def alerts_path() -> Path:
    return Path(os.environ.get("BANKANOM_ALERTS_DB", data_dir() / "alerts.duckdb"))


def feedback_path() -> Path:
    """Analyst feedback from the console: the API's own small DuckDB file (see feedback.py)."""
    return Path(os.environ.get("BANKANOM_FEEDBACK_DB", data_dir() / "feedback.duckdb"))


def duckdb_memory_limit() -> str:
    """DuckDB's own memory cap for pipeline connections; beyond it joins, sorts and windows spill to disk."""
    return os.environ.get("BANKANOM_DUCKDB_MEMORY_LIMIT", "1GB")


def dagster_home() -> Path:
    """The Dagster instance folder the CLI and ``bankanom up`` use (run history, sensor cursors)."""
    return Path(os.environ.get("DAGSTER_HOME", home() / "dagster_home"))


STORAGE_MODES = ("embedded", "lake")
EXECUTORS = ("in_process", "celery")


class SettingError(ValueError):
    """A deployment setting is wrong; the message names the environment variable to fix."""


def storage_mode() -> str:
    """``embedded`` (one DuckDB file, the default) or ``lake`` (Parquet per table partition)."""
    mode = os.environ.get("BANKANOM_STORAGE", "embedded").strip().lower()
    if mode not in STORAGE_MODES:
        raise SettingError(
            f"BANKANOM_STORAGE={mode!r} is not a storage mode; use one of {list(STORAGE_MODES)}"
        )
    return mode


def lake_root() -> str:
    """Where lake mode keeps its Parquet tables: a folder, or an s3:// URL (DuckDB's httpfs)."""
    return os.environ.get("BANKANOM_LAKE_ROOT", str(data_dir() / "lake"))


def executor() -> str:
    """How a run executes its steps: ``in_process`` (the default) or ``celery`` (Dagster's Celery executor)."""
    name = os.environ.get("BANKANOM_EXECUTOR", "in_process").strip().lower()
    if name not in EXECUTORS:
        raise SettingError(f"BANKANOM_EXECUTOR={name!r} is not an executor; use one of {list(EXECUTORS)}")
    return name


def celery_broker() -> str:
    return os.environ.get("BANKANOM_CELERY_BROKER", "redis://localhost:6379/0")


def celery_backend() -> str:
    return os.environ.get("BANKANOM_CELERY_BACKEND", "redis://localhost:6379/1")
