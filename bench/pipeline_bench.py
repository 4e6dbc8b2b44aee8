"""raw -> validated -> features for one day of N generated events: wall time per stage and peak memory.

Each size is generated once (not timed), then the pipeline runs in a fresh process per repetition so
that peak RSS belongs to the pipeline alone. Median over the runs; growth is reported as seconds per
million events at each size (flat = linear).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _trees
from _common import machine_pace, record

DAY = dt.date(2026, 1, 5)
PREVIOUS_DAY = DAY - dt.timedelta(days=1)


def generate(
    events: int, root: Path, days: tuple[dt.date, ...] = (DAY,), landing: Path | None = None
) -> None:
    """One day: exactly ``events`` mock events from its midnight, at a rate that fits them in the day
    (one partition measured). More days: each day's 24 hours at that rate (a weekday holds about
    ``events``, the Sunday before ``DAY`` ~0.8 of it; counted from ``events`` lines, that day's traffic
    runs into the next), under its own traffic seed (the config's, then +1 ...) and the same bank's
    customers every day, as `bankanom demo` writes them (a day's lookback reads the same people)."""
    from bankanom_pipeline.generator.config import load_config
    from bankanom_pipeline.generator.engine import Generator
    from bankanom_pipeline.generator.writer import write_range

    config = load_config()
    rate = events / 86_400 / 1.25
    config = config.model_copy(
        update={"log_generation": config.log_generation.model_copy(update={"logs_per_second": rate})}
    )
    logs = (landing or root / "landing") / "logs"
    if len(days) == 1:
        start = int(dt.datetime.combine(days[0], dt.time(), dt.UTC).timestamp())
        write_range(Generator(config), logs, start, events=events, chunk_s=6 * 3600)
        return
    customers = config.population.model_copy(update={"seed": config.customer_seed})
    config = config.model_copy(update={"population": customers})
    for offset, day in enumerate(days):
        start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
        seeded = config.model_copy(update={"seed": config.seed + offset})
        write_range(Generator(seeded), logs, start, end_s=start + 86_400, chunk_s=6 * 3600)


def build_day(database: Path, landing: Path, day: dt.date) -> None:
    """raw -> validated -> features of ``day`` into ``database`` (untimed set-up: a previous day)."""
    con = _trees.connect(database)
    load_partition_of(con, landing, day)
    _trees.validate(con, day)
    _trees.features_through(con, day)
    con.close()


def load_partition_of(con, landing: Path, day: dt.date):
    from bankanom_pipeline.ingest.raw_logs import load_partition

    return load_partition(con, landing / "logs", day)


def run_once(root: Path, publish: bool = False, base: Path | None = None) -> dict:
    """The day through raw -> validated -> features in this process; ``base``: a warehouse holding the
    previous day already, copied first (untimed), so the lookback windows read it as a run does."""
    landing = Path(os.environ.get("BANKANOM_BENCH_LANDING", root / "landing"))
    database = root / "w.duckdb"
    database.unlink(missing_ok=True)
    if base is not None:
        shutil.copy(base, database)
    shutil.rmtree(root / "published", ignore_errors=True)
    con = _trees.connect(database)
    if publish:  # what a run's steps do: each committed partition also written as Parquet for readers
        _trees.publish(con, root / "published")
    timings = {}
    began = time.perf_counter()
    counts = load_partition_of(con, landing, DAY)
    timings["raw"] = time.perf_counter() - began
    mark = time.perf_counter()
    _trees.validate(con, DAY)
    timings["validated"] = time.perf_counter() - mark
    mark = time.perf_counter()
    _trees.features_through(con, DAY)
    timings["features"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - began
    con.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds next to wall time: on a shared machine wall time also measures the neighbours
    return {
        "events": counts.lines_read,
        "seconds": timings,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_gib": usage.ru_maxrss / 1024**2,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, nargs="+", default=[250_000, 1_000_000, 4_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--publish",
        choices=["on", "off", "both"],
        default="on",
        help="publish the tables for readers as runs do; both: alternate off and on, report each",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="keep each size's generated days under DATA/<events> and reuse them (compare.py: the same "
        "input for both trees; each tree's built previous day under DATA/<events>/<tree>)",
    )
    parser.add_argument(
        "--previous-day",
        action="store_true",
        help="generate the day before too and build it untimed first: the day's lookback windows then "
        "read it, as in a daily run (without: the day alone, the earlier figures' case)",
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--landing", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build-base", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_base:
        build_day(args.build_base, args.landing, PREVIOUS_DAY)
        return
    if args.worker:
        os.environ["BANKANOM_BENCH_LANDING"] = str(args.landing or args.worker / "landing")
        print(json.dumps(run_once(args.worker, args.publish == "on", args.base)))
        return
    if args.publish == "both":
        compare_publishing(args.events, args.runs)
        return
    sizes = []
    days = (PREVIOUS_DAY, DAY) if args.previous_day else (DAY,)
    for events in args.events:
        root = (
            args.data / str(events)
            if args.data
            else Path(tempfile.mkdtemp(prefix="bankanom-pipeline-bench-"))
        )
        try:
            landing = root / ("landing-2d" if args.previous_day else "landing")
            if not (landing / "complete").exists():
                shutil.rmtree(landing, ignore_errors=True)
                generate(events, root, days, landing)
                (landing / "complete").touch()
            work = root / _trees.tree_tag() if args.data else root
            work.mkdir(parents=True, exist_ok=True)
            base = None
            if args.previous_day:
                base = work / "previous-day.duckdb"
                if not base.exists():
                    partial = work / "previous-day.partial.duckdb"
                    partial.unlink(missing_ok=True)
                    subprocess.run(
                        [sys.executable, __file__, "--build-base", str(partial), "--landing", str(landing)],
                        check=True,
                    )
                    partial.rename(base)
            runs = []
            for _ in range(args.runs):
                # timed here, just before the run, not in the worker: its CPU seconds and peak memory
                # are the pipeline's alone
                pace = machine_pace()
                command = [sys.executable, __file__, "--worker", str(work), "--landing", str(landing)]
                command += ["--publish", args.publish] + (["--base", str(base)] if base else [])
                worker = subprocess.run(command, check=True, capture_output=True, text=True)
                runs.append(json.loads(worker.stdout.splitlines()[-1]) | {"machine_pace_seconds": pace})
        finally:
            if not args.data:
                shutil.rmtree(root, ignore_errors=True)
        stages = {s: statistics.median(r["seconds"][s] for r in runs) for s in runs[0]["seconds"]}
        sizes.append(
            {
                "events": runs[0]["events"],
                "previous_day": args.previous_day,
                "publish": args.publish,
                "median_seconds": stages,
                "seconds_per_million": stages["total"] / (runs[0]["events"] / 1e6),
                "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
                "max_peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
                # per run, in order: (total seconds, machine_pace seconds) to see slow stretches
                "runs_total_and_pace": [
                    (round(r["seconds"]["total"], 2), round(r["machine_pace_seconds"], 2)) for r in runs
                ],
                "runs_cpu_seconds": [round(r["cpu_seconds"], 2) for r in runs],
                "runs": args.runs,
            }
        )
        print(json.dumps(sizes[-1]), flush=True)
    record("pipeline", {"sizes": sizes, "target": "1M events <= 20 s and <= 3 GiB"})


def compare_publishing(sizes: list[int], runs: int) -> None:
    """The cost of publishing: runs without and with it, alternated on the same generated day."""
    for events in sizes:
        root = Path(tempfile.mkdtemp(prefix="bankanom-publish-bench-"))
        try:
            generate(events, root)
            results = {"off": [], "on": []}
            for _ in range(runs):
                for mode in ("off", "on"):
                    worker = subprocess.run(
                        [sys.executable, __file__, "--worker", str(root), "--publish", mode],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    results[mode].append(json.loads(worker.stdout.splitlines()[-1]))
            published_bytes = sum(p.stat().st_size for p in (root / "published").rglob("*.parquet"))
        finally:
            shutil.rmtree(root, ignore_errors=True)
        cpu = {mode: statistics.median(r["cpu_seconds"] for r in rs) for mode, rs in results.items()}
        wall = {mode: statistics.median(r["seconds"]["total"] for r in rs) for mode, rs in results.items()}
        summary = {
            "events": results["on"][0]["events"],
            "median_cpu_seconds": cpu,
            "median_wall_seconds": wall,
            "cpu_ratio_on_over_off": cpu["on"] / cpu["off"],
            "wall_ratio_on_over_off": wall["on"] / wall["off"],
            "published_mib": published_bytes / 2**20,
            "runs_cpu_off_on": [
                (round(a["cpu_seconds"], 2), round(b["cpu_seconds"], 2))
                for a, b in zip(*results.values(), strict=True)
            ],
        }
        print(json.dumps(summary), flush=True)
        record("pipeline_publishing", summary)


if __name__ == "__main__":
    main()
