"""The truth about log incidents, for the simulated analyst only: is an incident a real anomaly?

An incident is a true positive when it holds an event of a real anomaly instance, the rule incident
precision is measured by (``evaluation.true_incidents``), read from the generator's labels
(``log_labels``). This is for measuring: the simulated analyst posts it through the feedback API exactly
as an analyst would, and no model ever reads this module (docs/detection.md, "Learning from incident
feedback").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import duckdb
import polars as pl

from bankanom_pipeline.detection.evaluation import true_incidents
from bankanom_pipeline.warehouse.frames import read_frame


def incident_truth(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> dict[str, bool]:
    """For each incident id of the warehouse ``con``: True when it holds an anomalous event. An id the
    warehouse does not have is a KeyError (the analyst was shown an incident that does not exist)."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return {}
    con.register("_asked", pl.DataFrame({"incident_id": ids}, schema={"incident_id": pl.String}).to_arrow())
    try:
        members = read_frame(
            con,
            """SELECT ie.incident_id, ie.event_id,
                      coalesce(l.is_anomaly, false) AS label_is_anomaly
               FROM incident_events ie JOIN _asked USING (incident_id)
               LEFT JOIN log_labels l USING (partition_date, event_id)""",
        )
    finally:
        con.unregister("_asked")
    unknown = set(ids) - set(members["incident_id"].to_list())
    if unknown:
        raise KeyError(f"incidents not in the warehouse: {', '.join(sorted(unknown)[:5])}")
    true = set(true_incidents(members.select("incident_id", "event_id"), members)["incident_id"].to_list())
    return {i: i in true for i in ids}


def from_warehouse() -> Callable[[list[str]], dict[str, bool]]:
    """``incident_truth`` over the configured warehouse, opened read-only for each call (what the
    simulated analyst's ``truth`` argument takes)."""
    from bankanom_pipeline.warehouse import store

    def truth(ids: list[str]) -> dict[str, bool]:
        with store.from_settings().reading() as con:
            return incident_truth(con, ids)

    return truth
