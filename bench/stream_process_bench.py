"""The stream scorer's own cost: events per CPU-second of ``LiveScorer.process`` (validation, engine,
scoring with a default-config model pair, the store's commit), the commit's share, and one checkpoint.

Set-up, untimed: ``bankanom generate`` writes ``--warm + --events`` generated lines from a busy hour of
the default population; a model pair is trained with the default detection config on the engine's
features of the first ``--warm`` lines and promoted; a fresh scorer takes those ``--warm`` lines (the
state warms up). Timed, on one core (``--cpu``): the next ``--events`` lines in batches of ``--batch``,
as the runner hands them over; then one checkpoint of the state. Prints one JSON object.

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--warm", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core (default: not pinned)")
    parser.add_argument("--start", default="2026-01-06T09:00:00")
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
        versions = promote_pair(root / "models", warm)
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        scorer = LiveScorer(root / "live", root / "models", root / "snapshots", checkpoint_events=10**9)
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
        for i in range(args.warm, args.warm + len(timed), args.batch):
            scorer.process(items[i : i + args.batch], "mock")
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
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
