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
class Baseline:
    """The naive yardstick the real models must beat: a default Isolation Forest on raw numbers as sent
    (no context windows, no scaling), scoring a day's items."""

    table: str  # holds ``columns`` per item of a day, keyed by the source's ``key`` or ``order_key``
    key: str  # the item's key in ``table``: rows are matched to the scored items by it
    columns: tuple[str, ...]
    # trained on the promoted models' training window (its first rows by key), or else on a seeded
    # sample of the evaluated day itself
    trained_on_window: bool


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
    scored_table: str  # one row per scored item of a day, with its scores
    scored_columns: tuple[str, ...]  # the feature table's columns kept beside the scores
    # an order to score in, sorted in memory (a LOF score's last bit depends on its batch); empty: as read
    scored_order: tuple[str, ...]
    explain_flagged: bool  # store the top deviating features of each anomalous item with its scores
    baseline: Baseline

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
    scored_table="scored_events",
    scored_columns=(
        "partition_date",
        "event_id",
        "event_key",
        "ts",
        "source_service",
        "user_id",
        "ip_address",
        "correlation_id",
        "template",
    ),
    scored_order=(),
    explain_flagged=False,  # incidents explain their peak events instead
    baseline=Baseline(
        table="features_events",
        key="event_key",
        # the per-event metrics as logged
        columns=(
            "level_num",
            "response_time_ms",
            "requests_per_second",
            "error_rate",
            "timeout_rate",
            "success_rate",
            "failed_attempts",
            "unique_ips",
            "unique_users",
            "attempts_per_minute",
            "amount",
            "risk_score",
            "query_time_ms",
            "connection_pool_use",
            "replication_lag_s",
            "cache_hit_rate",
            "cpu_percent",
            "records_accessed",
            "bytes_out",
            "concurrent_sessions",
            "vpn_connections",
            "files_modified",
            "consumer_lag",
        ),
        trained_on_window=True,
    ),
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
    scored_table="scored_transactions",
    scored_columns=(
        "partition_date",
        "transaction_id",
        "account_id",
        "ts",
        "amount",
        "transaction_type",
        "channel",
        "location",
        "device_id",
        "ip_address",
        "merchant_id",
    ),
    scored_order=("ts", "transaction_id"),  # unique within a day
    explain_flagged=True,
    # the predecessor's approach: the CSV's raw numbers
    baseline=Baseline(
        table="validated_transactions",
        key="transaction_id",
        columns=("amount", "duration_s", "login_attempts", "balance", "customer_age"),
        trained_on_window=False,
    ),
)
