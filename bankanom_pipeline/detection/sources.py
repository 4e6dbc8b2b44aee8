"""The two sources bankanom detects anomalies in, and what differs between them.

Logs and bank transactions share one mechanism (feature space, Isolation Forest and LOF training,
registry, promotion gate, scoring); a ``Source`` names the tables, settings and registry folder that
mechanism works on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from bankanom_pipeline.detection.config import DEFAULT_PATH, DetectionConfig, load_detection_config
from bankanom_pipeline.detection.registry import Registry

PACKAGE = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Source:
    name: str
    features_table: str  # one row per scored item, a feature column per detection feature
    key: str  # the item's id
    order_key: str  # a stable column to order rows by before seeded sampling
    labels_table: str  # ground truth (evaluation only)
    label_column: str  # its boolean column
    config_path: Path  # the DetectionConfig YAML
    registry_folder: str  # under the models root ("" = the root itself)
    asset_prefix: str  # of the training assets: f"{prefix}isolation_forest_model"
    training_group: str

    @cached_property
    def config(self) -> DetectionConfig:
        return load_detection_config(self.config_path)

    def registry(self, models_root: str | Path) -> Registry:
        return Registry(Path(models_root) / self.registry_folder if self.registry_folder else models_root)

    def model_asset(self, model: str) -> str:
        return f"{self.asset_prefix}{model}_model"


LOGS = Source(
    name="logs",
    features_table="features_events",
    key="event_id",
    order_key="event_key",
    labels_table="log_labels",
    label_column="is_anomaly",
    config_path=DEFAULT_PATH,
    registry_folder="",
    asset_prefix="",
    training_group="training",
)
TRANSACTIONS = Source(
    name="transactions",
    features_table="features_transactions",
    key="transaction_id",
    order_key="transaction_key",
    labels_table="transaction_labels",
    label_column="is_fraud",
    config_path=PACKAGE / "transactions" / "detection.yaml",
    registry_folder="transactions",
    asset_prefix="transaction_",
    training_group="transaction_training",
)
