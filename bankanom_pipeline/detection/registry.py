"""The model registry: versioned artifacts on disk, a table in DuckDB, and an atomic "current" pointer.

Layout under the models root (``data/models`` by default)::

    <version>/model.skops      the fitted estimator (skops: no arbitrary code runs on load)
    <version>/manifest.json    name, parameters, feature space, calibration, window, rows, metrics, sha256,
                               the feature table and feature-set version it was trained on
    current.json               {model name: promoted version}, replaced atomically (write + rename)

The API and the pipeline read ``current.json`` and the version folders, never the live warehouse, so a
promotion is visible to both the moment the rename lands. An artifact whose sha256 does not match its
manifest is refused before it is deserialised, and a model trained on another definition of its features
(``online/version.py``) is refused before it is loaded or promoted: its scores would mean nothing.

scikit-learn is imported by the first load, not by this module: every process loading the code location
imports the registry, and most never touch a model.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from bankanom_pipeline.detection.models import Detector
from bankanom_pipeline.detection.space import FeatureSpace
from bankanom_pipeline.files import write_atomic
from bankanom_pipeline.online.version import FEATURES_TABLE, LEGACY_FEATURE_SET_VERSION, current_version
from bankanom_pipeline.warehouse.frames import rewriting, table_exists

if TYPE_CHECKING:
    from bankanom_pipeline.reranking.core import Reranker

ARTIFACT = "model.skops"
MANIFEST = "manifest.json"
CURRENT = "current.json"
# the only types a bankanom artifact may contain beyond skops' defaults
TRUSTED_TYPES = [
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "bankanom_pipeline.detection.ecod.FrozenEcod",  # numpy arrays and ints only (ecod.py)
    # a re-ranker's trees (HistGradientBoostingClassifier): numpy arrays of nodes and bin thresholds
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]
# the re-rankers that learn from analysts' labels (reranking/core.py), each kept in its source's
# registry folder beside that source's detectors, with its own versions
RERANKERS = {"transaction_reranker": "transactions", "incident_reranker": ""}


class RegistryError(Exception):
    """A version that is missing, tampered with or otherwise unusable."""


class FeatureSetMismatch(RegistryError):
    """A version trained on another feature-set version than the current one."""


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    path: Path
    manifest: dict


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# estimators deserialised in this process, by their artifact's sha256: a pipeline run loads the promoted
# pair in several assets, and each skops load audits and rebuilds every tree (~0.3 CPU-s a model). Callers
# get a deep copy (~0.01 CPU-s), so none sees another's changes (the API sets n_jobs on its copy).
_LOADED: OrderedDict[str, object] = OrderedDict()
_LOADED_MAX = 7  # the promoted pair of logs, the transactions' three, and a re-ranker of each


def _skops():
    """skops.io, imported on first use: its import walks every scikit-learn module (~2-4 CPU-s), which
    every process loading the code location (CLI, daemon, webserver, code server, Celery worker) would
    otherwise pay whether or not it touches a model."""
    import skops.io

    return skops.io


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- writing -----------------------------------------------------------------------------------
    def save(
        self,
        detector: Detector,
        *,
        params: dict,
        window: tuple[str, str],
        rows: int,
        metrics: dict,
        features_table: str = FEATURES_TABLE,
    ) -> Version:
        """Write a new version (never overwrites one), trained on ``features_table`` at its current
        feature-set version; returns it. Not promoted."""
        created = dt.datetime.now(dt.UTC)
        version = f"{detector.name}-{created:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        folder = self.root / version
        folder.mkdir(parents=True, exist_ok=False)
        artifact = folder / ARTIFACT
        write_atomic(artifact, _skops().dumps(detector.estimator))
        manifest = {
            "name": detector.name,
            "version": version,
            "created_at": created.isoformat(),
            "estimator": type(detector.estimator).__name__,
            "params": params,
            "features": detector.space.names,
            "space": detector.space.to_dict(),
            "knots": detector.knots,
            "training_window": {"start": window[0], "end": window[1]},
            "training_rows": rows,
            "metrics": metrics,
            "features_table": features_table,
            "feature_set_version": current_version(features_table),
            "artifact": ARTIFACT,
            "sha256": _sha256(artifact),
        }
        write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2).encode())
        return Version(detector.name, version, folder, manifest)

    def save_reranker(
        self,
        reranker: Reranker,
        *,
        name: str,
        gate: dict,
        labels: dict,
        window: tuple[str, str],
        features_table: str,
    ) -> Version:
        """Write a new re-ranker version (not promoted): the fitted classifier, the features it reads,
        its gate's figures on the held-out labels (``gate``) and what it was trained on (``labels``:
        counts per class and per selection reason)."""
        if name not in RERANKERS:
            raise RegistryError(f"{name!r} is not a re-ranker: one of {sorted(RERANKERS)}")
        created = dt.datetime.now(dt.UTC)
        version = f"{name}-{created:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        folder = self.root / version
        folder.mkdir(parents=True, exist_ok=False)
        artifact = folder / ARTIFACT
        write_atomic(artifact, _skops().dumps(reranker.estimator))
        manifest = {
            "name": name,
            "version": version,
            "created_at": created.isoformat(),
            "estimator": type(reranker.estimator).__name__,
            "params": reranker.estimator.get_params(),
            "features": list(reranker.names),
            "kind": reranker.kind,
            "floor": reranker.floor,
            "training_window": {"start": window[0], "end": window[1]},
            "training_rows": int(labels.get("train", labels.get("total", 0))),
            "metrics": {"gain": gate.get("gain"), "ap_reranked": gate.get("ap_reranked")},
            "gate": gate,
            "labels": labels,
            "features_table": features_table,
            "feature_set_version": current_version(features_table),
            "artifact": ARTIFACT,
            "sha256": _sha256(artifact),
        }
        write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2, default=_json_number).encode())
        return Version(name, version, folder, manifest)

    def promote(self, versions: dict[str, str]) -> dict[str, str]:
        """Point ``current`` at these versions (others unchanged) in one atomic replace; returns it."""
        for name, version in versions.items():
            manifest = self.manifest(version)
            if manifest["name"] != name:
                raise RegistryError(f"{version} is a {manifest['name']} model, not {name}")
            check_feature_set(manifest)
        current = {**self.current(), **versions}
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / CURRENT, json.dumps(current, indent=2, sort_keys=True).encode())
        return current

    # -- reading -----------------------------------------------------------------------------------
    def current(self) -> dict[str, str]:
        path = self.root / CURRENT
        return json.loads(path.read_text()) if path.exists() else {}

    def manifest(self, version: str) -> dict:
        path = self.root / version / MANIFEST
        if "/" in version or not path.exists():
            raise RegistryError(f"unknown model version {version!r}")
        return json.loads(path.read_text())

    def versions(self) -> list[dict]:
        """Every version's manifest, oldest first."""
        manifests = [json.loads(p.read_text()) for p in self.root.glob(f"*/{MANIFEST}")]
        return sorted(manifests, key=lambda m: m["created_at"])

    def _verified_estimator(self, version: str, manifest: dict):
        """A version's estimator (a private copy), after its feature-set version and its artifact's
        checksum verify: detectors and re-rankers alike."""
        check_feature_set(manifest)
        artifact = self.root / version / manifest["artifact"]
        if not artifact.exists():
            raise RegistryError(f"{version}: artifact {artifact.name} is missing")
        data = artifact.read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
            raise RegistryError(f"{version}: artifact checksum mismatch, refusing to load it")
        return copy.deepcopy(_deserialise(version, data, manifest["sha256"]))

    def load(self, version: str) -> Detector:
        """The detector of a version, after its feature-set version and its artifact's checksum verify."""
        manifest = self.manifest(version)
        estimator = self._verified_estimator(version, manifest)
        space = FeatureSpace.from_dict(manifest["space"])
        return Detector(manifest["name"], estimator, space, manifest["knots"], version=version)

    def load_current(self) -> dict[str, Detector]:
        """The promoted detectors (re-rankers are loaded by ``load_reranker``); RegistryError when
        something is not promoted yet."""
        current = self.current()
        missing = [n for n in ("isolation_forest", "local_outlier_factor") if n not in current]
        if missing:
            raise RegistryError(f"no promoted model yet for {', '.join(missing)}: run train_job first")
        return {name: self.load(version) for name, version in current.items() if name not in RERANKERS}

    def load_reranker(self, version: str) -> Reranker:
        """The re-ranker of a version, after its feature-set version and its artifact's checksum verify."""
        from bankanom_pipeline.reranking.core import Reranker

        manifest = self.manifest(version)
        if manifest["name"] not in RERANKERS:
            raise RegistryError(f"{version} is a {manifest['name']} model, not a re-ranker")
        estimator = self._verified_estimator(version, manifest)
        return Reranker(
            estimator,
            list(manifest["features"]),
            manifest["kind"],
            version=version,
            floor=manifest.get("floor"),
        )

    def current_reranker(self, name: str) -> Reranker | None:
        """The promoted re-ranker called ``name``, or None while none is promoted."""
        version = self.current().get(name)
        return None if version is None else self.load_reranker(version)


def promoted_gain(models_root: str | Path, name: str) -> dict | None:
    """The promoted version of re-ranker ``name``: ``{"version", "gate", "labels", "created_at"}``, the
    gate's figures on its held-out labels and the labels it learnt from; None while none is promoted."""
    if name not in RERANKERS:
        raise RegistryError(f"{name!r} is not a re-ranker: one of {sorted(RERANKERS)}")
    folder = RERANKERS[name]
    registry = Registry(Path(models_root) / folder if folder else models_root)
    version = registry.current().get(name)
    if version is None:
        return None
    manifest = registry.manifest(version)
    return {k: manifest[k] for k in ("version", "created_at", "gate", "labels")}


def _json_number(value: object) -> object:
    """numpy scalars in a manifest's figures, as plain numbers"""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def feature_set_of(manifest: dict) -> tuple[str | None, str | None]:
    """(the version a model trained on the manifest's feature table must have now, the version it was
    trained on); (None, ...) for a table whose features are not versioned. A manifest written before
    versions were recorded names no table: it is a log model (every one of its features a column of
    features_events then, ``service_events_vs_median`` included) at LEGACY_FEATURE_SET_VERSION."""
    table = manifest.get("features_table")
    if table is None:
        log_columns = _legacy_log_columns()
        table = FEATURES_TABLE if set(manifest.get("features", [])) <= log_columns else "unknown"
    return current_version(table), manifest.get("feature_set_version", LEGACY_FEATURE_SET_VERSION)


def check_feature_set(manifest: dict) -> None:
    """Refuse a version trained on another feature-set version than its feature table's current one."""
    expected, trained = feature_set_of(manifest)
    if expected is not None and trained != expected:
        raise FeatureSetMismatch(
            f"{manifest['version']} was trained on feature-set version {trained}, but the features are "
            f"now version {expected}: its scores would not mean what they did. Train and promote models "
            "on the current features (bankanom train, after features_job has rebuilt the training "
            "window; docs/features.md, 'Re-scoring history')"
        )


@functools.cache
def _legacy_log_columns() -> frozenset[str]:
    from bankanom_pipeline.detection.config import load_detection_config

    return frozenset(load_detection_config().feature_names) | {"service_events_vs_median"}


def _deserialise(version: str, data: bytes, sha256: str) -> object:
    """The estimator in a verified artifact, deserialised once per process; refused when it holds a type
    outside skops' defaults and TRUSTED_TYPES."""
    if sha256 in _LOADED:
        _LOADED.move_to_end(sha256)
        return _LOADED[sha256]
    sio = _skops()
    from skops.io.exceptions import UntrustedTypesFoundException

    try:
        # one pass: skops audits the file's types against its defaults plus ours before building anything
        estimator = sio.loads(data, trusted=TRUSTED_TYPES)
    except UntrustedTypesFoundException:
        unexpected = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
        raise RegistryError(
            f"{version}: artifact holds unexpected types {unexpected}, refusing to load it"
        ) from None
    _LOADED[sha256] = estimator
    if len(_LOADED) > _LOADED_MAX:
        _LOADED.popitem(last=False)
    return estimator


REGISTRY_DDL = """
CREATE TABLE IF NOT EXISTS model_registry (
    version          VARCHAR PRIMARY KEY,
    name             VARCHAR NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    path             VARCHAR NOT NULL,
    sha256           VARCHAR NOT NULL,
    params           JSON NOT NULL,
    features         JSON NOT NULL,
    window_start     DATE NOT NULL,
    window_end       DATE NOT NULL,
    training_rows    BIGINT NOT NULL,
    metrics          JSON NOT NULL,
    status           VARCHAR NOT NULL,   -- candidate | promoted | retired | rejected
    promoted_at      TIMESTAMPTZ,
    source           VARCHAR DEFAULT 'logs',  -- which source's registry the version belongs to
    feature_set_version VARCHAR             -- the features' version it was trained on (NULL: not versioned)
);
"""


def record(con: duckdb.DuckDBPyConnection, version: Version, source: str = "logs") -> None:
    """Add a saved version of ``source``'s registry to the registry table as a candidate."""
    m = version.manifest
    versioned, trained_on = feature_set_of(m)
    _ensure_table(con)
    with rewriting(con, "model_registry"):
        con.execute(
            "INSERT INTO model_registry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'candidate', NULL, ?, ?)",
            [
                m["version"],
                m["name"],
                m["created_at"],
                str(version.path),
                m["sha256"],
                json.dumps(m["params"]),
                json.dumps(m["features"]),
                m["training_window"]["start"],
                m["training_window"]["end"],
                m["training_rows"],
                json.dumps(m["metrics"]),
                source,
                trained_on if versioned is not None else None,
            ],
        )


def record_promotion(con: duckdb.DuckDBPyConnection, promoted: dict[str, str], source: str = "logs") -> None:
    """Mirror a promotion in the registry table: promoted versions on, the source's previous ones retired."""
    _ensure_table(con)
    with rewriting(con, "model_registry"):
        for name, version in promoted.items():
            con.execute(
                "UPDATE model_registry SET status = 'retired' "
                "WHERE name = ? AND source = ? AND status = 'promoted' AND version <> ?",
                [name, source, version],
            )
            con.execute(
                "UPDATE model_registry SET status = 'promoted', promoted_at = now() WHERE version = ?",
                [version],
            )


def record_rejection(con: duckdb.DuckDBPyConnection, version: str) -> None:
    _ensure_table(con)
    with rewriting(con, "model_registry"):
        con.execute("UPDATE model_registry SET status = 'rejected' WHERE version = ?", [version])


def _ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    # the first recorded version creates the table; its later changes are migrations (warehouse/migrations.py)
    if not table_exists(con, "model_registry"):
        con.execute(REGISTRY_DDL)
