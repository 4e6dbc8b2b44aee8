"""What loading the code location costs, and the registry's one-pass, once-per-process model loading.

Every Dagster process imports ``bankanom_pipeline.definitions`` (CLI runs, run workers, the daemon,
webservers, code servers, Celery workers); most never train, score or evaluate. The libraries only those
steps need are imported where they are used, and this fails if one creeps back into the import."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from bankanom_pipeline.detection import registry
from bankanom_pipeline.detection.models import Detector
from bankanom_pipeline.detection.registry import Registry, RegistryError
from bankanom_pipeline.detection.space import FeatureSpace
from tests.imports import imported_by

# imported by the steps that need them, never by loading the code location
LAZY = ("numba", "sklearn", "scipy", "pandas", "great_expectations", "skops", "matplotlib", "redis", "httpx")


def test_loading_the_code_location_leaves_the_heavy_libraries_unimported():
    assert imported_by("import bankanom_pipeline.definitions", LAZY) == []


def _detector(seed: int = 0) -> tuple[Detector, np.ndarray]:
    rows = np.random.default_rng(seed).normal(size=(400, 3))
    space = FeatureSpace(["a", "b", "c"], ["none"] * 3, [0.0] * 3, [1.0] * 3, None)
    forest = IsolationForest(n_estimators=20, random_state=seed).fit(rows)
    return Detector("isolation_forest", forest, space, [-0.6, -0.5, -0.4]), rows


def _save(reg: Registry, detector: Detector) -> str:
    return reg.save(detector, params={}, window=("2026-01-01", "2026-01-01"), rows=400, metrics={}).version


def test_a_load_is_verified_and_each_caller_gets_its_own_estimator(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_LOADED", collections.OrderedDict())
    detector, rows = _detector()
    reg = Registry(tmp_path)
    version = _save(reg, detector)

    first, second = reg.load(version), reg.load(version)
    assert len(registry._LOADED) == 1  # deserialised once
    assert first.estimator is not second.estimator
    expected = detector.estimator.score_samples(rows)
    first.estimator.set_params(n_jobs=1)  # as the API does to its copy
    assert second.estimator.n_jobs is None
    for loaded in (first, second):
        assert np.array_equal(loaded.estimator.score_samples(rows), expected)

    # the cache is keyed by content: an artifact changed on disk is still refused before deserialising
    artifact = tmp_path / version / "model.skops"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with pytest.raises(RegistryError, match="checksum mismatch"):
        reg.load(version)


def test_an_artifact_holding_an_unexpected_type_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_LOADED", collections.OrderedDict())
    detector, _ = _detector(1)
    detector.estimator.extra_ = collections.Counter(a=1)  # a type neither skops nor we trust
    reg = Registry(tmp_path)
    version = _save(reg, detector)
    with pytest.raises(RegistryError, match=r"unexpected types \['collections.Counter'\]"):
        reg.load(version)
    assert not registry._LOADED
