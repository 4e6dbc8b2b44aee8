"""Request and response models: the API's contract, as OpenAPI documents it."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from bankanom_api.request_types import REGEX_ENGINE, FiniteJSON, FiniteNumber, Timestamp, log_field
from bankanom_pipeline import feedback
from bankanom_pipeline.metrics_catalogue import METRICS

ModelName = Literal["isolation_forest", "local_outlier_factor"]
Severity = Literal["Low", "Medium", "High", "Critical"]


def utc_naive(value: dt.datetime | None) -> dt.datetime | None:
    """The warehouse's time: naive UTC (a value without an offset is taken as UTC already)."""
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


EXAMPLE_EVENT = {
    "timestamp": "2026-11-24T00:00:00.234Z",
    "source_service": "auth-service",
    "log_level": "INFO",
    "event_id": "27c0412e-729c-4e1e-973a-7912d899f109",
    "correlation_id": "5d167935-7c3c-4fe0-8e77-cade78bb5edc",
    "user_id": "USR-00768",
    "ip_address": "51.113.80.35",
    "geo_location": "GB-MAN",
    "message": "User USR-00768 logged in successfully from 51.113.80.35",
    "metrics": {"response_time_ms": 67.3, "success_rate": 0.9581},
}


# The known metrics, each a finite number in its physically possible range (metric_in_range, with the
# catalogue's bounds) or null; other fields are kept and not read, as in the pipeline, but hold no
# non-finite number (metrics_finite, on every key: FiniteJSON). A TypedDict: the
# validated value is the plain object the feature SQL reads, as validated_logs keeps it (the fields
# sent, known ones as checked numbers), with no model built and dumped again per event.
def _metric_defaults(schema: dict) -> None:
    # each known metric may be left out or null: documented with the default null, as it always was
    for name, field in schema["properties"].items():
        schema["properties"][name] = {"anyOf": field.pop("anyOf"), "default": None, **field}
    # other keys: any JSON value (JSON has no non-finite number to exclude)
    schema["additionalProperties"] = True


Metrics = TypedDict(
    "Metrics",
    {
        m.name: NotRequired[
            Annotated[
                log_field(FiniteNumber, "value", lower=m.lower, upper=m.upper) | None,
                Field(description=m.description),
            ]
        ]
        for m in METRICS.values()
    },
    extra_items=FiniteJSON,
)
Metrics.__pydantic_config__ = ConfigDict(json_schema_extra=_metric_defaults)


class LogEvent(BaseModel):
    """One log event in the generator's JSON log format. Unknown fields are ignored; ``anomaly_details``
    (mock ground truth) is accepted so generator lines can be posted as they are, and never read.
    Each field's limits are log_rules.yaml's (``request_types``): what the pipeline quarantines, 422s."""

    model_config = ConfigDict(
        extra="ignore", regex_engine=REGEX_ENGINE, json_schema_extra={"examples": [EXAMPLE_EVENT]}
    )

    event_id: log_field(StrictStr, "event_id")
    timestamp: Timestamp = Field(description="ISO-8601; without an offset it is taken as UTC")
    source_service: log_field(StrictStr, "source_service")
    log_level: log_field(StrictStr, "log_level")
    message: log_field(StrictStr, "message")
    correlation_id: log_field(StrictStr, "correlation_id") | None = None
    user_id: log_field(StrictStr, "user_id") | None = None
    ip_address: log_field(StrictStr, "ip_address") | None = None
    geo_location: log_field(StrictStr, "geo_location") | None = None
    metrics: Metrics | None = Field(None, description="numbers by name; the known ones are checked")

    @field_validator("metrics")
    @classmethod
    def _none_as_empty(cls, value: dict[str, Any] | None) -> dict[str, Any]:
        return {} if value is None else value

    def utc_timestamp(self) -> dt.datetime:
        return utc_naive(self.timestamp)


class PredictRequest(BaseModel):
    events: list[LogEvent] = Field(
        min_length=1, description="one or more events; more than the documented limit is refused with 413"
    )
    model_config = ConfigDict(json_schema_extra={"examples": [{"events": [EXAMPLE_EVENT]}]})


class Contribution(BaseModel):
    feature: str
    value: float = Field(description="the feature's value for this event")
    normal: float = Field(description="the training window's median")
    deviation: float | None = Field(
        description="(transformed value - median) / IQR: how far from normal; null when that is beyond "
        "the largest number (a value many orders of magnitude outside training)"
    )


class EventPrediction(BaseModel):
    event_id: str
    isolation_forest: float | None = Field(None, description="normalised 0..1 anomaly score")
    local_outlier_factor: float | None = None
    ensemble: float | None = None
    if_flag: bool | None = None
    lof_flag: bool | None = None
    is_anomaly: bool = Field(description="the ensemble decision, or the chosen model's flag")
    top_features: list[Contribution] = Field(
        description="the features furthest from normal: for anomalous events, or every event with explain=true"
    )
    features: dict[str, float | None] | None = Field(
        None, description="with explain=true: every feature's value (null: none), as the models read them"
    )


class PredictResponse(BaseModel):
    model: str = Field(description="'ensemble' (both models) or the one model asked for")
    versions: dict[str, str]
    context: bool = Field(
        description="true: features from each entity's ingested state (POST /events); false: from the "
        "posted batch alone"
    )
    feature_set_version: str = Field(description="the feature set the features were computed with")
    predictions: list[EventPrediction]


Outcome = Literal["ingested", "late", "duplicate", "too_late", "invalid"]


class IngestRequest(BaseModel):
    events: list[LogEvent] = Field(
        min_length=1,
        description="one or more events, ingested in the posted order; more than the documented limit "
        "is refused with 413",
    )
    model_config = ConfigDict(json_schema_extra={"examples": [{"events": [EXAMPLE_EVENT]}]})


class IngestResult(BaseModel):
    event_id: str
    outcome: Outcome = Field(
        description="ingested (in time order); late (earlier than the newest event seen, within the "
        "allowed lateness: its own point-in-time features, earlier scores unchanged); duplicate (an "
        "event_id already ingested: not ingested again); too_late (beyond the allowed lateness: refused); "
        "invalid (refused by the engine: reason says why)"
    )
    reason: str | None = Field(None, description="why a too_late or invalid event was refused")
    isolation_forest: float | None = Field(
        None, description="scores of an ingested or late event (null for the others, or when unscored)"
    )
    local_outlier_factor: float | None = None
    ensemble: float | None = None
    if_flag: bool | None = None
    lof_flag: bool | None = None
    is_anomaly: bool | None = None


class IngestResponse(BaseModel):
    versions: dict[str, str] | None = Field(description="the models that scored the events; null if none")
    unscored: str | None = Field(
        description="why the events were ingested without scores (no promoted models, or models of "
        "another feature set); null when scored"
    )
    feature_set_version: str
    results: list[IngestResult]


class ModelInfo(BaseModel):
    name: str
    version: str
    created_at: dt.datetime
    training_window: dict[str, str]
    training_rows: int
    params: dict[str, Any]
    features: list[str]
    training_metrics: dict[str, Any]
    evaluation: dict[str, float | None] = Field(
        description="the latest evaluated day's metrics for this model, from the published snapshot; "
        "null where the day's labels cannot give one (e.g. precision with nothing flagged)"
    )
    evaluation_date: dt.date | None = None


class ModelsList(BaseModel):
    available_models: list[str] = Field(
        description="display names of the promoted model kinds (the predecessor's GET /models/ body)",
        examples=[["Isolation Forest", "Local Outlier Factor"]],
    )
    models: list[ModelInfo] = Field(description="the promoted log-event models")
    transaction_models: list[ModelInfo] = Field(
        description="the promoted bank-transaction models (empty until transaction_train_job promoted a pair)"
    )


class ScoredEvent(BaseModel):
    event_id: str
    ts: dt.datetime
    partition_date: dt.date
    source_service: str
    user_id: str | None
    ip_address: str | None
    correlation_id: str | None
    if_score: float
    lof_score: float
    ensemble_score: float
    if_flag: bool
    lof_flag: bool
    is_anomaly: bool
    if_version: str
    lof_version: str
    live: bool = Field(
        description="true: scored by the live stream, not (yet) held by the batch snapshot; false: the "
        "batch run's (the system of record)"
    )


class Page(BaseModel):
    total: int
    limit: int
    offset: int


class ScoresPage(Page):
    items: list[ScoredEvent]


class IncidentSummary(BaseModel):
    incident_id: str
    partition_date: dt.date
    start_ts: dt.datetime
    end_ts: dt.datetime
    event_count: int
    severity: Severity
    status: str
    reported: bool
    services: list[str]
    user_count: int
    ip_count: int
    max_score: float
    mean_score: float
    origin_service: str | None
    origin_entity: str | None
    scenario_id: str | None
    scenario_name: str | None
    scenario_confidence: float | None
    rerank_score: float | None = Field(
        None,
        description="the promoted incident re-ranker's probability that an analyst confirms the incident "
        "(the snapshot's incident_reranks, newest version); null when none scored it (live incidents)",
    )
    suppressed: bool = Field(
        False,
        description="below the incident re-ranker's cut: kept and listed, but not reported (reported is "
        "false)",
    )
    live: bool = Field(
        description="true: an open live incident the batch snapshot does not hold yet (its id stays when "
        "the batch confirms it); false: the batch run's"
    )


class IncidentsPage(Page):
    items: list[IncidentSummary]


class IncidentDetail(IncidentSummary):
    users: list[str]
    ips: list[str]
    root_cause: dict[str, Any] = Field(
        description="top_features (value, normal, deviation, attribution), origin, the best-matching "
        "scenario and its alternatives"
    )
    summary: str = Field(description="the on-call summary, plain text")
    events: list[dict[str, Any]] = Field(description="the incident's events, first 100 by time")


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    ready: bool
    models: dict[str, dict[str, Any]]
    snapshot: dict[str, Any] | None
    stream: dict[str, Any] = Field(
        description="the live stream's service (owner of the online state): its url, whether it answers, "
        "and its /status (counters, lag, newest event, models, checkpoint, restored_from)"
    )
    problems: list[str]


class Problem(BaseModel):
    detail: Any


class Moved(BaseModel):
    detail: str
    merged_into: str = Field(description="the incident it was merged into (also the Location header)")


# -- analyst feedback (routes/feedback.py; the console's form is validated by the same model) -------------

FeedbackKind = Literal[feedback.KINDS]
FeedbackLabel = Literal[feedback.LABELS]
Selection = Literal[feedback.SELECTIONS]


class FeedbackRequest(BaseModel):
    """One analyst's label on one incident or transaction."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "transaction",
                    "target_id": "TX000123",
                    "label": "true_positive",
                    "comment": "customer confirmed the card was stolen",
                    "selection": "uncertain",
                }
            ]
        },
    )

    kind: FeedbackKind
    target_id: StrictStr = Field(
        min_length=1, max_length=200, description="an incident_id (stable, batch or live) or a transaction_id"
    )
    label: FeedbackLabel
    comment: StrictStr = Field("", max_length=feedback.MAX_COMMENT)
    selection: Selection | None = Field(
        None,
        description="the reason GET /feedback/queue gave for asking about this item (pass it through); "
        "null: the analyst's own pick",
    )


class FeedbackRow(BaseModel):
    feedback_id: str
    created_at: dt.datetime = Field(description="UTC; rows are appended, never updated")
    kind: FeedbackKind
    target_id: str
    partition_date: dt.date | None = Field(description="the day of the incident or transaction")
    label: FeedbackLabel
    comment: str
    analyst: str = Field(description="the person (BANKANOM_ANALYSTS); a key id on rows from before names")
    key_id: str | None = Field(description="the non-secret id of the API key used")
    channel: Literal[feedback.CHANNELS] | None
    selection: Selection | None


class FeedbackPosted(FeedbackRow):
    changed: bool = Field(description="this analyst had given the item a different label before")
    disagreement: bool = Field(description="the item's analysts' latest labels now differ")


class FeedbackPage(Page):
    items: list[FeedbackRow] = Field(description="newest first")


class LabelChange(BaseModel):
    kind: FeedbackKind
    target_id: str
    analyst: str
    from_: FeedbackLabel = Field(alias="from")
    to: FeedbackLabel
    created_at: dt.datetime
    feedback_id: str


class AnalystLabel(BaseModel):
    analyst: str
    label: FeedbackLabel
    created_at: dt.datetime


class Disagreement(BaseModel):
    kind: FeedbackKind
    target_id: str
    labels: list[AnalystLabel] = Field(description="every analyst's latest label on the item")


class AnalystCounts(BaseModel):
    rows: int
    items: int = Field(description="items this analyst labelled")
    true_positive: int = Field(description="among this analyst's latest labels")
    false_positive: int
    unsure: int
    changes: int = Field(description="times this analyst replaced their own label with a different one")


class FeedbackSummary(BaseModel):
    kind: FeedbackKind | None
    labels: dict[str, dict[str, int]] = Field(
        description="per kind, how many items' label that counts (the latest row, whoever wrote it) is "
        "each label"
    )
    analysts: dict[str, AnalystCounts]
    changes: list[LabelChange]
    disagreements: list[Disagreement]


class QueueItem(BaseModel):
    kind: FeedbackKind
    target_id: str
    reason: Selection = Field(
        description="top: highest-ranked unlabelled; uncertain: nearest the decision boundary; random: "
        "drawn uniformly, the unbiased share a re-ranker's gate is checked on"
    )
    score: float = Field(description="the unsupervised score")
    rerank_score: float | None = Field(description="the promoted re-ranker's probability; null without one")


class FeedbackQueue(BaseModel):
    items: list[QueueItem]
