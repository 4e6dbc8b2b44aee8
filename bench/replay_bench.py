"""`bankanom replay` on a full default day: the online engine's speed on one core (features and scoring),
its state's size, and its agreement with the SQL; beside it, the same day's features in DuckDB.

Set-up, untimed and kept in ``--data``: `bankanom demo` at the default rate (a training day and the
held-out day, ~1.1M events each, features, promoted models, scored_events), with its own Dagster home.
Then ``--rounds`` rounds, each of two fresh processes pinned to one core (``--cpu``), alternated:

- **replay**: read the held-out day and the previous day's last 24 hours from the warehouse (timed
  apart), run them through a fresh ``OnlineEngine`` in order, score the day's vectors with the model
  versions that scored it, compare with ``features_events`` and ``scored_events`` (replay's own report).
  Events/s on one core = 1 / (engine CPU seconds per ingested event + scoring CPU seconds per scored
  event; the clock's figure beside it): a
  stream ingests each event once and scores it once; the warm-up tail is ingested, not scored. State:
  ``engine.memory_bytes()`` per entity kind, the entities held, and the process's RSS before and after
  (after the input and the engine's outputs are released: an upper bound, the allocator keeps freed
  pages), and its peak;
- **sql**: the day's feature models (stg_logs -> features_events, the previous day read by the lookback
  windows) on a copy of the same warehouse, DuckDB at one thread on the same core: events/s.

Each run's load average and ``machine_pace`` are kept beside it. ``--state-only``: the state's size from
the demo's published engine checkpoint (restored, no replay). Needs the online engine
(``bankanom_pipeline/online``), so today's tree only. ``--worker replay --data D`` alone runs one replay
of a prepared ``D/data`` (a warehouse holding the day and its scores, the models that scored it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _trees
from _common import machine_pace, record

DATE = "2026-01-06"


def build(folder: Path, date: str, rate: float | None = None) -> None:
    """The demo (at its default rate unless ``rate``) into ``folder`` (data/ and its own Dagster home dh/)."""
    if (folder / "built").exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, "BANKANOM_DATA_DIR": str(folder / "data"), "DAGSTER_HOME": str(folder / "dh")}
    (folder / "dh").mkdir()
    with open(folder / "demo.log", "w") as log:
        subprocess.run(
            [sys.executable, "-m", "bankanom_pipeline.cli", "demo", "--date", date]
            + (["--rate", str(rate)] if rate else []),
            env=env,
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    (folder / "built").touch()


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def replay_once(date: str) -> dict:
    """One replay of ``date`` in this process (BANKANOM_DATA_DIR names the demo's data)."""
    from bankanom_pipeline import settings
    from bankanom_pipeline.detection.scoring import IF, LOF
    from bankanom_pipeline.detection.sources import LOGS
    from bankanom_pipeline.online import replay as work
    from bankanom_pipeline.online.engine import OnlineEngine
    from bankanom_pipeline.warehouse import store

    began = time.perf_counter()
    with store.from_settings().reading() as con:
        stored = work.read_day(con, date)
    read_seconds = time.perf_counter() - began
    # the model versions that scored the day, as `bankanom replay` loads them
    versions = {
        IF: stored.scores["if_version"].unique().to_list(),
        LOF: stored.scores["lof_version"].unique().to_list(),
    }
    if any(len(v) != 1 for v in versions.values()):
        raise SystemExit(f"the day was scored by several model versions: {versions}")
    registry = LOGS.registry(settings.models_dir())
    detectors = {name: registry.load(v[0]) for name, v in versions.items()}
    gc.collect()
    rss_before = rss_bytes()
    cpu_began, began = time.process_time(), time.perf_counter()
    engine = OnlineEngine()
    # replay times the engine and the scoring by the clock; on a shared core the process gets a share
    # of it, so their CPU seconds are taken here too, around the same two calls
    cpu_of: dict[str, float] = {}
    # (replay feeds the engine the stored frame: ingest_frame; the Python engine took Events: ingest_many)
    for name in ("ingest_frame", "ingest_many"):
        if hasattr(engine, name):
            setattr(engine, name, cpu_timed(getattr(engine, name), "engine", cpu_of))
    work._score = cpu_timed(work._score, "scoring", cpu_of)
    report = work.run(stored, date, detectors, LOGS.config, engine)
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    del stored
    gc.collect()
    rss_after = rss_bytes()
    out = report.to_dict()
    ingested = out["warmup_events"] + out["day_events"]
    scored = out["scored_compared"]

    def rate(engine_s: float, scoring_s: float) -> float:
        return 1 / (engine_s / ingested + (scoring_s / scored if scored else 0))

    return {
        # CPU seconds: what one core does when it is the process's alone
        "events_per_second_one_core": rate(cpu_of["engine"], cpu_of.get("scoring", 0)),
        "events_per_second_wall": rate(out["engine_seconds"], out["scoring_seconds"]),
        "engine_cpu_seconds": cpu_of["engine"],
        "scoring_cpu_seconds": cpu_of.get("scoring", 0.0),
        "replay_events_per_second": out[
            "events_per_second"
        ],  # replay's own: all ingested / (engine + scoring)
        "ingested_events": ingested,
        "day_events": out["day_events"],
        "warmup_events": out["warmup_events"],
        "engine_seconds": out["engine_seconds"],
        "scoring_seconds": out["scoring_seconds"],
        "read_seconds": read_seconds,
        "run_wall_seconds": wall,  # engine, scoring, the event objects and the comparisons
        "run_cpu_seconds": cpu,
        "agrees": out["agrees"],
        "feature_equal_share": out["feature_equal_share"],
        "score_equal_share": out["score_equal_share"],
        "compared": out["compared"],
        "scored_compared": out["scored_compared"],
        "only_in_features_events": out["only_in_features_events"],
        "only_in_engine": out["only_in_engine"],
        "feature_mismatches": {k: v for k, v in out["feature_mismatches"].items() if v},
        "score_mismatches": {k: v for k, v in out["score_mismatches"].items() if v},
        "worst_feature_mismatches": out["worst_feature_mismatches"],
        "worst_score_mismatches": out["worst_score_mismatches"],
        "engine_outcomes": out["engine_outcomes"],
        "state_bytes": engine.memory_bytes(),
        "entities": engine.entity_counts() if hasattr(engine, "entity_counts") else None,
        "rss_before_gib": rss_before / 2**30,
        "rss_after_gib": rss_after / 2**30,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def checkpoint_state(data: Path) -> dict:
    """The engine state the demo's snapshot publication left (its checkpoint: the day's last 24 hours),
    restored in this process: its size per entity kind without replaying the day."""
    from bankanom_pipeline.online.engine import OnlineEngine

    current = json.loads((data / "snapshots" / "current.json").read_text())
    gc.collect()
    before = rss_bytes()
    began = time.process_time()
    engine = OnlineEngine.restore(data / "snapshots" / current["checkpoint"]["file"])
    took = time.process_time() - began
    gc.collect()
    return {
        "checkpoint": current["checkpoint"],
        "restore_cpu_seconds": took,
        "state_bytes": engine.memory_bytes(),
        "entities": engine.entity_counts(),
        "rss_growth_gib": (rss_bytes() - before) / 2**30,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def cpu_timed(fn, name: str, into: dict[str, float]):
    def timed(*args, **kwargs):
        began = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.process_time() - began

    return timed


def sql_once(database: Path, date: str, scratch: Path) -> dict:
    """The day's feature models on a copy of the demo's warehouse, DuckDB at one thread."""
    import datetime as dt

    scratch.mkdir(parents=True, exist_ok=True)
    work = scratch / "features.duckdb"
    shutil.copy(database, work)
    try:
        con = _trees.connect(work)
        con.execute("SET threads = 1")
        events = con.execute(
            "SELECT count(*) FROM validated_logs WHERE partition_date = ?", [date]
        ).fetchone()[0]
        cpu_began, began = time.process_time(), time.perf_counter()
        _trees.features_through(con, dt.date.fromisoformat(date))
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
        con.close()
    finally:
        work.unlink(missing_ok=True)
    return {
        "events": events,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "events_per_second": events / wall,
        "events_per_cpu_second": events / cpu,
    }


def worker(kind: str, args) -> subprocess.CompletedProcess:
    data = args.data / "data"
    env = {**os.environ, "BANKANOM_DATA_DIR": str(data)}
    command = [
        "taskset",
        "-c",
        str(args.cpu),
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--date",
        args.date,
    ]
    command += ["--data", str(args.data)]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", type=Path, default=Path("/tmp/e/replay-full"), help="the demo's folder (built when missing)"
    )
    parser.add_argument("--date", default=DATE, help="the held-out day the demo detects on, replayed")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, help="the demo's events/s instead of its default (smoke tests)")
    parser.add_argument("--cpu", type=int, default=1, help="the core both workers are pinned to")
    parser.add_argument(
        "--state-only",
        action="store_true",
        help="only the state's size, from the demo's published checkpoint (no replay)",
    )
    parser.add_argument("--worker", choices=["replay", "sql"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "replay":
        print(json.dumps(replay_once(args.date)))
        return
    if args.worker == "sql":
        print(json.dumps(sql_once(args.data / "data" / "warehouse.duckdb", args.date, args.data / "scratch")))
        return
    build(args.data, args.date, args.rate)
    if args.state_only:
        record("replay_state", checkpoint_state(args.data / "data"))
        return
    runs: dict[str, list[dict]] = {"replay": [], "sql": []}
    for _ in range(args.rounds):
        for kind in ("replay", "sql"):
            load, pace = [round(x, 2) for x in os.getloadavg()], machine_pace()
            done = worker(kind, args)
            result = json.loads(done.stdout.splitlines()[-1])
            runs[kind].append(result | {"load_before": load, "machine_pace_seconds": round(pace, 3)})
            print(
                json.dumps({"kind": kind, **result}), flush=True
            )  # whole: a cut-short run keeps its figures
    replay, sql = runs["replay"], runs["sql"]
    summary = {
        "date": args.date,
        "cpu": args.cpu,
        "median_replay_events_per_second_one_core": statistics.median(
            r["events_per_second_one_core"] for r in replay
        ),
        "median_engine_seconds": statistics.median(r["engine_seconds"] for r in replay),
        "median_scoring_seconds": statistics.median(r["scoring_seconds"] for r in replay),
        "median_replay_events_per_second_wall": statistics.median(
            r["events_per_second_wall"] for r in replay
        ),
        "median_engine_cpu_seconds": statistics.median(r["engine_cpu_seconds"] for r in replay),
        "median_scoring_cpu_seconds": statistics.median(r["scoring_cpu_seconds"] for r in replay),
        "median_sql_events_per_second": statistics.median(r["events_per_second"] for r in sql),
        "median_sql_events_per_cpu_second": statistics.median(r["events_per_cpu_second"] for r in sql),
        "median_sql_cpu_seconds": statistics.median(r["cpu_seconds"] for r in sql),
        "state_bytes": replay[-1]["state_bytes"],
        "feature_equal_share": [r["feature_equal_share"] for r in replay],
        "score_equal_share": [r["score_equal_share"] for r in replay],
        "runs": runs,
        "target": ">= 25,000 events/s on one core, features and scoring; state <= 1 GiB; 100% agreement",
    }
    record("replay", summary)


if __name__ == "__main__":
    main()
