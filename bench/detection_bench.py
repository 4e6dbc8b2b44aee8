"""Train both detectors, score every event of a day and build its incidents: wall time per stage and
peak memory, for days of N generated events.

Each size is generated and built up to features_events once (not timed, see pipeline_bench.py); then
each repetition runs in a fresh process on a copy of that warehouse: train IF, train LOF (on its
documented subsample), score all events with both in batches (as scored_events does), read the
flagged ones back and group them into incidents (with per-feature attribution of each reported
incident's top events). Median over the runs; growth is
reported as seconds per million events at each size.
"""

from __future__ import annotations

import argparse
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
import _trees
from _common import record
from pipeline_bench import DAY, generate

SCORE_COLUMNS = ["event_id", "if_score", "lof_score", "ensemble_score"]


def build_features(root: Path, landing: Path) -> None:
    """raw -> validated -> features_events (and only the SQL models it needs: the transaction models
    read tables this day does not have)."""
    from bankanom_pipeline.ingest.raw_logs import load_partition

    con = _trees.connect(root / "w.duckdb")
    load_partition(con, landing / "logs", DAY)
    _trees.validate(con, DAY)
    _trees.features_through(con, DAY)
    con.close()


def run_once(root: Path) -> dict:
    import polars as pl

    from bankanom_pipeline.detection import training
    from bankanom_pipeline.detection.config import default_detection_config
    from bankanom_pipeline.detection.incidents import build_incidents
    from bankanom_pipeline.detection.registry import Registry
    from bankanom_pipeline.detection.scoring import deviations, explain, score_batches
    from bankanom_pipeline.warehouse.frames import read_batches, read_frame

    work = root / "run.duckdb"
    shutil.copy(root / "w.duckdb", work)
    con = _trees.connect(work)
    config = default_detection_config()
    shutil.rmtree(root / "models", ignore_errors=True)  # the previous run's versions
    registry = Registry(root / "models")
    day = DAY.isoformat()
    timings, cpu = {}, {}
    began, began_cpu = time.perf_counter(), time.process_time()
    mark, mark_cpu = began, began_cpu

    def lap(stage: str) -> None:
        nonlocal mark, mark_cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        timings[stage], cpu[stage] = now - mark, now_cpu - mark_cpu
        mark, mark_cpu = now, now_cpu

    detectors = {}
    for name in ("isolation_forest", "local_outlier_factor"):
        detectors[name] = training.train(con, registry, name, config, day).detector
        lap(f"train_{name}")
    # as the scored_events asset does: the day in batches, ids and scores kept
    id_columns = _trees.scored_id_columns()
    columns = ", ".join(dict.fromkeys([*id_columns, *config.feature_names]))
    batches = read_batches(
        con,
        f"SELECT {columns} FROM features_events WHERE partition_date = ?",
        [day],
        config.scoring.chunk_rows,
    )
    scored = score_batches(batches, detectors, config, id_columns)
    lap("score")
    # as the incidents asset does: the flagged events' features read back
    con.register("_flagged", scored.filter(pl.col("is_anomaly")).select(SCORE_COLUMNS).to_arrow())
    flagged = read_frame(
        con,
        """SELECT s.if_score, s.lof_score, s.ensemble_score, f.* FROM _flagged s
           JOIN features_events f USING (event_id) WHERE f.partition_date = ? ORDER BY f.ts, f.event_id""",
        [day],
    )
    space = detectors["isolation_forest"].space
    incidents, _ = build_incidents(
        flagged,
        deviations(flagged, detectors),
        space.names,
        lambda rows: explain(flagged[rows], detectors),
        normals=_trees.normal_values(space),
    )
    lap("incidents")
    timings["total"], cpu["total"] = time.perf_counter() - began, time.process_time() - began_cpu
    con.close()
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {
        "events": scored.height,
        "flagged": flagged.height,
        "incidents": incidents.height,
        "seconds": timings,
        # CPU seconds of all threads next to wall time: on a shared machine wall also measures the neighbours
        "cpu_seconds": cpu,
        "peak_rss_gib": peak_gib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, nargs="+", default=[250_000, 1_000_000, 4_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep each size's generated day under KEEP/<events> and each tree's built warehouse under "
        "KEEP/<events>/<tree>, and reuse them (for old/new comparisons: compare.py)",
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_once(args.worker)))
        return
    sizes = []
    for events in args.events:
        # with --keep: the generated day is shared by the trees compare.py alternates (the same input),
        # each tree's warehouse built by its own code under KEEP/<events>/<tree>
        shared = args.keep / str(events) if args.keep else None
        root = (
            shared / _trees.tree_tag()
            if shared
            else Path(tempfile.mkdtemp(prefix="bankanom-detection-bench-"))
        )
        landing = shared / "landing" if shared else root / "landing"
        try:
            if not (root / "built").exists():
                if not (landing / "complete").exists():
                    shutil.rmtree(landing, ignore_errors=True)
                    generate(events, root, landing=landing)
                    (landing / "complete").touch()
                root.mkdir(parents=True, exist_ok=True)
                (root / "w.duckdb").unlink(missing_ok=True)
                build_features(root, landing)
                if not shared:
                    shutil.rmtree(landing)  # the JSONL is not read again: disk for the 4M day
                (root / "built").touch()
            runs = [
                json.loads(
                    subprocess.run(
                        [sys.executable, __file__, "--worker", str(root)],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout.splitlines()[-1]
                )
                for _ in range(args.runs)
            ]
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        stages = {s: statistics.median(r["seconds"][s] for r in runs) for s in runs[0]["seconds"]}
        cpu = {s: statistics.median(r["cpu_seconds"][s] for r in runs) for s in runs[0]["cpu_seconds"]}
        sizes.append(
            {
                "events": runs[0]["events"],
                "flagged": runs[0]["flagged"],
                "incidents": runs[0]["incidents"],
                "median_seconds": stages,
                "median_cpu_seconds": cpu,
                "seconds_per_million": stages["total"] / (runs[0]["events"] / 1e6),
                "max_peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
                "runs_cpu_seconds": [round(r["cpu_seconds"]["total"], 2) for r in runs],
                "runs": args.runs,
            }
        )
        print(json.dumps(sizes[-1]), flush=True)
    record("detection", {"sizes": sizes, "target": "train both + score 1M + incidents <= 40 s"})


if __name__ == "__main__":
    main()
