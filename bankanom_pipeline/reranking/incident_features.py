"""Incident-level features of the log-incident re-ranker: what an analyst sees of an incident, as numbers.

One row per incident, from the ``incidents`` table (size, span, entities, scores, severity, reporting,
the root-cause match and its margin, the origin's kind, the top features' families) and its events'
scores in ``scored_events`` (both detectors' highest and mean score, the share each flagged). Never
ground truth: ``log_labels`` is not read here, and nothing the evaluation computes is.

``FEATURES`` is fixed by this module and the RCA catalogue, so a re-ranker's recorded names select the
same columns at scoring time (``matrix``); the unsupervised score the re-ranker starts from is
``max_score``, the incident's rank before it (``UNSUPERVISED``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import cache

import duckdb
import numpy as np
import polars as pl

from bankanom_pipeline.detection import rca
from bankanom_pipeline.detection.incidents import SEVERITIES
from bankanom_pipeline.warehouse.frames import read_frame

UNSUPERVISED = "max_score"
ORIGIN_KINDS = ("user", "ip", "network", "service")
# features_events columns by what they describe; the top features of an incident say which kind of
# departure made it (an account's habits, an address, a service's health, a raw metric)
FAMILIES = ("user", "ip", "network", "service", "session", "time", "template", "metric")
_PREFIX_FAMILY = {
    "user_": "user",
    "travel_": "user",
    "ip_": "ip",
    "network_": "network",
    "service_": "service",
    "session_": "session",
    "hour_": "time",
    "is_weekend": "time",
    "template_": "template",
    "level_num": "template",
    "rare_quiet_country": "template",
}

# what ``from_tables`` needs of each incident (a subset of INCIDENT_COLUMNS) and of its events
INCIDENT_INPUTS = (
    "incident_id",
    "partition_date",
    "start_ts",
    "end_ts",
    "event_count",
    "services",
    "user_count",
    "ip_count",
    "max_score",
    "mean_score",
    "severity",
    "reported",
    "origin_entity",
    "scenario_id",
    "scenario_confidence",
    "scenario_alternatives",
    "top_features",
)
EVENT_INPUTS = ("incident_id", "if_score", "lof_score", "if_flag", "lof_flag")


def family(feature: str) -> str:
    """The family of a features_events column (``FAMILIES``); raw per-event metrics are "metric"."""
    for prefix, name in _PREFIX_FAMILY.items():
        if feature.startswith(prefix):
            return name
    return "metric"


@cache
def scenario_ids() -> tuple[str, ...]:
    return tuple(rca.default_catalogue().ids)


@cache
def feature_names() -> tuple[str, ...]:
    """Every column ``from_tables`` computes, in order (the re-ranker's inputs besides ``max_score``)."""
    return (
        "log_event_count",
        "log_duration_s",
        "events_per_minute",
        "service_count",
        "user_count",
        "ip_count",
        "mean_score",
        "score_spread",
        "if_max",
        "if_mean",
        "lof_max",
        "lof_mean",
        "if_flag_share",
        "lof_flag_share",
        "severity_level",
        "reported",
        "start_hour_sin",
        "start_hour_cos",
        "scenario_confidence",
        "scenario_margin",
        *(f"origin_{k}" for k in ORIGIN_KINDS),
        *(f"scenario_{s}" for s in scenario_ids()),
        "top_feature_count",
        "top_deviation",
        "top_attributed",
        *(f"top_family_{f}" for f in FAMILIES),
        *(f"top_share_{f}" for f in FAMILIES),
    )


def _runner_up(alternatives: str | None) -> float:
    if not alternatives:
        return 0.0
    confidences = [float(a.get("confidence") or 0.0) for a in json.loads(alternatives)]
    return max(confidences, default=0.0)


def _top(top_features: str | None) -> dict[str, float]:
    """The top features' part of the row: how many, the first one's deviation and whether the model's
    attribution chose them, the first one's family and each family's share of the list."""
    listed = json.loads(top_features) if top_features else []
    out = {"top_feature_count": float(len(listed)), "top_deviation": 0.0, "top_attributed": 0.0}
    out |= {f"top_family_{f}": 0.0 for f in FAMILIES} | {f"top_share_{f}": 0.0 for f in FAMILIES}
    if not listed:
        return out
    first = listed[0]
    deviation = first.get("deviation")
    out["top_deviation"] = math.log1p(abs(deviation)) if deviation is not None else 0.0
    out["top_attributed"] = float(first.get("attribution") is not None)
    out[f"top_family_{family(first['feature'])}"] = 1.0
    for item in listed:
        out[f"top_share_{family(item['feature'])}"] += 1.0 / len(listed)
    return out


def from_tables(incidents: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """``incident_id``, ``partition_date``, ``max_score`` and ``feature_names()`` per incident.

    ``incidents``: rows of the ``incidents`` table (``INCIDENT_INPUTS``); ``events``: one row per member
    event with its scores (``EVENT_INPUTS``). An incident without event rows gets 0 for its events' part."""
    missing = [c for c in INCIDENT_INPUTS if c not in incidents.columns]
    missing += [f"events.{c}" for c in EVENT_INPUTS if c not in events.columns]
    if missing:
        raise ValueError(f"incident features need the columns {', '.join(missing)}")
    per_event = events.group_by("incident_id").agg(
        pl.col("if_score").max().alias("if_max"),
        pl.col("if_score").mean().alias("if_mean"),
        pl.col("lof_score").max().alias("lof_max"),
        pl.col("lof_score").mean().alias("lof_mean"),
        pl.col("if_flag").cast(pl.Float64).mean().alias("if_flag_share"),
        pl.col("lof_flag").cast(pl.Float64).mean().alias("lof_flag_share"),
    )
    seconds = (pl.col("end_ts") - pl.col("start_ts")).dt.total_microseconds() / 1e6
    hour = pl.col("start_ts").dt.hour() + pl.col("start_ts").dt.minute() / 60
    origin = pl.col("origin_entity").str.extract(r"^(\w+) ", 1)
    base = incidents.select(INCIDENT_INPUTS).join(per_event, on="incident_id", how="left")
    frame = base.select(
        "incident_id",
        "partition_date",
        pl.col("max_score").cast(pl.Float64),
        pl.col("event_count").cast(pl.Float64).log1p().alias("log_event_count"),
        seconds.log1p().alias("log_duration_s"),
        (pl.col("event_count") / (seconds / 60 + 1)).alias("events_per_minute"),
        pl.col("services").list.len().cast(pl.Float64).alias("service_count"),
        pl.col("user_count").cast(pl.Float64),
        pl.col("ip_count").cast(pl.Float64),
        pl.col("mean_score").cast(pl.Float64),
        (pl.col("max_score") - pl.col("mean_score")).alias("score_spread"),
        *(pl.col(c).fill_null(0.0) for c in per_event.columns if c != "incident_id"),
        pl.col("severity")
        .replace_strict(SEVERITIES, range(len(SEVERITIES)), default=None)
        .cast(pl.Float64)
        .alias("severity_level"),
        pl.col("reported").cast(pl.Float64),
        (hour * 2 * math.pi / 24).sin().alias("start_hour_sin"),
        (hour * 2 * math.pi / 24).cos().alias("start_hour_cos"),
        pl.col("scenario_confidence").cast(pl.Float64).fill_null(0.0),
        (
            pl.col("scenario_confidence").fill_null(0.0)
            - pl.col("scenario_alternatives").map_elements(_runner_up, return_dtype=pl.Float64)
        ).alias("scenario_margin"),
        *((origin == k).cast(pl.Float64).fill_null(0.0).alias(f"origin_{k}") for k in ORIGIN_KINDS),
        *(
            (pl.col("scenario_id") == s).cast(pl.Float64).fill_null(0.0).alias(f"scenario_{s}")
            for s in scenario_ids()
        ),
    )
    top_schema = {name: pl.Float64 for name in _top(None)}
    top = pl.DataFrame([_top(t) for t in incidents["top_features"].to_list()], schema=top_schema)
    return pl.concat([frame, top], how="horizontal").select(
        "incident_id", "partition_date", UNSUPERVISED, *feature_names()
    )


def read(con: duckdb.DuckDBPyConnection, days: Sequence[str]) -> pl.DataFrame:
    """``from_tables`` of every incident of ``days`` in the warehouse (empty when there are none)."""
    days = sorted(set(days))
    if not days:
        return from_tables(
            pl.DataFrame(schema={c: pl.String for c in INCIDENT_INPUTS}).pipe(_typed),
            pl.DataFrame(schema={c: pl.Float64 for c in EVENT_INPUTS}).cast({"incident_id": pl.String}),
        )
    marks = ", ".join("?" * len(days))
    incidents = read_frame(
        con,
        f"SELECT {', '.join(INCIDENT_INPUTS)} FROM incidents WHERE partition_date::VARCHAR IN ({marks})",
        days,
    )
    events = read_frame(
        con,
        f"""SELECT ie.incident_id, s.if_score, s.lof_score, s.if_flag, s.lof_flag
            FROM incident_events ie JOIN scored_events s USING (partition_date, event_id)
            WHERE ie.partition_date::VARCHAR IN ({marks})""",
        days,
    )
    return from_tables(incidents, events)


def _typed(frame: pl.DataFrame) -> pl.DataFrame:
    """An empty incidents frame with the table's types (``read`` of no day)."""
    return frame.cast(
        {
            "partition_date": pl.Date,
            "start_ts": pl.Datetime("us", "UTC"),
            "end_ts": pl.Datetime("us", "UTC"),
            "event_count": pl.Int64,
            "user_count": pl.Int64,
            "ip_count": pl.Int64,
            "max_score": pl.Float64,
            "mean_score": pl.Float64,
            "reported": pl.Boolean,
            "scenario_confidence": pl.Float64,
        }
    ).with_columns(pl.lit(None, pl.List(pl.String)).alias("services"))


def matrix(frame: pl.DataFrame, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(features as a float64 matrix in ``names``' order, the unsupervised score) of ``from_tables``'
    rows: what ``Reranker.predict`` and ``fit`` take. A name this module no longer computes is an error
    (the re-ranker was fitted on another definition of its inputs)."""
    unknown = [n for n in names if n not in frame.columns]
    if unknown:
        raise ValueError(f"the re-ranker needs features this code does not compute: {', '.join(unknown)}")
    features = frame.select(names).to_numpy().astype(np.float64)
    return features, frame[UNSUPERVISED].to_numpy().astype(np.float64)
