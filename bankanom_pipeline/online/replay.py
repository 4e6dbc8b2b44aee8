"""``bankanom replay``'s work: a stored day's validated events through the online engine, warmed with the
previous day's last 24 hours as the SQL is, compared with ``features_events`` (every feature of every
event) and, when the day was scored, with ``scored_events`` (the engine's vectors scored by the same model
versions, through the pipeline's scoring path).

Two numbers are equal when ``|a - b| <= 1e-9 * max(1, |a|, |b|)``; flags must be identical.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field

import numpy as np
import orjson
import polars as pl

from bankanom_pipeline.online.engine import DAY, FEATURES, OnlineEngine
from bankanom_pipeline.online.events import Event
from bankanom_pipeline.online.layout import ST_INGESTED, ST_LATE, STATUSES

TOLERANCE = 1e-9
SCORES = ("if_score", "lof_score", "ensemble_score")
FLAGS = ("if_flag", "lof_flag", "is_anomaly")
_COLUMNS = (
    "event_id, epoch_us(ts) AS ts, source_service, log_level, message, correlation_id, user_id, "
    "ip_address, geo_location, metrics::VARCHAR AS metrics"
)


@dataclass
class Mismatch:
    event_id: str
    column: str
    engine: float | None
    stored: float | None

    @property
    def size(self) -> float:
        if self.engine is None or self.stored is None:
            return math.inf
        return abs(self.engine - self.stored) / max(1.0, abs(self.engine), abs(self.stored))


@dataclass
class Report:
    day: str
    warmup_events: int = 0
    day_events: int = 0  # validated events of the day
    compared: int = 0  # events in both features_events and the engine's output
    only_stored: int = 0  # in features_events, not produced by the engine
    only_engine: int = 0  # produced by the engine, not in features_events
    feature_equal: int = 0
    per_feature: dict[str, int] = field(default_factory=dict)
    worst: list[Mismatch] = field(default_factory=list)
    scored: int = 0  # events compared with scored_events (0: the day was not scored)
    score_equal: int = 0
    per_score: dict[str, int] = field(default_factory=dict)
    worst_scores: list[Mismatch] = field(default_factory=list)
    model_versions: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    engine_seconds: float = 0.0
    scoring_seconds: float = 0.0
    engine_cpu_seconds: float = 0.0  # this process's CPU time: the figure a loaded machine distorts least
    scoring_cpu_seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        busy = self.engine_seconds + self.scoring_seconds
        return (self.warmup_events + self.day_events) / busy if busy else 0.0

    @property
    def events_per_cpu_second(self) -> float:
        busy = self.engine_cpu_seconds + self.scoring_cpu_seconds
        return (self.warmup_events + self.day_events) / busy if busy else 0.0

    @property
    def feature_share(self) -> float:
        total = self.compared + self.only_stored + self.only_engine
        return self.feature_equal / total if total else 0.0

    @property
    def score_share(self) -> float:
        return self.score_equal / self.scored if self.scored else 0.0

    @property
    def agrees(self) -> bool:
        features_ok = self.compared > 0 and self.feature_share == 1.0
        scores_ok = self.scored == 0 or self.score_share == 1.0
        return features_ok and scores_ok

    def to_dict(self) -> dict:
        def rows(items: list[Mismatch]) -> list[dict]:
            return [
                {"event_id": m.event_id, "column": m.column, "engine": m.engine, "stored": m.stored}
                for m in items
            ]

        return {
            "day": self.day,
            "agrees": self.agrees,
            "warmup_events": self.warmup_events,
            "day_events": self.day_events,
            "compared": self.compared,
            "only_in_features_events": self.only_stored,
            "only_in_engine": self.only_engine,
            "feature_equal_events": self.feature_equal,
            "feature_equal_share": self.feature_share,
            "feature_mismatches": self.per_feature,
            "worst_feature_mismatches": rows(self.worst),
            "scored_compared": self.scored,
            "score_equal_events": self.score_equal,
            "score_equal_share": self.score_share,
            "score_mismatches": self.per_score,
            "worst_score_mismatches": rows(self.worst_scores),
            "model_versions": self.model_versions,
            "engine_outcomes": self.outcomes,
            "events_per_second": self.events_per_second,
            "events_per_cpu_second": self.events_per_cpu_second,
            "engine_seconds": self.engine_seconds,
            "scoring_seconds": self.scoring_seconds,
            "engine_cpu_seconds": self.engine_cpu_seconds,
            "scoring_cpu_seconds": self.scoring_cpu_seconds,
            "tolerance": f"|a - b| <= {TOLERANCE} * max(1, |a|, |b|)",
        }


@dataclass
class Stored:
    """What replay reads from the warehouse, in memory (the warehouse is closed before computing)."""

    events: pl.DataFrame  # validated events of the warm-up tail and the day, in (ts, event_id) order
    day_ids: set[str]
    features: pl.DataFrame  # features_events of the day: event_id and FEATURES
    scores: pl.DataFrame  # scored_events of the day: event_id, SCORES, FLAGS, if_version, lof_version


def read_day(con, day: str) -> Stored:
    """The day's and the warm-up's validated events, its features and its scores, from ``con``."""
    previous = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
    first = con.execute(
        "SELECT min(epoch_us(ts)) FROM validated_logs WHERE partition_date = ?", [day]
    ).fetchone()[0]
    if first is None:
        raise LookupError(f"validated_logs has no events for {day}: ingest and validate the day first")
    events = con.execute(
        f"""SELECT partition_date = ?::DATE AS of_day, {_COLUMNS} FROM validated_logs
            WHERE partition_date = ?::DATE
               OR (partition_date = ?::DATE AND epoch_us(ts) >= ?)
            ORDER BY ts, event_id""",
        [day, day, previous, first - DAY],
    ).pl()
    features = con.execute(
        f"SELECT event_id, {', '.join(FEATURES)} FROM features_events WHERE partition_date = ?", [day]
    ).pl()
    import duckdb

    try:
        scores = con.execute(
            f"""SELECT event_id, {", ".join(SCORES + FLAGS)}, if_version, lof_version
                FROM scored_events WHERE partition_date = ?""",
            [day],
        ).pl()
    except duckdb.CatalogException:  # a warehouse that never scored a day has no scored_events
        scores = pl.DataFrame()
    day_ids = set(events.filter(pl.col("of_day"))["event_id"].to_list())
    return Stored(events, day_ids, features, scores)


def to_events(frame: pl.DataFrame) -> list[Event]:
    """Engine events from validated_logs rows (metrics as their JSON text)."""
    loads = orjson.loads
    return [
        Event(eid, ts, svc, lvl, msg, cid, uid, ip, geo, None if metrics is None else loads(metrics))
        for eid, ts, svc, lvl, msg, cid, uid, ip, geo, metrics in zip(
            *(
                frame[c].to_list()
                for c in (
                    "event_id",
                    "ts",
                    "source_service",
                    "log_level",
                    "message",
                    "correlation_id",
                    "user_id",
                    "ip_address",
                    "geo_location",
                    "metrics",
                )
            ),
            strict=True,
        )
    ]


CHUNK = 65_536  # events through the engine at a time (a batch of its kernel)


def run(stored: Stored, day: str, detectors: dict | None = None, config=None, engine=None) -> Report:
    """Replay ``stored`` through a fresh engine (or ``engine``) and compare. ``detectors``: the models
    scored_events used (None: scores are not compared). The engine takes the stored frame a chunk at a
    time (no Python object per event); the day's vectors are one array."""
    report = Report(day=day)
    engine = engine or OnlineEngine()
    day_ids = stored.day_ids
    ids: list[pl.Series] = []
    blocks: list[np.ndarray] = []
    for start in range(0, stored.events.height, CHUNK):
        frame = stored.events.slice(start, CHUNK)
        began, cpu = time.perf_counter(), time.process_time()
        batch = engine.ingest_frame(frame)
        report.engine_seconds += time.perf_counter() - began
        report.engine_cpu_seconds += time.process_time() - cpu
        for status, n in enumerate(np.bincount(batch.status, minlength=len(STATUSES)).tolist()):
            if n:
                report.outcomes[STATUSES[status]] = report.outcomes.get(STATUSES[status], 0) + n
        keep = ((batch.status == ST_INGESTED) | (batch.status == ST_LATE)) & frame["of_day"].to_numpy()
        ids.append(frame["event_id"].filter(keep))
        blocks.append(batch.features[keep])
    report.day_events = len(day_ids)
    report.warmup_events = stored.events.height - report.day_events
    values = np.concatenate(blocks) if blocks else np.empty((0, len(FEATURES)))
    mine = pl.DataFrame({"event_id": pl.concat(ids) if ids else pl.Series([], dtype=pl.String)}).with_columns(
        pl.from_numpy(values, schema=list(FEATURES), orient="row")
    )
    del values, blocks
    _compare_features(report, mine, stored.features)
    if detectors is not None and stored.scores.height:
        began, cpu = time.perf_counter(), time.process_time()
        scored = _score(mine, detectors, config)
        report.scoring_seconds = time.perf_counter() - began
        report.scoring_cpu_seconds = time.process_time() - cpu
        _compare_scores(report, scored, stored.scores)
    return report


def equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    with np.errstate(invalid="ignore"):
        return (np.abs(a - b) <= TOLERANCE * scale) | (a == b)


def _compare_features(report: Report, mine: pl.DataFrame, stored: pl.DataFrame) -> None:
    joined = mine.join(stored, on="event_id", how="full", suffix="__sql", coalesce=True)
    present_mine = joined[FEATURES[0]].is_not_null()
    present_sql = joined[f"{FEATURES[0]}__sql"].is_not_null()
    report.only_stored = int((~present_mine & present_sql).sum())
    report.only_engine = int((present_mine & ~present_sql).sum())
    both = joined.filter(present_mine & present_sql)
    report.compared = both.height
    all_ok = np.ones(both.height, dtype=bool)
    worst: list[Mismatch] = []
    for name in FEATURES:
        a = both[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        b = both[f"{name}__sql"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        ok = equal(a, b)
        bad = np.flatnonzero(~ok)
        report.per_feature[name] = len(bad)
        all_ok &= ok
        if len(bad):
            worst.extend(
                Mismatch(both["event_id"][int(i)], name, _num(a[i]), _num(b[i]))
                for i in bad[np.argsort(-_rel(a[bad], b[bad]))[:5]]
            )
    report.feature_equal = int(all_ok.sum())
    report.worst = sorted(worst, key=lambda m: -m.size)[:5]


def _score(mine: pl.DataFrame, detectors: dict, config) -> pl.DataFrame:
    from bankanom_pipeline.detection.scoring import score_batches

    batches = mine.iter_slices(config.scoring.chunk_rows)
    return score_batches(batches, detectors, config, ["event_id"])


def _compare_scores(report: Report, scored: pl.DataFrame, stored: pl.DataFrame) -> None:
    joined = scored.join(stored, on="event_id", how="inner", suffix="__sql")
    # a stored score with no engine vector to compare counts against the share
    report.scored = max(joined.height, stored.height)
    all_ok = np.ones(joined.height, dtype=bool)
    worst: list[Mismatch] = []
    for name in SCORES + FLAGS:
        a = joined[name].cast(pl.Float64).to_numpy()
        b = joined[f"{name}__sql"].cast(pl.Float64).to_numpy()
        ok = equal(a, b) if name in SCORES else a == b
        bad = np.flatnonzero(~ok)
        report.per_score[name] = len(bad)
        all_ok &= ok
        worst.extend(
            Mismatch(joined["event_id"][int(i)], name, _num(a[i]), _num(b[i]))
            for i in bad[np.argsort(-_rel(a[bad], b[bad]))[:5]]
        )
    report.score_equal = int(all_ok.sum())
    report.worst_scores = sorted(worst, key=lambda m: -m.size)[:5]


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        r = np.abs(a - b) / np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    return np.where(np.isnan(r), np.inf, r)


def _num(v: float) -> float | None:
    return None if math.isnan(v) else float(v)
