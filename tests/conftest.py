import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from bankanom_pipeline.generator.config import load_config

FIXTURES = Path(__file__).parent / "fixtures"
DAY = "2026-01-05"
DAY_START = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp())


@pytest.fixture(scope="session")
def config():
    return load_config()


@pytest.fixture(scope="session")
def predecessor_config():
    return load_config(FIXTURES / "predecessor-mock-config.yaml")


def small(config, **update):
    """A cheaper config for tests: fewer users, higher rate so short ranges carry many instances."""
    generation = config.log_generation.model_copy(update={"logs_per_second": update.pop("rate", 200.0)})
    population = config.population.model_copy(update={"users": 500})
    return config.model_copy(update={"log_generation": generation, "population": population, **update})


DEMO_DAY = "2026-01-06"


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The main job as a user runs it, once per test session: `bankanom demo` in a subprocess on a small
    pair of days (training day, held-out day with another seed). Yields its output, a read-only
    connection to the warehouse it leaves, and its data folder (models, snapshots, landing)."""
    root = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "BANKANOM_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home")}
    result = subprocess.run(
        [sys.executable, "-m", "bankanom_pipeline.cli", "demo", "--date", DEMO_DAY, "--rate", "1.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    con = duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True)
    yield result.stdout, con, root / "data"
    con.close()


def world_with_transactions(demo, root: Path, day: str = "2026-02-01") -> Path:
    """A copy of the demo's models, snapshot and warehouse under ``root``, plus a 10,000-row transactions
    delivery run through the pipeline (`bankanom ingest-transactions`), which republishes the snapshot
    with both: something for every route and console page to serve."""
    from bankanom_pipeline.transactions.generator import write

    _, _, data = demo
    world = root / "data"
    world.mkdir()
    shutil.copytree(data / "models", world / "models")
    shutil.copytree(data / "snapshots", world / "snapshots")
    shutil.copy(data / "warehouse.duckdb", world / "warehouse.duckdb")
    inbox, home = root / "inbox", root / "dagster_home"
    home.mkdir()
    write(
        inbox / "bank.csv", inbox / "bank.labels.csv", rows=10_000, seed=3, start=dt.date(2026, 1, 2), days=30
    )
    env = {**os.environ, "BANKANOM_DATA_DIR": str(world), "DAGSTER_HOME": str(home)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bankanom_pipeline.cli",
            "ingest-transactions",
            str(inbox / "bank.csv"),
            "--date",
            day,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return world


@pytest.fixture(scope="session")
def transactions_world(demo, tmp_path_factory) -> Path:
    """``world_with_transactions`` built once per session; a module that writes to it (feedback, a
    republished snapshot) serves its own ``copy_world``."""
    return world_with_transactions(demo, tmp_path_factory.mktemp("transactions-world"))


def copy_world(world: Path, root: Path) -> Path:
    """A private copy of the data folder ``world`` under ``root``."""
    shutil.copytree(world, root / "data")
    return root / "data"
