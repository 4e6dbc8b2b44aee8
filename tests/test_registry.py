"""The model registry and the promotion gate, through real Dagster materializations on a crafted
warehouse: versioning, promotion, a worse candidate refused, a tampered artifact refused."""

import json

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.defs.detection.assets import model_assets, promoted_models
from bankanom_pipeline.defs.resources import RegistryResource, WarehouseResource
from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.registry import Registry, RegistryError

DAY = "2026-01-05"


def _features(anomaly_share: float, n: int = 2000, seed: int = 0) -> pl.DataFrame:
    """Normal rows around 0 in every feature; anomalies far out in a few features."""
    rng = np.random.default_rng(seed)
    names = default_detection_config().feature_names
    values = rng.normal(10, 1, (n, len(names)))
    label = rng.random(n) < anomaly_share
    values[label, :6] += rng.normal(12, 1, (label.sum(), 6))
    frame = pl.DataFrame(values, schema=names).with_columns(
        partition_date=pl.lit(DAY).str.to_date(),
        event_id=pl.Series([f"e{seed}-{i}" for i in range(n)]),
        event_key=pl.Series(np.arange(n, dtype=np.uint64)),
    )
    return frame, label


def _load(database, anomaly_share: float, seed: int) -> None:
    frame, label = _features(anomaly_share, seed=seed)
    labels = frame.select("partition_date", "event_id").with_columns(is_anomaly=pl.Series(label))
    con = duckdb.connect(str(database))
    con.execute("DROP TABLE IF EXISTS features_events; DROP TABLE IF EXISTS log_labels")
    con.register("frame_view", frame.to_arrow())
    con.register("labels_view", labels.to_arrow())
    con.execute("CREATE TABLE features_events AS SELECT * FROM frame_view")
    con.execute("CREATE TABLE log_labels AS SELECT * FROM labels_view")
    con.close()


def _train(tmp_path, instance):
    return dg.materialize(
        [*model_assets, promoted_models],
        instance=instance,
        resources={
            "warehouse": WarehouseResource(database=str(tmp_path / "w.duckdb"), landing_dir=str(tmp_path)),
            "registry": RegistryResource(models_dir=str(tmp_path / "models")),
        },
        raise_on_error=False,
    )


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def _status(tmp_path) -> dict[str, str]:
    con = duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True)
    try:
        return dict(con.execute("SELECT version, status FROM model_registry").fetchall())
    finally:
        con.close()


def test_versions_promotion_gate_and_checksum(tmp_path, instance, monkeypatch):
    # the registry resource's folder is where the runs write, not the environment's default
    monkeypatch.setenv("BANKANOM_MODELS_DIR", str(tmp_path / "default-models"))
    registry = Registry(tmp_path / "models")
    _load(tmp_path / "w.duckdb", 0.03, seed=1)
    first = _train(tmp_path, instance)
    assert first.success
    current = registry.current()
    assert set(current) == {"isolation_forest", "local_outlier_factor"}
    assert set(_status(tmp_path).values()) == {"promoted"}
    manifest = registry.manifest(current["isolation_forest"])
    assert manifest["training_window"] == {"start": DAY, "end": DAY}
    assert manifest["training_rows"] == 2000 and len(manifest["sha256"]) == 64
    assert (tmp_path / "models" / current["isolation_forest"] / "model.skops").exists()
    detectors = registry.load_current()
    assert detectors["isolation_forest"].version == current["isolation_forest"]
    assert not (tmp_path / "default-models").exists()

    # a version of one model cannot be promoted as another's, and current does not move
    lof = current["local_outlier_factor"]
    with pytest.raises(RegistryError, match="not isolation_forest"):
        registry.promote({"isolation_forest": lof})
    assert json.loads((tmp_path / "models" / "current.json").read_text()) == current

    # a second run on the same data: new versions, promoted, the old ones retired
    assert _train(tmp_path, instance).success
    second = registry.current()
    assert second["isolation_forest"] != current["isolation_forest"]
    statuses = _status(tmp_path)
    assert (
        statuses[current["isolation_forest"]] == "retired"
        and statuses[second["isolation_forest"]] == "promoted"
    )
    assert len(registry.versions()) == 4

    # poisoned training data (the anomalies are now a third of the window, so they look normal): the
    # candidates are worse on the labelled day, the gate refuses them and current does not move
    _load(tmp_path / "w.duckdb", 0.35, seed=2)
    refused = _train(tmp_path, instance)
    assert not refused.success or not any(
        e.asset_key == dg.AssetKey("promoted_models") for e in refused.get_asset_materialization_events()
    )
    checks = {
        (
            e.asset_check_evaluation_data.asset_key.to_user_string(),
            e.asset_check_evaluation_data.check_name,
        ): (e.asset_check_evaluation_data.passed)
        for e in refused.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks[("isolation_forest_model", "not_worse_than_current")] is False
    assert registry.current() == second
    assert "rejected" in _status(tmp_path).values()

    # a tampered artifact is refused before it is deserialised
    artifact = tmp_path / "models" / second["isolation_forest"] / "model.skops"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(RegistryError, match="checksum mismatch"):
        registry.load(second["isolation_forest"])
    with pytest.raises(RegistryError, match="unknown model version"):
        registry.load("../etc")


def test_a_model_of_another_feature_set_version_is_refused_until_models_are_retrained(
    tmp_path, instance, monkeypatch
):
    from bankanom_pipeline.detection import registry as registry_module
    from bankanom_pipeline.detection.registry import FeatureSetMismatch
    from bankanom_pipeline.online.version import FEATURE_SET_VERSION

    registry = Registry(tmp_path / "models")
    _load(tmp_path / "w.duckdb", 0.03, seed=1)
    assert _train(tmp_path, instance).success
    old = registry.current()
    manifest = registry.manifest(old["isolation_forest"])
    assert manifest["features_table"] == "features_events"
    assert manifest["feature_set_version"] == FEATURE_SET_VERSION
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        recorded = con.execute("SELECT DISTINCT feature_set_version FROM model_registry").fetchall()
    assert recorded == [(FEATURE_SET_VERSION,)]

    # the feature SQL changes: the promoted models no longer load, score or promote
    def newer(table):
        return "0123456789ab" if table == "features_events" else None

    monkeypatch.setattr(registry_module, "current_version", newer)
    with pytest.raises(
        FeatureSetMismatch, match=f"version {FEATURE_SET_VERSION}, but the features are now"
    ) as e:
        registry.load_current()
    assert "0123456789ab" in str(e.value) and "Train and promote" in str(e.value)
    with pytest.raises(FeatureSetMismatch):
        registry.promote(old)

    # retraining on the new features passes the gate (nothing comparable is promoted) and is used
    assert _train(tmp_path, instance).success
    new = registry.current()
    assert new["isolation_forest"] != old["isolation_forest"]
    assert registry.manifest(new["isolation_forest"])["feature_set_version"] == "0123456789ab"
    assert set(registry.load_current()) == {"isolation_forest", "local_outlier_factor"}
    with pytest.raises(FeatureSetMismatch):
        registry.promote({"local_outlier_factor": old["local_outlier_factor"]})
    assert registry.current() == new


def test_a_manifest_without_a_feature_set_version_is_the_look_ahead_features_version_1(tmp_path, instance):
    registry = Registry(tmp_path / "models")
    _load(tmp_path / "w.duckdb", 0.03, seed=1)
    assert _train(tmp_path, instance).success
    version = registry.current()["local_outlier_factor"]
    path = tmp_path / "models" / version / "manifest.json"
    legacy = json.loads(path.read_text())
    del legacy["features_table"], legacy["feature_set_version"]
    path.write_text(json.dumps(legacy))
    with pytest.raises(RegistryError, match="trained on feature-set version 1, but"):
        registry.load(version)
    # a legacy transactions model (its features are not features_events columns) is not versioned
    legacy["features"] = ["amount_log", "merchant_rarity", *legacy["features"]]
    path.write_text(json.dumps(legacy))
    assert registry.load(version).version == version


def _reranker():
    from bankanom_pipeline.reranking import core

    rng = np.random.default_rng(0)
    ids = [f"tx-{i}" for i in range(300)]
    X = rng.normal(size=(300, 2))
    y = (X[:, 0] > 0.7).astype(np.int8)
    unsupervised = rng.random(300)
    trained = core.train_and_gate(ids, X, unsupervised, y, ["a", "b"], "transaction", ["top"] * 300)
    return trained, X, unsupervised


def test_a_reranker_has_its_own_versions_gate_and_labels_beside_the_detectors(tmp_path):
    from bankanom_pipeline.detection.registry import promoted_gain

    root = tmp_path / "models"
    registry = Registry(root / "transactions")
    trained, X, unsupervised = _reranker()
    assert promoted_gain(root, "transaction_reranker") is None
    saved = registry.save_reranker(
        trained.reranker,
        name="transaction_reranker",
        gate=trained.gate.to_dict(),
        labels=trained.labels,
        window=("2026-02-01", "2026-02-01"),
        features_table="features_transactions",
    )
    assert saved.version.startswith("transaction_reranker-")
    assert saved.manifest["gate"]["promoted"] is True and saved.manifest["labels"]["total"] == 300
    assert saved.manifest["features"] == ["a", "b"]
    registry.promote({"transaction_reranker": saved.version})
    loaded = registry.current_reranker("transaction_reranker")
    assert loaded.version == saved.version and loaded.names == ["a", "b"]
    assert np.array_equal(loaded.predict(X, unsupervised), trained.reranker.predict(X, unsupervised))
    gain = promoted_gain(root, "transaction_reranker")
    assert gain["version"] == saved.version
    assert gain["gate"]["gain"] == pytest.approx(trained.gate.gain)
    assert gain["labels"]["by_selection"] == {"top": 300}
    with pytest.raises(RegistryError, match="not a re-ranker"):
        promoted_gain(root, "isolation_forest")
    # a re-ranker in current.json is not a detector: the detectors load without it
    assert registry.current_reranker("incident_reranker") is None

    tampered = saved.path / "model.skops"
    tampered.write_bytes(tampered.read_bytes() + b"x")
    with pytest.raises(RegistryError, match="checksum mismatch"):
        registry.load_reranker(saved.version)


def test_load_current_leaves_the_reranker_out(tmp_path, instance):
    _load(tmp_path / "w.duckdb", 0.03, seed=1)
    assert _train(tmp_path, instance).success
    registry = Registry(tmp_path / "models")
    trained, _, _ = _reranker()
    saved = registry.save_reranker(
        trained.reranker,
        name="incident_reranker",
        gate=trained.gate.to_dict(),
        labels=trained.labels,
        window=("2026-01-05", "2026-01-05"),
        features_table="incident_features",
    )
    registry.promote({"incident_reranker": saved.version})
    assert set(registry.load_current()) == {"isolation_forest", "local_outlier_factor"}
    with pytest.raises(RegistryError, match="not a re-ranker"):
        registry.load_reranker(registry.current()["isolation_forest"])
    with pytest.raises(RegistryError, match="not a re-ranker"):
        registry.save_reranker(
            trained.reranker, name="ranker", gate={}, labels={}, window=("a", "b"), features_table="t"
        )
