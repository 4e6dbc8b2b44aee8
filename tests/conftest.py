import datetime as dt
from pathlib import Path

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
