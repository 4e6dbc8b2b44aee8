"""The feature-set version: which definition of the log features (docs/features.md) a feature table, an
engine or a model was built with.

``FEATURE_SET_VERSION`` is a short sha256 digest of the SQL that defines the features (``stg_logs`` and the
models under ``dbt_like_sql/features/``) and of the geo seed they read, computed from the files when this
module is imported, so it changes whenever they do and cannot be forgotten. Whole-line ``--`` comments and
blank lines are left out: editing an explanation changes no feature, and must not force a retrain.

Models record the version they were trained on (``detection/registry.py``); a model of another version is
refused with both versions named. Models saved before versions were recorded carry none and count as
``LEGACY_FEATURE_SET_VERSION``: the look-ahead features, which no current table holds.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

# the table the versioned features fill; models trained on other tables (transactions) are not versioned
FEATURES_TABLE = "features_events"
LEGACY_FEATURE_SET_VERSION = "1"
# relative to dbt_like_sql/: the files whose content defines the features
_DEFINING = ("staging/stg_logs.sql", "features/*.sql", "seeds/geo_regions.csv")


def _meaningful(path: str, text: str) -> str:
    if not path.endswith(".sql"):
        return text
    lines = (line.rstrip() for line in text.splitlines())
    return "\n".join(line for line in lines if line and not line.lstrip().startswith("--"))


def feature_set_digest(root=None) -> str:
    """The digest of the defining files under ``root`` (the package's ``dbt_like_sql/`` by default): 12 hex
    digits of sha256 over each file's path and meaningful text, in path order."""
    from pathlib import Path

    root = Path(str(root if root is not None else files("bankanom_pipeline") / "dbt_like_sql"))
    paths = sorted({p for pattern in _DEFINING for p in root.glob(pattern)})
    if not paths:
        raise FileNotFoundError(f"no feature SQL under {root}: cannot compute the feature-set version")
    digest = hashlib.sha256()
    for path in paths:
        relative = path.relative_to(root).as_posix()
        digest.update(relative.encode() + b"\0")
        digest.update(_meaningful(relative, path.read_text(encoding="utf-8")).encode() + b"\0")
    return digest.hexdigest()[:12]


FEATURE_SET_VERSION = feature_set_digest()


def current_version(features_table: str) -> str | None:
    """The feature-set version a model trained on ``features_table`` must have; None: not versioned."""
    return FEATURE_SET_VERSION if features_table == FEATURES_TABLE else None
