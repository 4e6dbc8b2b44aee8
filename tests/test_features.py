"""The daily chain raw -> validated -> SQL features on generated traffic, through real Dagster runs."""

import shutil

import dagster as dg
import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bankanom_pipeline.definitions import defs
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.writer import write_range
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse
from tests.conftest import DAY, DAY_START, small

FEATURE_TABLES = [
    "stg_logs",
    "feat_user_activity",
    "feat_ip_activity",
    "feat_service_activity",
    "feat_rarity",
    "features_events",
]


def _run(root) -> dg.ExecuteInProcessResult:
    warehouse = WarehouseResource(database=str(root / "w.duckdb"), landing_dir=str(root / "landing"))
    job = defs.resolve_job_def("features_job")
    return job.execute_in_process(partition_key=DAY, resources={"warehouse": warehouse})


def _count(root, table: str) -> int:
    return (
        EmbeddedWarehouse(root / "w.duckdb")
        .connect_read_only()
        .execute(f"SELECT count(*) FROM {table}")
        .fetchone()[0]
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, config):
    """The same generated day twice: as generated, and with every anomaly_details removed. The blind day
    is run over a copy of the labelled warehouse, so its run is also a re-run of the chain over a day
    already there (which must replace it, not add to it)."""
    labelled = tmp_path_factory.mktemp("labelled")
    write_range(
        Generator(small(config, rate=6.0)), labelled / "landing" / "logs", DAY_START, DAY_START + 2 * 3600
    )
    labelled_run = _run(labelled)
    blind = tmp_path_factory.mktemp("blind")
    shutil.copytree(labelled, blind, dirs_exist_ok=True)
    before = {table: _count(blind, table) for table in ("raw_logs", "log_labels", *FEATURE_TABLES)}
    for path in (blind / "landing").rglob("*.jsonl"):
        records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        path.write_bytes(
            b"\n".join(orjson.dumps({k: v for k, v in r.items() if k != "anomaly_details"}) for r in records)
            + b"\n"
        )
    return {"labelled": (labelled, labelled_run), "blind": (blind, _run(blind)), "before_rerun": before}


def test_chain_materializes_and_passes_every_check(runs):
    root, result = runs["labelled"]
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks), [
        (c.asset_key, c.check_name) for c in checks if not c.passed
    ]
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"raw_logs", "validated_logs", "log_labels", *FEATURE_TABLES} <= materialized
    con = EmbeddedWarehouse(root / "w.duckdb").connect_read_only()
    validated = con.execute("SELECT count(*) FROM validated_logs").fetchone()[0]
    assert validated > 10_000
    assert con.execute("SELECT count(*) FROM features_events").fetchone()[0] == validated
    nulls = con.execute(
        "SELECT count(*) FROM features_events WHERE COLUMNS(* EXCLUDE "
        "(user_id, ip_address, correlation_id)) IS NULL"
    ).fetchone()[0]
    assert nulls == 0


def test_ground_truth_never_reaches_a_feature_table(runs):
    """Identical feature tables whether or not the input carried anomaly_details."""
    con_a = EmbeddedWarehouse(runs["labelled"][0] / "w.duckdb").connect_read_only()
    con_b = EmbeddedWarehouse(runs["blind"][0] / "w.duckdb").connect_read_only()
    for table in FEATURE_TABLES:
        key = "event_key" if table.startswith("feat_") else "event_id"
        a = con_a.execute(f"SELECT * FROM {table} ORDER BY {key}").pl()
        b = con_b.execute(f"SELECT * FROM {table} ORDER BY {key}").pl()
        assert a.height > 0
        # exact but for the last bits of floating sums, whose order DuckDB's parallel windows may vary
        assert_frame_equal(a, b, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    assert con_b.execute("SELECT count(*) FILTER (WHERE is_anomaly) FROM log_labels").fetchone()[0] == 0


def test_features_carry_the_scenarios_signal(runs):
    con = EmbeddedWarehouse(runs["labelled"][0] / "w.duckdb").connect_read_only()
    frame = con.execute(
        "SELECT coalesce(l.anomaly_id, 'normal') AS scenario, f.* FROM features_events f "
        "JOIN log_labels l USING (partition_date, event_id) WHERE l.correlation_event IS NULL"
    ).pl()

    def median(scenario: str, feature: str) -> float:
        return frame.filter(pl.col("scenario") == scenario)[feature].median()

    assert median("BANK-002", "network_distinct_users_10m") > 5 * max(
        median("normal", "network_distinct_users_10m"), 1
    )
    assert median("BANK-001", "user_failed_logins_10m") > 3
    assert median("normal", "user_failed_logins_10m") == 0
    assert median("BANK-012", "replication_lag_s") > 5 * median("normal", "replication_lag_s")
    assert median("BANK-005", "user_country_share") < 0.5 < median("normal", "user_country_share")
    assert median("BANK-013", "requests_per_second") > 20 * median("normal", "requests_per_second")
    normal = frame.filter(pl.col("scenario") == "normal")
    # a session id used from a second address happens only when one is stolen
    assert normal["session_distinct_ips"].max() == 1
    assert frame.filter(pl.col("scenario") == "BANK-007")["session_distinct_ips"].max() >= 2
    # ordinary traffic from the bank's own countries is never as rare as a victim's foreign logins
    assert median("BANK-005", "rare_quiet_country") > normal["rare_quiet_country"].max()


def test_rerun_of_the_chain_is_idempotent(runs):
    """The blind run re-ran the chain over the labelled day: every table holds the day once, as many
    rows as before (test_ground_truth_never_reaches_a_feature_table: the same rows as a first run)."""
    root, result = runs["blind"]
    assert result.success
    assert {table: _count(root, table) for table in runs["before_rerun"]} == runs["before_rerun"]
    con = EmbeddedWarehouse(root / "w.duckdb").connect_read_only()
    for table in ("raw_logs", "log_labels", "features_events"):
        assert con.execute(f"SELECT count(*) = count(DISTINCT event_id) FROM {table}").fetchone()[0], table


def test_readme_queries_run(runs):
    """The example queries in docs/querying.md work against a generated warehouse."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "docs" / "querying.md").read_text()
    block = readme.split("## In short", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    queries = [q.strip() for q in re.sub(r"--[^\n]*", "", block).split(";") if q.strip()]
    assert len(queries) == 3
    con = EmbeddedWarehouse(runs["labelled"][0] / "w.duckdb").connect_read_only()
    results = [con.execute(q).fetchall() for q in queries]
    assert results[1] and results[2], "failed-login sources and DDoS minutes exist in generated traffic"
