"""Bank-transaction records and their scoring, compatible with the predecessor transaction detector.

The routes (``routes/transactions.py``: ``GET /transactions``, ``GET /transactions/{account_id}``,
``POST /models/{model_name}/predict`` and ``POST /models/predict``) take and return the predecessor's
bodies: records with the CSV's fields (``IPAddress`` spelled without the space), plus scores. A posted
transaction is scored with its account's history from the published snapshot (every earlier transaction
of the account), through the pipeline's own feature SQL
(``dbt_like_sql/transactions/features_transactions.sql``) and scoring code, so the API's score for a
transaction equals the pipeline's (tests compare them).
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Annotated, Any

import polars as pl
from fastapi import HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from bankanom_api.request_types import MEANS, REGEX_ENGINE, WHOLE, FiniteNumber, transaction_field
from bankanom_api.responses import repeated
from bankanom_api.state import Models, Snapshot
from bankanom_pipeline.detection.registry import Registry
from bankanom_pipeline.detection.scoring import IF, LOF, score
from bankanom_pipeline.detection.sources import TRANSACTIONS
from bankanom_pipeline.reranking.core import Reranker
from bankanom_pipeline.sqlmodels.inmemory import FeatureBuilder
from bankanom_pipeline.transactions import reranking
from bankanom_pipeline.transactions.scoring import top_features
from bankanom_pipeline.validation.declared import PATTERNS

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
DISPLAY_NAMES = {IF: "Isolation Forest", LOF: "Local Outlier Factor"}

EXAMPLE_TRANSACTION = {
    "TransactionID": "TX000001",
    "AccountID": "AC00128",
    "TransactionAmount": 14.09,
    "TransactionDate": "2023-04-11 16:29:14",
    "TransactionType": "Debit",
    "Location": "San Diego",
    "DeviceID": "D000380",
    "IPAddress": "162.198.218.92",
    "MerchantID": "M015",
    "Channel": "ATM",
    "CustomerAge": 70,
    "CustomerOccupation": "Doctor",
    "TransactionDuration": 81,
    "LoginAttempts": 1,
    "AccountBalance": 5112.21,
    "PreviousTransactionDate": "2024-11-04 08:08:08",
}


def _parse_time(value: str) -> dt.datetime:
    """A time the model accepted (``DateTime``'s pattern guarantees a real one)."""
    try:
        return dt.datetime.strptime(value, DATE_FORMAT)
    except ValueError:
        return dt.datetime.fromisoformat(value)


# the pipeline's reading of a transaction time (a real date and time, no zone), as a pattern the schema shows
DateTime = Annotated[
    StrictStr,
    Field(
        pattern=PATTERNS["date_time_pattern"],
        description="YYYY-MM-DD HH:MM:SS (a T for the space, and a fraction of a second, accepted)",
    ),
    *MEANS,
]
# the previous transaction's time, or blank: the pipeline trims a cell's spaces, so spaces alone are an empty
# cell, no previous transaction (the model turns a blank into null)
PreviousDateTime = Annotated[
    StrictStr,
    Field(
        pattern=PATTERNS["previous_date_time_pattern"],
        description="as TransactionDate, or blank (spaces only): no previous transaction",
    ),
    *MEANS,
]


class Transaction(BaseModel):
    """One transaction in the CSV layout (the predecessor's request body). Each field's limits are
    transaction_rules.yaml's, the pipeline's validation (``request_types``): what it quarantines, 422s."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        regex_engine=REGEX_ENGINE,
        json_schema_extra={"examples": [EXAMPLE_TRANSACTION]},
    )

    TransactionID: transaction_field(StrictStr, "transaction_id")
    AccountID: transaction_field(StrictStr, "account_id")
    TransactionAmount: transaction_field(FiniteNumber, "amount")
    TransactionDate: DateTime
    TransactionType: transaction_field(StrictStr, "transaction_type")
    Location: transaction_field(StrictStr, "location")
    DeviceID: transaction_field(StrictStr, "device_id")
    IPAddress: transaction_field(StrictStr, "ip_address")
    MerchantID: transaction_field(StrictStr, "merchant_id")
    Channel: transaction_field(StrictStr, "channel")
    CustomerAge: transaction_field(StrictInt, "customer_age_n", WHOLE)
    CustomerOccupation: transaction_field(StrictStr, "customer_occupation")
    TransactionDuration: transaction_field(StrictInt, "duration_s", WHOLE)
    LoginAttempts: transaction_field(StrictInt, "login_attempts_n", WHOLE)
    AccountBalance: transaction_field(FiniteNumber, "balance")
    PreviousTransactionDate: PreviousDateTime | None = None  # absent, null or blank: none (an empty cell)

    @field_validator("PreviousTransactionDate")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value if value and value.strip(" ") else None

    @classmethod
    def from_text(cls, values: dict[str, str | None]) -> Transaction:
        """A record from text fields (the console's form, a CSV row): the numeric fields read as numbers
        as the pipeline reads the CSV's text; text that is no number stays text, and is refused as such."""
        return cls.model_validate({k: _number(v) if k in _NUMERIC else v for k, v in values.items()})


_NUMERIC = ("TransactionAmount", "CustomerAge", "TransactionDuration", "LoginAttempts", "AccountBalance")


def _number(text: str | None) -> float | str | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return text


class FeatureDeviation(BaseModel):
    feature: str
    deviation: float | None = Field(
        description="robust z from the training normal; null when beyond the largest number"
    )


class PublishedTransaction(Transaction):
    """A published transaction (``GET /transactions``): the CSV's fields as delivered, its scores (null
    until it is scored) and its delivery day."""

    if_score: float | None
    lof_score: float | None
    ensemble_score: float | None
    if_pred: bool | None
    lof_pred: bool | None
    isFraud: bool | None = Field(description="the ensemble decision")
    partition_date: dt.date = Field(description="the delivery day")


class ScoredTransaction(Transaction):
    """A posted transaction as sent, with its scores and the features furthest from normal."""

    if_score: float
    lof_score: float
    top_features: list[FeatureDeviation]
    isFraud: bool = Field(description="the ensemble decision (/models/predict) or the model's flag")
    ensemble_score: float | None = Field(None, description="/models/predict only")
    if_pred: bool | None = Field(None, description="/models/predict only")
    lof_pred: bool | None = Field(None, description="/models/predict only")
    ecod_score: float | None = Field(
        None, description="ECOD's score (0..1), when the promoted transaction models include ECOD"
    )
    rerank_score: float | None = Field(
        None,
        description=(
            "the promoted transaction re-ranker's probability that an analyst confirms the transaction "
            "(learnt from analysts' labels; with one promoted, /models/predict's isFraud is rerank_score "
            ">= 0.5); null while none is promoted"
        ),
    )


# the snapshot's transactions table, as the CSV's fields (the predecessor's response records)
RECORD_COLUMNS = """transaction_id AS "TransactionID", account_id AS "AccountID", amount AS "TransactionAmount",
    strftime(ts, '%Y-%m-%d %H:%M:%S') AS "TransactionDate", transaction_type AS "TransactionType",
    location AS "Location", device_id AS "DeviceID", ip_address AS "IPAddress", merchant_id AS "MerchantID",
    channel AS "Channel", customer_age AS "CustomerAge", customer_occupation AS "CustomerOccupation",
    duration_s AS "TransactionDuration", login_attempts AS "LoginAttempts", balance AS "AccountBalance",
    strftime(previous_ts, '%Y-%m-%d %H:%M:%S') AS "PreviousTransactionDate",
    if_score, lof_score, ensemble_score, if_flag AS if_pred, lof_flag AS lof_pred, is_anomaly AS "isFraud",
    partition_date"""
# validated_transactions' columns the feature SQL reads, with their warehouse types
SOURCE_SCHEMA = {
    "partition_date": pl.Date,
    "transaction_id": pl.String,
    "account_id": pl.String,
    "amount": pl.Float64,
    "ts": pl.Datetime("us"),
    "transaction_type": pl.String,
    "location": pl.String,
    "device_id": pl.String,
    "ip_address": pl.String,
    "merchant_id": pl.String,
    "channel": pl.String,
    "customer_age": pl.Int32,
    "customer_occupation": pl.String,
    "duration_s": pl.Int32,
    "login_attempts": pl.Int32,
    "balance": pl.Float64,
    "previous_ts": pl.Datetime("us"),
}


class TransactionScorer:
    """Posted transactions -> features (with their accounts' history) -> the promoted models' scores."""

    def __init__(self):
        self.config = TRANSACTIONS.config
        self._reranker: Reranker | None = None  # the last promoted re-ranker loaded, by version
        self._reranker_lock = threading.Lock()
        self.builder = FeatureBuilder(
            target=TRANSACTIONS.features_table,
            source="validated_transactions",
            schema=SOURCE_SCHEMA,
            order="ts, transaction_id",
        )

    def features(self, posted: list[Transaction], snap: Snapshot | None) -> pl.DataFrame:
        """``features_transactions`` rows of the posted transactions, in the order posted."""
        history = self._history(posted, snap)
        day = max([dt.datetime.now(dt.UTC).date(), *history["partition_date"].to_list()])
        rows = pl.DataFrame(
            {
                "partition_date": [day] * len(posted),
                "transaction_id": [t.TransactionID for t in posted],
                "account_id": [t.AccountID for t in posted],
                "amount": [t.TransactionAmount for t in posted],
                "ts": [_parse_time(t.TransactionDate) for t in posted],
                "transaction_type": [t.TransactionType for t in posted],
                "location": [t.Location for t in posted],
                "device_id": [t.DeviceID for t in posted],
                "ip_address": [t.IPAddress for t in posted],
                "merchant_id": [t.MerchantID for t in posted],
                "channel": [t.Channel for t in posted],
                "customer_age": [t.CustomerAge for t in posted],
                "customer_occupation": [t.CustomerOccupation for t in posted],
                "duration_s": [t.TransactionDuration for t in posted],
                "login_attempts": [t.LoginAttempts for t in posted],
                "balance": [t.AccountBalance for t in posted],
                "previous_ts": [
                    _parse_time(t.PreviousTransactionDate) if t.PreviousTransactionDate else None
                    for t in posted
                ],
            },
            schema=SOURCE_SCHEMA,
        )
        built = self.builder.build(pl.concat([history.cast(SOURCE_SCHEMA), rows]), day)
        ids = pl.DataFrame({"transaction_id": rows["transaction_id"]})
        return ids.join(built, on="transaction_id", how="left", maintain_order="left")

    def _history(self, posted: list[Transaction], snap: Snapshot | None) -> pl.DataFrame:
        """The accounts' published transactions, minus the posted ones (a re-posted transaction is
        scored against what came before it, as the pipeline scored it)."""
        empty = pl.DataFrame(schema=SOURCE_SCHEMA)
        if snap is None or not snap.has("transactions"):
            return empty
        accounts = sorted({t.AccountID for t in posted})
        names, rows = snap.query(
            f"SELECT {', '.join(SOURCE_SCHEMA)} FROM transactions "
            "WHERE account_id IN (SELECT unnest(?::VARCHAR[])) AND transaction_id NOT IN (SELECT unnest(?::VARCHAR[]))",
            [accounts, [t.TransactionID for t in posted]],
        )
        if not rows:
            return empty
        return pl.DataFrame(rows, schema=names, orient="row")

    def reranker(self, models_dir: Path) -> Reranker | None:
        """The promoted transaction re-ranker of the registry at ``models_dir``, loaded again only when
        the promoted version changes; None while none is promoted."""
        registry = Registry(models_dir)
        version = registry.current().get(reranking.NAME)
        if version is None:
            return None
        with self._reranker_lock:
            if self._reranker is None or self._reranker.version != version:
                self._reranker = registry.load_reranker(version)
            return self._reranker

    def predict(
        self,
        posted: list[Transaction],
        models: Models,
        snap: Snapshot | None,
        model: str | None,
        reranker: Reranker | None = None,
    ) -> list[dict]:
        if not posted:
            return []
        dupes = repeated(t.TransactionID for t in posted)
        if dupes:
            message = f"TransactionID must be unique within a request; repeated: {dupes[:5]}"
            raise HTTPException(status.HTTP_409_CONFLICT, message)
        features = self.features(posted, snap)
        result = score(features, models.detectors, self.config)
        top = top_features(features, models.detectors).to_list()
        rerank = None
        if reranker is not None:
            # the pipeline's inputs: the features and the ensemble score, rounded alike (reranking.inputs)
            frame = features.with_columns(ensemble_score=pl.Series(result.ensemble, dtype=pl.Float64))
            rerank = reranker.predict(*reranking.inputs(frame, reranker.names))
        out = []
        for i, t in enumerate(posted):
            record: dict[str, Any] = t.model_dump(by_alias=True)
            record.update(
                if_score=float(result.isolation_forest[i]),
                lof_score=float(result.local_outlier_factor[i]),
                top_features=top[i],
                rerank_score=None if rerank is None else float(rerank[i]),
            )
            if result.ecod is not None:
                record["ecod_score"] = float(result.ecod[i])
            if model == IF:
                record["isFraud"] = bool(result.if_flag[i])
            elif model == LOF:
                record["isFraud"] = bool(result.lof_flag[i])
            else:
                record.update(
                    ensemble_score=float(result.ensemble[i]),
                    if_pred=bool(result.if_flag[i]),
                    lof_pred=bool(result.lof_flag[i]),
                    # the pipeline's decision: the re-ranker's when one is promoted
                    isFraud=bool(result.is_anomaly[i] if rerank is None else rerank[i] >= reranking.CUT),
                )
            out.append(record)
        return out
