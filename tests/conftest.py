import datetime as dt
import os
import shutil
from pathlib import Path

import duckdb
import pytest

from bankanom_pipeline.generator.config import load_config
from tests import demo_world

FIXTURES = Path(__file__).parent / "fixtures"
DAY = "2026-01-05"
DAY_START = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp())


@pytest.fixture(scope="session")
def config():
    return load_config()


@pytest.fixture(scope="session")
def predecessor_config():
    return load_config(FIXTURES / "predecessor-mock-config.yaml")


def generated_days(landing: Path, seeds: dict[str, int], rate: float) -> None:
    """Mock logs for each day of ``seeds`` at ``rate`` events a second, under its own traffic seed, the
    same bank's customers every day (what `bankanom demo` writes: a day's lookback into the day before
    reads the same people)."""
    from bankanom_pipeline.cli import _load
    from bankanom_pipeline.cli.demo import _write_day

    cfg = _load(None)
    generation = cfg.log_generation.model_copy(update={"logs_per_second": rate})
    customers = cfg.population.model_copy(update={"seed": cfg.customer_seed})
    cfg = cfg.model_copy(update={"log_generation": generation, "population": customers})
    for day, seed in seeds.items():
        _write_day(cfg.model_copy(update={"seed": seed}), day, landing)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """tests/tiny_platform.py's prepared folder: built once per test process, or taken from
    BANKANOM_TEST_TINY when scripts/test.sh built it once for the whole run (both tiers, every worker and
    stream). Read-only, several test processes share it: copy it."""
    from tests import tiny_platform

    given = os.environ.get("BANKANOM_TEST_TINY")
    if given:
        return Path(given)
    return tiny_platform.prepare(tmp_path_factory.mktemp("tiny-platform"))


@pytest.fixture(scope="session")
def tiny_day_run(tiny_world, tmp_path_factory) -> Path:
    """The tiny platform's data folder after an uninterrupted pipeline_job run of its day
    (``tiny_platform.DAY``): the scores, incidents and snapshot a plain run leaves, which the crash tests
    compare their reruns with and the predict tests' stored scores come from; built once per test
    process. Read-only: copy it."""
    from tests import tiny_platform

    root = tmp_path_factory.mktemp("tiny-day-run")
    shutil.copytree(tiny_world / "base", root / "data")
    env = tiny_platform.cli_env(root / "data", tiny_world / "landing", root / "dagster_home")
    tiny_platform.ok(env, "run", "--job", "pipeline_job", "--date", tiny_platform.DAY)
    return root / "data"


def small(config, **update):
    """A cheaper config for tests: fewer users, higher rate so short ranges carry many instances."""
    generation = config.log_generation.model_copy(update={"logs_per_second": update.pop("rate", 200.0)})
    population = config.population.model_copy(update={"users": 500})
    return config.model_copy(update={"log_generation": generation, "population": population, **update})


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The main job as a user runs it, once per test run (tests/demo_world.py): built here, or taken from
    BANKANOM_TEST_DEMO when scripts/test.sh built it beside the fast tier. Yields its output, a read-only
    connection to the warehouse it leaves, and its data folder (models, snapshots, landing): read-only,
    several test processes share it."""
    given = os.environ.get("BANKANOM_TEST_DEMO")
    root = Path(given) if given else tmp_path_factory.mktemp("demo")
    if not given:
        demo_world.build(root)
    code, out = demo_world.read(root)
    assert code == 0, out[-6000:]
    con = duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True)
    yield out, con, root / "data"
    con.close()


TX_DAY = "2026-02-01"  # the generated transactions delivery
DIRTY_DAY = "2026-01-31"  # a dirty real-layout delivery, filed under an earlier day (see below)
TX_ROWS = 15_000
# a real-layout delivery: the other IP spelling, a quoted comma, dirty rows of every kind
DIRTY = """TransactionID,AccountID,TransactionAmount,TransactionDate,TransactionType,Location,DeviceID,IPAddress,MerchantID,Channel,CustomerAge,CustomerOccupation,TransactionDuration,LoginAttempts,AccountBalance,PreviousTransactionDate,Comment
RX000001,AC90001,14.09,2026-02-02 16:29:14,Debit,San Diego,D000380,162.198.218.92,M015,ATM,70,Doctor,81,1,5112.21,2024-11-04 08:08:08,"late, but fine"
RX000002,AC90001,20.00,2026-02-02 16:29:14,Debit,San Diego,D000380,162.198.218.92,M015,ATM,70,Doctor,81,1,5092.21,2024-11-04 08:08:08,same second
RX000003,AC90002,-5.00,2026-02-02 10:00:00,Debit,Houston,D000051,13.149.61.4,M052,ATM,68,Doctor,141,1,100.00,2024-11-04 08:09:35,negative
RX000004,AC90002,5.00,2026-02-31 10:00:00,Debit,Houston,D000051,13.149.61.4,M052,ATM,68,Doctor,141,1,100.00,,bad date
RX000005,AC90002,5.00,2026-02-02 11:00:00,Transfer,Houston,D000051,13.149.61.4,M052,Phone,68,Pilot,141,1,100.00,,unknown enums
RX000006,AC90003,5.00,2026-02-02 12:00:00,Credit,Mesa,D000235,999.1.1.1,M009,Branch,17,Student,30,1,50.00,,bad ip and age
RX000001,AC90001,14.09,2026-02-02 16:29:14,Debit,San Diego,D000380,162.198.218.92,M015,ATM,70,Doctor,81,1,5112.21,2024-11-04 08:08:08,duplicate

RX000007,AC90003,5.00,2026-02-02 12:00:00,Credit
"""
# clean rows of the same delivery: the quarantined share stays under validated_transactions' 5% gate
CLEAN = "".join(
    f"RC{i:06d},AC9{i % 7:04d},{10 + i % 50}.25,2026-02-02 {8 + i // 12 % 12:02d}:{i * 7 % 60:02d}:00,Debit,"
    f"Denver,D9{i % 7:05d},10.0.0.{i % 7 + 1},M0{i % 9 + 10},Online,40,Engineer,60,1,{9000 - i}.00,,\n"
    for i in range(100)
)


def _ingest_transactions(world: Path, home: Path, csv: Path, day: str) -> str:
    """`bankanom ingest-transactions` run in this process (tests/tiny_platform.py's ``ok``): it only sets
    the scene, so it does not pay another process's imports of Dagster, scikit-learn and GX."""
    from tests import tiny_platform

    env = {**os.environ, "BANKANOM_DATA_DIR": str(world), "DAGSTER_HOME": str(home)}
    return tiny_platform.ok(env, "ingest-transactions", str(csv), "--date", day)


def world_with_transactions(demo, root: Path) -> Path:
    """A copy of the demo's models, snapshot and warehouse under ``root``, plus two transactions
    deliveries run through the pipeline (`bankanom ingest-transactions`): 15,000 generated rows on
    TX_DAY (which trains the transaction models and republishes the snapshot with both domains:
    something for every route and console page to serve), then the dirty real-layout file (DIRTY plus
    CLEAN) filed under the earlier DIRTY_DAY. Being older, that run's evaluation (it has no labels) and
    snapshot do not replace TX_DAY's as the latest: the served world stays the generated one's."""
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
        inbox / "bank.csv",
        inbox / "bank.labels.csv",
        rows=TX_ROWS,
        seed=3,
        start=dt.date(2026, 1, 2),
        days=30,
    )
    _ingest_transactions(world, home, inbox / "bank.csv", TX_DAY)
    (inbox / "real.csv").write_text(DIRTY + CLEAN)
    _ingest_transactions(world, home, inbox / "real.csv", DIRTY_DAY)
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
