"""The stream scorer's own cost: events per CPU-second of ``LiveScorer.process`` (validation, engine,
scoring with a default-config model pair, the store's commit), the commit's share, and one checkpoint.

Set-up, untimed: ``bankanom generate`` writes ``--warm + --events`` generated lines from a busy hour of
the default population; a model pair is trained with the default detection config on the engine's
features of the first ``--warm`` lines and promoted; a fresh scorer takes those ``--warm`` lines (the
state warms up). Timed, on one core (``--cpu``): the next ``--events`` lines in batches of ``--batch``,
as the runner hands them over; then one checkpoint of the state. Prints one JSON object, with each
batch's wall and CPU (p50 / p99 / max) and the scorer's timings (stages, the collector's pauses).

``--data-dir`` (a ``bankanom demo`` folder): its promoted pair instead, and the scorer restores its
snapshot's published engine state first, as the stream does on a first start (a default day's state:
the large heap whose full garbage collections stalled the stream); ``--incidents`` keeps the live
incidents too. ``--no-freeze`` and ``--wal-in-commit`` give the scorer as it was before those fixes
(docs/live.md#lag-and-latency), for a comparison in the same conditions.

    .venv/bin/python bench/stream_process_bench.py --events 50000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson


def lines(landing: Path) -> list[bytes]:
    found = [line for p in sorted(landing.rglob("*.jsonl")) for line in p.read_bytes().splitlines() if line]
    return sorted(found, key=lambda line: orjson.loads(line)["timestamp"])


def promote_pair(models: Path, warm: list[bytes]) -> dict:
    import numpy as np
    import polars as pl

    from bankanom_pipeline.detection.config import MODEL_NAMES, default_detection_config
    from bankanom_pipeline.detection.models import TRAINERS
    from bankanom_pipeline.detection.registry import Registry
    from bankanom_pipeline.detection.space import FeatureSpace
    from bankanom_pipeline.live.lines import Refused, from_line
    from bankanom_pipeline.online.engine import FEATURES, OnlineEngine

    engine, rows = OnlineEngine(), []
    for line in warm:
        try:
            outcome = engine.ingest(from_line(line))
        except Refused:
            continue
        if outcome.features is not None:
            rows.append(outcome.features)
    frame = pl.DataFrame(np.asarray(rows, dtype=np.float64), schema=list(FEATURES), orient="row")
    config = default_detection_config()
    registry = Registry(models)
    versions = {}
    for name in MODEL_NAMES:
        space = FeatureSpace.fit(
            frame, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
        )
        detector = TRAINERS[name](space.matrix(frame), space, config)
        versions[name] = registry.save(
            detector, params={}, window=("bench", "bench"), rows=frame.height, metrics={}
        ).version
    return registry.promote(versions)


def _quantiles(values: list[float]) -> dict:
    ordered = sorted(values)
    at = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)  # noqa: E731
    return {"n": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--warm", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core (default: not pinned)")
    parser.add_argument("--start", default="2026-01-06T09:00:00")
    parser.add_argument("--data-dir", type=Path, help="a demo's data folder: its models and published state")
    parser.add_argument("--incidents", action="store_true", help="keep live incidents, as the stream does")
    parser.add_argument("--no-freeze", action="store_true", help="no gc.freeze of the state")
    parser.add_argument(
        "--wal-in-commit", action="store_true", help="SQLite's WAL checkpoints in the commits"
    )
    args = parser.parse_args()

    from bankanom_pipeline.live.scorer import LiveScorer
    from bankanom_pipeline.live.sources import Item

    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        root = Path(tmp)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bankanom_pipeline.cli",
                "generate",
                "--start",
                args.start,
                "--events",
                str(args.warm + args.events),
                "--landing",
                str(root / "landing"),
            ],
            check=True,
            capture_output=True,
        )
        generated = lines(root / "landing")
        warm, timed = generated[: args.warm], generated[args.warm : args.warm + args.events]
        if args.data_dir is None:
            models, snapshots = root / "models", root / "snapshots"
            versions = promote_pair(models, warm)
        else:
            models, snapshots = args.data_dir / "models", args.data_dir / "snapshots"
            versions = json.loads((models / "current.json").read_text())
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        incidents = None
        if args.incidents:
            from bankanom_pipeline.live.incidents import LiveIncidents

            incidents = LiveIncidents()
        scorer = LiveScorer(
            root / "live",
            models,
            snapshots,
            checkpoint_events=10**9,
            incidents=incidents,
            freeze_state=not args.no_freeze,
            wal_checkpoint_every_s=None if args.wal_in_commit else 1.0,
        )
        items = [Item(f"1:{i}", line, None) for i, line in enumerate(generated)]
        for i in range(0, args.warm, args.batch):
            scorer.process(items[i : i + args.batch], "mock")
        commit_cpu = [0.0]
        real_commit = scorer.store.commit

        def timed_commit(*a, **k):
            began = time.process_time()
            try:
                return real_commit(*a, **k)
            finally:
                commit_cpu[0] += time.process_time() - began

        scorer.store.commit = timed_commit
        load = os.getloadavg()[0]
        cpu, wall = time.process_time(), time.perf_counter()
        batch_wall, batch_cpu = [], []
        for i in range(args.warm, args.warm + len(timed), args.batch):
            began, began_cpu = time.perf_counter(), time.thread_time()
            scorer.process(items[i : i + args.batch], "mock")
            batch_wall.append(time.perf_counter() - began)
            batch_cpu.append(time.thread_time() - began_cpu)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        scorer.store.commit = real_commit
        checkpoint_cpu = time.process_time()
        scorer.checkpoint()
        checkpoint_cpu = time.process_time() - checkpoint_cpu
        status = scorer.status()
        checkpoint = next((root / "live").glob("engine-*.ckpt"))
        store_bytes = sum(p.stat().st_size for p in (root / "live").glob("live.sqlite*"))
        scorer.close(checkpoint=False)
        print(
            json.dumps(
                {
                    "events": len(timed),
                    "batch": args.batch,
                    "models": versions,
                    "cpu_s": round(cpu, 2),
                    "wall_s": round(wall, 2),
                    "events_per_cpu_s": round(len(timed) / cpu),
                    "cpu_ms_per_1000_events": round(cpu / len(timed) * 1e6, 1),
                    "commit_share_of_cpu": round(commit_cpu[0] / cpu, 3),
                    "checkpoint": {
                        "events_stored": status["events"],
                        "cpu_s": round(checkpoint_cpu, 2),
                        "bytes": checkpoint.stat().st_size,
                    },
                    "store_bytes_per_event": round(store_bytes / status["events"]),
                    "refused": status["refused"],
                    "load_average_before": load,
                    "load_average_after": os.getloadavg()[0],
                    "restored_from": status["restored_from"],
                    "freeze": not args.no_freeze,
                    "wal_in_commit": args.wal_in_commit,
                    "batch_wall_s": _quantiles(batch_wall),
                    "batch_cpu_s": _quantiles(batch_cpu),
                    "timings": status["timings"],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
