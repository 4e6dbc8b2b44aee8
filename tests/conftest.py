import datetime as dt
import os
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
