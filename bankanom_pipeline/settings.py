"""Where things live. Defaults point into the project's ``data/``; environment variables override."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return Path(os.environ.get("BANKANOM_DATA_DIR", PROJECT_ROOT / "data"))


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
    return Path(os.environ.get("DAGSTER_HOME", PROJECT_ROOT / "dagster_home"))
