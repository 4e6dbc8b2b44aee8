"""The resources that place what runs write: an asset publishes where its resource points, and the code
location's resources follow the environment when a run uses them, as the settings do."""

import dagster as dg

from bankanom_pipeline.definitions import defs
from bankanom_pipeline.defs.resources import SnapshotPublisherResource, WarehouseResource
from bankanom_pipeline.defs.serving.assets import api_snapshot
from bankanom_pipeline.detection.sources import LOGS, TRANSACTIONS
from bankanom_pipeline.serving.snapshot import SnapshotPublisher

DAY = "2026-01-06"


def test_api_snapshot_publishes_into_the_snapshots_resources_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BANKANOM_SNAPSHOTS_DIR", str(tmp_path / "default-snapshots"))
    warehouse = WarehouseResource(database=str(tmp_path / "w.duckdb"), landing_dir=str(tmp_path / "landing"))
    with warehouse.connection() as con:
        con.execute(
            f"""CREATE TABLE scored_events AS SELECT DATE '{DAY}' AS partition_date, 'e' || i AS event_id,
                    TIMESTAMP '{DAY}' + i * INTERVAL 1 second AS ts, 'auth-service' AS source_service,
                    'USR-1' AS user_id, '10.0.0.1' AS ip_address, NULL::VARCHAR AS correlation_id,
                    0.5 AS if_score, 0.5 AS lof_score, 0.5 AS ensemble_score, false AS if_flag,
                    false AS lof_flag, false AS is_anomaly, 'if-v' AS if_version, 'lof-v' AS lof_version
                FROM range(3) AS t(i)"""
        )
    snapshots = SnapshotPublisherResource(snapshots_dir=str(tmp_path / "snapshots"))
    result = dg.materialize(
        [api_snapshot], partition_key=DAY, resources={"warehouse": warehouse, "snapshots": snapshots}
    )
    metadata = result.asset_materializations_for_node("api_snapshot")[0].metadata
    pointer = SnapshotPublisher(tmp_path / "snapshots").current()
    assert pointer["file"] == metadata["file"].value and pointer["through"] == DAY
    assert (tmp_path / "snapshots" / pointer["file"]).is_file()
    assert metadata["rows/scored_events"].value == 3
    assert not (tmp_path / "default-snapshots").exists()


def test_the_code_locations_registry_and_snapshots_follow_the_environment_when_used(tmp_path, monkeypatch):
    # set after the code location was imported: in-process runs (the CLI's, the tests') see it
    monkeypatch.setenv("BANKANOM_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("BANKANOM_SNAPSHOTS_DIR", str(tmp_path / "snapshots"))
    registry, snapshots = defs.resources["registry"], defs.resources["snapshots"]
    assert registry.registry(LOGS).root == tmp_path / "models"
    assert registry.registry(TRANSACTIONS).root == tmp_path / "models" / TRANSACTIONS.registry_folder
    assert snapshots.publisher().root == tmp_path / "snapshots"
