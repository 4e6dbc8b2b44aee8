"""raw -> validated -> features for one day of N generated events: wall time per stage and peak memory.

Each size is generated once (not timed), then the pipeline runs in a fresh process per repetition so
that peak RSS belongs to the pipeline alone. Median over the runs; growth is reported as seconds per
million events at each size (flat = linear).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_pace, record

DAY = dt.date(2026, 1, 5)


def generate(events: int, root: Path) -> None:
    from bankanom_pipeline.generator.config import load_config
    from bankanom_pipeline.generator.engine import Generator
    from bankanom_pipeline.generator.writer import write_range

    config = load_config()
    # squeeze N events into the one day so the benchmark measures one partition
    rate = events / 86_400 / 1.25
    config = config.model_copy(
        update={"log_generation": config.log_generation.model_copy(update={"logs_per_second": rate})}
    )
    start = int(dt.datetime.combine(DAY, dt.time(), dt.UTC).timestamp())
    write_range(Generator(config), root / "landing" / "logs", start, events=events, chunk_s=6 * 3600)


def upstream(project, target: str) -> list[str]:
    """``target`` and the models it needs, in build order (the project also holds transaction models)."""
    needed, stack = set(), [target]
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(project.models[name].refs)
    return [name for name in project.order if name in needed]


def run_once(root: Path, publish: bool = False) -> dict:
    from bankanom_pipeline.defs.validation.gx import GX
    from bankanom_pipeline.generator.config import load_config
    from bankanom_pipeline.ingest.raw_logs import load_partition
    from bankanom_pipeline.sqlmodels.runner import Project
    from bankanom_pipeline.validation.logs import validate_partition
    from bankanom_pipeline.warehouse import published
    from bankanom_pipeline.warehouse.store import EmbeddedWarehouse

    database = root / "w.duckdb"
    database.unlink(missing_ok=True)
    shutil.rmtree(root / "published", ignore_errors=True)
    con = EmbeddedWarehouse(database).connect()
    if publish:  # what a run's steps do: each committed partition also written as Parquet for readers
        published.attach(con, root / "published")
    timings = {}
    began = time.perf_counter()
    counts = load_partition(con, root / "landing" / "logs", DAY)
    timings["raw"] = time.perf_counter() - began
    mark = time.perf_counter()
    validate_partition(con, DAY, load_config().service_sources, GX)
    timings["validated"] = time.perf_counter() - mark
    mark = time.perf_counter()
    project = Project()
    for name in upstream(project, "features_events"):
        project.materialize(con, name, DAY if project.models[name].partitioned else None)
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
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_once(args.worker, args.publish == "on")))
        return
    if args.publish == "both":
        compare_publishing(args.events, args.runs)
        return
    sizes = []
    for events in args.events:
        root = Path(tempfile.mkdtemp(prefix="bankanom-pipeline-bench-"))
        try:
            generate(events, root)
            runs = []
            for _ in range(args.runs):
                # timed here, just before the run, not in the worker: its CPU seconds and peak memory
                # are the pipeline's alone
                pace = machine_pace()
                worker = subprocess.run(
                    [sys.executable, __file__, "--worker", str(root), "--publish", args.publish],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs.append(json.loads(worker.stdout.splitlines()[-1]) | {"machine_pace_seconds": pace})
        finally:
            shutil.rmtree(root, ignore_errors=True)
        stages = {s: statistics.median(r["seconds"][s] for r in runs) for s in runs[0]["seconds"]}
        sizes.append(
            {
                "events": runs[0]["events"],
                "median_seconds": stages,
                "seconds_per_million": stages["total"] / (runs[0]["events"] / 1e6),
                "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
                "max_peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
                # per run, in order: (total seconds, machine_pace seconds) to see slow stretches
                "runs_total_and_pace": [
                    (round(r["seconds"]["total"], 2), round(r["machine_pace_seconds"], 2)) for r in runs
                ],
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
