"""How far the live results of a day agree with the batch run, the system of record (docs/live-incidents.md,
"Reconciliation"): events scored by each, scores equal under the same models, flags, incidents matched,
missed and extra, late events. Plain Python over the live store (SQLite) and the batch's frames; the
``evaluation`` asset records it as metadata and the console shows it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from bankanom_pipeline import settings

STORE_FILE = "live.sqlite"  # in settings.live_dir(), as the stream writes it
TOLERANCE = 1e-9  # scores are equal when all three differ by at most this
_SCORES = (
    ("isolation_forest", "if_score"),
    ("local_outlier_factor", "lof_score"),
    ("ensemble_score", "ensemble_score"),
)
EXAMPLES = 5  # ids listed per kind of disagreement


@dataclass
class Reconciliation:
    day: str
    # events: accepted by the live stream / scored by the batch, and how they overlap
    live_events: int = 0
    batch_events: int = 0
    both: int = 0
    only_live: int = 0
    only_batch: int = 0
    late: int = 0  # live events that arrived behind the high-water mark (scored when they arrived)
    live_unscored: int = 0  # accepted live but not scored (no promoted models, another feature set)
    # scores of the events in both, scored by the same model versions
    compared: int = 0
    other_models: int = 0  # in both, scored live by other model versions (a promotion during the day)
    scores_equal: int = 0
    max_score_difference: float = 0.0
    flags_agree: int = 0
    flagged_live: int = 0
    flagged_batch: int = 0
    # incidents holding the day's events
    live_incidents: int = 0
    batch_incidents: int = 0
    matched_same_id: int = 0  # the batch confirmed the live incident's id
    matched_same_members: int = 0  # ... and with exactly the same events
    matched_overlap: int = 0  # another id (a late first event, a merge) but events in common
    missed: int = 0  # batch incidents no live incident shares an event with
    missed_reported: int = 0
    extra: int = 0  # live incidents no batch incident shares an event with
    extra_reported: int = 0
    live_spanning: int = 0  # live incidents holding events of several batch incidents (not split live)
    crossing_midnight: int = 0  # live incidents with events of two days (batch splits them)
    # how the live incidents sit over the batch ones: a batch incident's events all in one live incident,
    # spread over several, or some in none; live incidents exactly a union of whole batch incidents
    batch_whole_in_one_live: int = 0
    batch_split_over_live: int = 0
    batch_partly_outside_live: int = 0
    live_unions_of_whole_batch: int = 0
    # the largest live incident holding the day's events: its events (of any day) and the batch
    # incidents it holds events of (1 when live grouped it as batch did)
    largest_live_events: int = 0
    largest_live_batch_incidents: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def share_equal_scores(self) -> float:
        return self.scores_equal / self.compared if self.compared else float("nan")

    @property
    def flag_agreement(self) -> float:
        return self.flags_agree / self.compared if self.compared else float("nan")

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "share_equal_scores": self.share_equal_scores,
            "flag_agreement": self.flag_agreement,
        }


def live_store_path() -> Path:
    return settings.live_dir() / STORE_FILE


def reconcile(
    live: sqlite3.Connection,
    day: str,
    scored_events: pl.DataFrame,
    incidents: pl.DataFrame,
    incident_events: pl.DataFrame,
) -> Reconciliation:
    """Compare the live store ``live`` with the batch's frames of ``day`` (``scored_events`` with
    event_id, if/lof/ensemble scores, is_anomaly, if_version, lof_version; ``incidents`` with
    incident_id and reported; ``incident_events`` with incident_id, event_id). Rows of other days in the
    frames are ignored where they carry partition_date."""
    scored_events, incidents, incident_events = (
        _of_day(f, day) for f in (scored_events, incidents, incident_events)
    )
    out = Reconciliation(day=day)
    _events(out, _live_events(live, day), scored_events)
    _incidents(out, live, day, incidents, incident_events)
    return out


def reconcile_day(live_path: str | Path, batch: object, day: str) -> Reconciliation | None:
    """``reconcile`` of ``day`` between the live store at ``live_path`` and ``batch``, a DuckDB
    connection to the warehouse or a published snapshot (tables scored_events, incidents,
    incident_events). None when there is no live store or it holds no event of the day."""
    path = Path(live_path)
    if not path.exists():
        return None
    live = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        has_events = live.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()[0]
        if (
            not has_events
            or not live.execute("SELECT 1 FROM events WHERE partition_date = ? LIMIT 1", (day,)).fetchone()
        ):
            return None
        frames = [
            batch.execute(query, [day]).pl()
            for query in (
                "SELECT event_id, if_score, lof_score, ensemble_score, is_anomaly, if_version, lof_version "
                "FROM scored_events WHERE partition_date = ?",
                "SELECT incident_id, reported FROM incidents WHERE partition_date = ?",
                "SELECT incident_id, event_id FROM incident_events WHERE partition_date = ?",
            )
        ]
        return reconcile(live, day, *frames)
    finally:
        live.close()


def _of_day(frame: pl.DataFrame, day: str) -> pl.DataFrame:
    if "partition_date" not in frame.columns:
        return frame
    return frame.filter(pl.col("partition_date").cast(pl.String) == day)


def _live_events(live: sqlite3.Connection, day: str) -> pl.DataFrame:
    rows = live.execute(
        "SELECT event_id, status, isolation_forest, local_outlier_factor, ensemble_score, is_anomaly, "
        "model_versions FROM events WHERE partition_date = ?",
        (day,),
    ).fetchall()
    frame = pl.DataFrame(
        rows,
        schema={
            "event_id": pl.String,
            "status": pl.String,
            "isolation_forest": pl.Float64,
            "local_outlier_factor": pl.Float64,
            "ensemble_score": pl.Float64,
            "is_anomaly": pl.Int64,
            "model_versions": pl.String,
        },
        orient="row",
    )
    versions = [json.loads(v) if v else {} for v in frame["model_versions"].to_list()]
    return frame.with_columns(
        pl.Series("live_if_version", [v.get("isolation_forest") for v in versions], dtype=pl.String),
        pl.Series("live_lof_version", [v.get("local_outlier_factor") for v in versions], dtype=pl.String),
        pl.col("is_anomaly").cast(pl.Boolean),
    )


def _events(out: Reconciliation, live: pl.DataFrame, batch: pl.DataFrame) -> None:
    out.live_events, out.batch_events = live.height, batch.height
    out.late = int((live["status"] == "late").sum())
    out.live_unscored = int(live["ensemble_score"].is_null().sum())
    live_ids, batch_ids = set(live["event_id"].to_list()), set(batch["event_id"].to_list())
    out.both = len(live_ids & batch_ids)
    out.only_live, out.only_batch = len(live_ids - batch_ids), len(batch_ids - live_ids)
    out.examples["only_live_events"] = sorted(live_ids - batch_ids)[:EXAMPLES]
    out.examples["only_batch_events"] = sorted(batch_ids - live_ids)[:EXAMPLES]
    out.flagged_live = int(live["is_anomaly"].fill_null(False).sum())
    out.flagged_batch = int(batch["is_anomaly"].cast(pl.Boolean).sum())
    batch = batch.select(
        "event_id",
        *[pl.col(b).alias(f"batch_{b}") for _, b in _SCORES],
        pl.col("is_anomaly").alias("batch_anomaly"),
        "if_version",
        "lof_version",
    )
    joined = live.filter(pl.col("ensemble_score").is_not_null()).join(batch, on="event_id")
    same = (pl.col("live_if_version") == pl.col("if_version").cast(pl.String)) & (
        pl.col("live_lof_version") == pl.col("lof_version").cast(pl.String)
    )
    compared = joined.filter(same)
    out.other_models = joined.height - compared.height
    out.compared = compared.height
    if not compared.height:
        return
    difference = compared.select(
        pl.max_horizontal([(pl.col(a) - pl.col(f"batch_{b}")).abs() for a, b in _SCORES]).alias("d")
    )["d"]
    out.max_score_difference = float(difference.max())
    out.scores_equal = int((difference <= TOLERANCE).sum())
    agree = compared["is_anomaly"] == compared["batch_anomaly"].cast(pl.Boolean)
    out.flags_agree = int(agree.sum())
    out.examples["score_differs"] = (
        compared.filter(difference > TOLERANCE)["event_id"].sort().head(EXAMPLES).to_list()
    )
    out.examples["flag_differs"] = compared.filter(~agree)["event_id"].sort().head(EXAMPLES).to_list()


def _incidents(
    out: Reconciliation,
    live: sqlite3.Connection,
    day: str,
    incidents: pl.DataFrame,
    incident_events: pl.DataFrame,
) -> None:
    tables = {r[0] for r in live.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"incidents", "incident_events", "flagged_features"} <= tables:
        rows = []  # a store written before live incidents: every batch incident counts as missed
    else:
        rows = _live_incident_rows(live, day)
    live_members: dict[str, set[str]] = {}
    live_days: dict[str, set[str]] = {}
    live_reported: dict[str, bool] = {}
    for iid, event, event_day, reported in rows:
        live_members.setdefault(iid, set()).add(event)
        live_days.setdefault(iid, set()).add(event_day)
        live_reported[iid] = bool(reported)
    batch_members: dict[str, set[str]] = {iid: set() for iid in incidents["incident_id"].to_list()}
    for iid, event in incident_events.select("incident_id", "event_id").iter_rows():
        batch_members.setdefault(iid, set()).add(event)
    batch_reported = dict(
        zip(incidents["incident_id"].to_list(), incidents["reported"].cast(pl.Boolean).to_list(), strict=True)
    )
    owner_live = {e: iid for iid, events in live_members.items() for e in events}
    owner_batch = {e: iid for iid, events in batch_members.items() for e in events}

    out.live_incidents, out.batch_incidents = len(live_members), len(batch_members)
    missed, overlap = [], []
    for iid, events in batch_members.items():
        if iid in live_members:
            out.matched_same_id += 1
            out.matched_same_members += live_members[iid] == events
        elif any(e in owner_live for e in events):
            overlap.append(iid)
        else:
            missed.append(iid)
    out.matched_overlap, out.missed = len(overlap), len(missed)
    out.missed_reported = sum(batch_reported.get(i, False) for i in missed)
    extra = [
        iid
        for iid, events in live_members.items()
        if iid not in batch_members and not any(e in owner_batch for e in events)
    ]
    out.extra = len(extra)
    out.extra_reported = sum(live_reported[i] for i in extra)
    # per live incident, the batch incidents holding its events (None: an event no batch incident holds)
    held = {iid: {owner_batch.get(e) for e in events} for iid, events in live_members.items()}
    spanning = [iid for iid, inside in held.items() if len(inside - {None}) > 1]
    out.live_spanning = len(spanning)
    for events in batch_members.values():
        if not events:
            continue
        owners = {owner_live.get(e) for e in events}
        if None in owners:
            out.batch_partly_outside_live += 1
        elif len(owners) == 1:
            out.batch_whole_in_one_live += 1
        else:
            out.batch_split_over_live += 1
    out.live_unions_of_whole_batch = sum(
        None not in inside and set().union(*(batch_members[b] for b in inside)) == live_members[iid]
        for iid, inside in held.items()
    )
    if live_members:
        largest = max(live_members, key=lambda iid: (len(live_members[iid]), iid))
        out.largest_live_events = len(live_members[largest])
        out.largest_live_batch_incidents = len(held[largest] - {None})
        out.examples["largest_live_incident"] = [largest]
    out.crossing_midnight = sum(len(days) > 1 for days in live_days.values())
    out.examples.update(
        missed_incidents=sorted(missed)[:EXAMPLES],
        overlapping_incidents=sorted(overlap)[:EXAMPLES],
        extra_incidents=sorted(extra)[:EXAMPLES],
        spanning_incidents=sorted(spanning)[:EXAMPLES],
    )


def _live_incident_rows(live: sqlite3.Connection, day: str) -> list[tuple]:
    """(incident, event, event's day, reported) of the live incidents holding an event of ``day``,
    whichever day they opened on."""
    return live.execute(
        """SELECT ie.incident_id, ie.event_id, f.partition_date, i.reported
           FROM incident_events ie
           JOIN incidents i USING (incident_id)
           JOIN flagged_features f USING (event_id)
           WHERE i.merged_into IS NULL AND ie.incident_id IN (
               SELECT ie2.incident_id FROM incident_events ie2
               JOIN flagged_features f2 USING (event_id) WHERE f2.partition_date = ?)""",
        (day,),
    ).fetchall()
