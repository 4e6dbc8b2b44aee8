"""A day's anomalous events grouped into incidents and written to ``incidents`` and
``incident_events``: the body of the ``incidents`` asset (the grouping itself is ``incidents.py``)."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from bankanom_pipeline.detection.explain import normal_values
from bankanom_pipeline.detection.incidents import build_incidents
from bankanom_pipeline.detection.models import Detector
from bankanom_pipeline.detection.scoring import IF, deviations, explain
from bankanom_pipeline.warehouse.frames import read_frame, replace_partition


@dataclass(frozen=True)
class DayIncidents:
    incidents: pl.DataFrame  # as written to ``incidents``
    rows: int
    flagged_events: int


def build_day(con: duckdb.DuckDBPyConnection, day: str, detectors: dict[str, Detector]) -> DayIncidents:
    """Replace day ``day`` of ``incidents`` and ``incident_events`` with the incidents of the day's
    anomalous events (scored_events with their features), explained by ``detectors``."""
    flagged = read_frame(
        con,
        """SELECT s.if_score, s.lof_score, s.ensemble_score, f.*
           FROM scored_events s JOIN features_events f USING (partition_date, event_id)
           WHERE s.partition_date = ? AND s.is_anomaly ORDER BY s.ts, s.event_id""",
        [day],
    )
    space = detectors[IF].space
    built, members = build_incidents(
        flagged,
        deviations(flagged, detectors),
        space.names,
        lambda rows: explain(flagged[rows], detectors),
        normals=normal_values(space),
    )
    built = built.with_columns(partition_date=pl.lit(day).str.to_date())
    members = members.with_columns(partition_date=pl.lit(day).str.to_date())
    rows = replace_partition(con, "incidents", built, day)
    replace_partition(con, "incident_events", members, day)
    return DayIncidents(built, rows, flagged.height)
