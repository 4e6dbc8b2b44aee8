import dagster as dg
import pytest

from bankanom_pipeline.definitions import defs
from bankanom_pipeline.defs.features.assets import build_sql_assets
from bankanom_pipeline.sqlmodels.runner import Project, SqlModelError
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse


def write(root, name, sql):
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sql)


@pytest.fixture
def project_root(tmp_path):
    root = tmp_path / "sql"
    write(root, "seeds/colours.csv", "colour,warm\nred,true\nblue,false\n")
    write(
        root,
        "staging/stg_things.sql",
        "-- Things, typed.\n{{ config(partitioned=true) }}\n"
        "SELECT partition_date, thing, colour FROM {{ source('raw', 'things') }} "
        "WHERE partition_date = DATE '{{ partition_date }}'",
    )
    write(
        root,
        "marts/warm_things.sql",
        "{{ config(partitioned=true) }}\nSELECT s.partition_date, s.thing FROM {{ ref('stg_things') }} s "
        "JOIN {{ ref('colours') }} c USING (colour) WHERE c.warm AND s.partition_date = DATE '{{ partition_date }}'",
    )
    write(
        root,
        "marts/thing_count.sql",
        "{{ config(materialized='view') }}\nSELECT count(*) AS n FROM {{ ref('warm_things') }}",
    )
    return root


def test_refs_are_resolved_and_ordered(project_root):
    project = Project(project_root)
    order = project.order
    assert order.index("stg_things") < order.index("warm_things") < order.index("thing_count")
    assert order.index("colours") < order.index("warm_things")
    assert project.models["stg_things"].sources == [("raw", "things")]
    assert project.models["stg_things"].description == "Things, typed."
    assert project.models["thing_count"].materialized == "view"


def test_partitions_are_replaced_idempotently(project_root, tmp_path):
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    con.execute(
        "CREATE TABLE things AS SELECT * FROM (VALUES (DATE '2026-01-05', 'a', 'red'), "
        "(DATE '2026-01-05', 'b', 'blue'), (DATE '2026-01-06', 'c', 'red')) t(partition_date, thing, colour)"
    )
    project = Project(project_root)
    for _ in range(2):
        assert project.materialize(con, "stg_things", "2026-01-05") == 2
        assert project.materialize(con, "warm_things", "2026-01-05") == 1  # the seed is loaded on demand
    assert project.materialize(con, "stg_things", "2026-01-06") == 1
    assert con.execute("SELECT count(*) FROM stg_things").fetchone()[0] == 3
    assert project.materialize(con, "thing_count") == 1


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"a.sql": "SELECT * FROM {{ ref('b') }}", "b.sql": "SELECT * FROM {{ ref('a') }}"},
            "dependency cycle",
        ),
        ({"a.sql": "SELECT * FROM {{ ref('nope') }}"}, "unknown ref(s) ['nope']"),
        ({"a.sql": "{{ config(materialized='index') }} SELECT 1"}, "materialized must be"),
        ({"a.sql": "SELECT {{ undefined_thing }}"}, "undefined_thing"),
        ({"x/a.sql": "SELECT 1", "y/a.sql": "SELECT 2"}, "two models are named 'a'"),
        ({"a.sql": "{{ config(compression={'x': 'fsst'}) }} SELECT 1 AS x"}, "partitioned tables only"),
        ({"a.sql": "{{ config(follows_upstream=true) }} SELECT 1"}, "only a partitioned model follows"),
    ],
)
def test_bad_projects_fail_with_clear_errors(tmp_path, files, message):
    for name, sql in files.items():
        write(tmp_path, name, sql)
    with pytest.raises(SqlModelError) as error:
        Project(tmp_path)
    assert message in str(error.value)


def test_compression_pins_reach_the_table(tmp_path):
    # each pinned against DuckDB's own choice: unique text would be fsst, three values dictionary
    pins = "{'word': 'dictionary', 'kind': 'fsst'}"
    write(
        tmp_path,
        "pinned.sql",
        f"{{{{ config(partitioned=true, compression={pins}) }}}}\n"
        "SELECT DATE '{{ partition_date }}' AS partition_date, 'word number ' || i AS word, "
        "'kind ' || (i % 3) AS kind, 'free ' || (i % 3) AS free FROM range(200000) t(i)",
    )
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    Project(tmp_path).materialize(con, "pinned", "2026-01-05")
    con.execute("CHECKPOINT")
    used = dict(
        con.execute(
            "SELECT column_name, list(DISTINCT compression) FROM pragma_storage_info('pinned') "
            "WHERE segment_type = 'VARCHAR' GROUP BY ALL"
        ).fetchall()
    )
    assert used == {"word": ["Dictionary"], "kind": ["FSST"], "free": ["Dictionary"]}
    write(
        tmp_path,
        "pinned.sql",
        "{{ config(partitioned=true, compression={'nope': 'fsst'}) }}\nSELECT DATE '{{ partition_date }}' AS partition_date",
    )
    with pytest.raises(
        SqlModelError, match=r"compression names column\(s\) the model does not select: \['nope'\]"
    ):
        Project(tmp_path).materialize(con, "pinned", "2026-01-05")


def test_partition_escapes_are_refused(tmp_path):
    write(tmp_path, "leaky.sql", "{{ config(partitioned=true) }} SELECT DATE '1999-01-01' AS partition_date")
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    with pytest.raises(SqlModelError, match="outside partition"):
        Project(tmp_path).materialize(con, "leaky", "2026-01-05")


def test_each_sql_file_is_an_asset_with_its_lineage(project_root):
    keys = {a.key.to_user_string(): a for a in build_sql_assets(Project(project_root))}
    assert set(keys) == {"colours", "stg_things", "warm_things", "thing_count"}
    deps = {k.to_user_string() for k in keys["warm_things"].asset_deps[keys["warm_things"].key]}
    assert deps == {"stg_things", "colours"}
    assert keys["warm_things"].partitions_def is not None and keys["thing_count"].partitions_def is None
    write(project_root, "marts/new_model.sql", "SELECT * FROM {{ ref('thing_count') }}")
    assert "new_model" in {a.key.to_user_string() for a in build_sql_assets(Project(project_root))}


def test_definitions_load_completely():
    repository = defs.get_repository_def()
    graph = repository.asset_graph
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == {
        "raw_logs",
        "validated_logs",
        "log_labels",
        "geo_regions",
        "transaction_cities",
        "stg_logs",
        "feat_user_activity",
        "feat_ip_activity",
        "feat_service_activity",
        "feat_rarity",
        "features_events",
        "isolation_forest_model",
        "local_outlier_factor_model",
        "promoted_models",
        "scored_events",
        "incidents",
        "incident_reranks",
        "incident_reranker",
        "evaluation",
        "api_snapshot",
        "raw_transactions",
        "validated_transactions",
        "transaction_labels",
        "transaction_feature_patterns",
        "features_transactions",
        "transaction_isolation_forest_model",
        "transaction_local_outlier_factor_model",
        "transaction_ecod_model",
        "promoted_transaction_models",
        "scored_transactions",
        "transaction_incidents",
        "transaction_evaluation",
        "transaction_snapshot",
        "transaction_reranker",
    }
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {
        ("raw_logs", "counts_reconcile"),
        ("raw_logs", "rejected_share"),
        ("validated_logs", "counts_reconcile"),
        ("validated_logs", "not_empty"),
        ("validated_logs", "quarantine_share"),
        ("validated_logs", "log_rules"),
        ("isolation_forest_model", "score_distribution_sane"),
        ("isolation_forest_model", "not_worse_than_current"),
        ("local_outlier_factor_model", "score_distribution_sane"),
        ("local_outlier_factor_model", "not_worse_than_current"),
        ("scored_events", "every_event_scored"),
        ("raw_transactions", "counts_reconcile"),
        ("validated_transactions", "counts_reconcile"),
        ("validated_transactions", "not_empty"),
        ("validated_transactions", "quarantine_share"),
        ("validated_transactions", "transaction_rules"),
        ("transaction_isolation_forest_model", "score_distribution_sane"),
        ("transaction_isolation_forest_model", "not_worse_than_current"),
        ("transaction_local_outlier_factor_model", "score_distribution_sane"),
        ("transaction_local_outlier_factor_model", "not_worse_than_current"),
        ("transaction_ecod_model", "score_distribution_sane"),
        ("transaction_ecod_model", "not_worse_than_current"),
        ("scored_transactions", "every_transaction_scored"),
    }
    assert {j.name for j in repository.get_all_jobs() if not j.name.startswith("__")} == {
        "ingest_job",
        "landing_append_job",
        "features_job",
        "pipeline_job",
        "train_job",
        "transaction_features_job",
        "transactions_job",
        "transaction_train_job",
        "incident_reranker_job",
        "transaction_reranker_job",
    }
    assert {s.name for s in repository.schedule_defs} == {
        "pipeline_job_schedule",
        "scoring_catchup_schedule",
        "retrain_schedule",
    }
    assert {s.name for s in repository.sensor_defs} == {
        "landing_sensor",
        "automation_sensor",
        "drift_sensor",
        "failure_alert_sensor",
        "dead_run_sensor",
        "run_record_sensor",
    }
    lineage = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }
    assert lineage["validated_logs"] == {"raw_logs"}
    assert lineage["features_transactions"] == {"validated_transactions", "transaction_cities"}
    assert lineage["scored_transactions"] == {"features_transactions", "promoted_transaction_models"}
    assert lineage["transaction_incidents"] == {"scored_transactions", "transaction_feature_patterns"}
    assert lineage["stg_logs"] == {"validated_logs"}
    assert lineage["features_events"] == {
        "stg_logs",
        "feat_user_activity",
        "feat_ip_activity",
        "feat_service_activity",
        "feat_rarity",
    }
    assert lineage["isolation_forest_model"] == lineage["local_outlier_factor_model"] == {"features_events"}
    assert lineage["promoted_models"] == {"isolation_forest_model", "local_outlier_factor_model"}
    assert lineage["scored_events"] == {"features_events", "promoted_models"}
    assert lineage["incidents"] == {"scored_events"}
    assert lineage["evaluation"] == {"scored_events", "incidents", "incident_reranks", "log_labels"}
    assert lineage["incident_reranks"] == {"incidents"}
    assert dg.AssetKey("features_events") in graph.get_all_asset_keys()
