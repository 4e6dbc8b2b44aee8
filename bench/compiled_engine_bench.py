"""The compiled online engine (online/compiled.py, prepare.py, kernel/), beside the Python engine it replaced
(``--python-tree``), on the same stored day: CPU microseconds per event on one core, its prepare and its
kernel apart, and the compiled engine's agreement with ``features_events``.

Each round runs fresh processes pinned to one core (``--cpu``, ``taskset``), alternated: ``compiled``
and (with ``--python-tree``) ``python``. Each reads the day and the previous day's last 24 hours from the
warehouse (read-only, untimed) and ingests every event in ``(ts, event_id)`` order into a fresh engine:

- ``compiled``: batches of 65,536 rows of the frame as read (metrics as JSON text); CPU seconds of prepare
  (polars/numpy, JSON decoding included) and of the kernel, per event. The numba functions are loaded
  (or compiled) before the clock starts, on a throwaway engine, and that time is reported apart. Then its
  vectors of the day are compared with ``features_events`` by replay's comparison (untimed);
- ``python`` (with ``--python-tree``, a tree from before the compiled engine replaced the Python one):
  that tree's ``OnlineEngine.ingest_many`` over ``Event``s made from the same rows; the making of the
  ``Event``s (JSON decoding of metrics included) is not timed, as its ``bankanom replay`` did not.

``--compile-only``: numba's compile time, a first process with an empty cache (``NUMBA_CACHE_DIR`` a
fresh folder) and a second one reading that cache. Each run's load average is kept beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import record

DATE = "2026-01-06"
CHUNK = 65_536


def _read(warehouse: str, date: str, limit: int | None):
    import duckdb

    from bankanom_pipeline.online import replay

    con = duckdb.connect(warehouse, read_only=True)
    try:
        stored = replay.read_day(con, date)
    finally:
        con.close()
    if limit:
        stored.events = stored.events.slice(stored.events.height - limit, limit)
    return stored


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def compiled_once(warehouse: str, date: str, limit: int | None) -> dict:
    import numpy as np
    import polars as pl

    from bankanom_pipeline.online import replay
    from bankanom_pipeline.online.compiled import CompiledEngine
    from bankanom_pipeline.online.schema import FEATURES

    load_before = _load()
    began, cpu = time.perf_counter(), time.process_time()
    stored = _read(warehouse, date, limit)
    read_s = time.perf_counter() - began
    # load (or compile) the kernel before the clock: a throwaway engine, one event
    began, cpu = time.perf_counter(), time.process_time()
    CompiledEngine().ingest_frame(stored.events.slice(0, 1))
    load_kernel = {"wall_s": time.perf_counter() - began, "cpu_s": time.process_time() - cpu}
    engine = CompiledEngine()
    frame = stored.events
    prepare = kernel = 0.0
    ids, blocks = [], []
    day_ids = stored.day_ids
    for start in range(0, frame.height, CHUNK):
        batch = engine.ingest_frame(frame.slice(start, CHUNK))
        prepare += engine.prepare_seconds
        kernel += engine.kernel_seconds
        keep = [
            i
            for i, (s, e) in enumerate(zip(batch.status, batch.event_ids, strict=True))
            if s == 0 and e in day_ids
        ]
        ids += [batch.event_ids[i] for i in keep]
        blocks.append(batch.features[keep])
    n = frame.height
    load_after = _load()
    mine = pl.DataFrame({"event_id": pl.Series(ids, dtype=pl.String)}).with_columns(
        pl.from_numpy(np.concatenate(blocks), schema=list(FEATURES), orient="row")
    )
    report = replay.Report(day=date)
    report.day_events = len(day_ids)
    if stored.features.height and not limit:  # a cut stream has no warm-up: nothing to compare
        replay._compare_features(report, mine, stored.features)
    state = {
        name: int(getattr(engine, name).nbytes)
        for name in ("R", "RT", "RF", "T", "Q", "CL", "U", "UF", "S", "A", "N", "V", "VX", "VR")
    }
    return {
        "engine": "compiled",
        "events": n,
        "day_events": len(day_ids),
        "read_seconds": read_s,
        "kernel_load": load_kernel,
        "prepare_cpu_s": prepare,
        "kernel_cpu_s": kernel,
        "prepare_us_per_event": prepare / n * 1e6,
        "kernel_us_per_event": kernel / n * 1e6,
        "total_us_per_event": (prepare + kernel) / n * 1e6,
        "counters": engine.counters,
        "compared": report.compared,
        "only_in_features_events": report.only_stored,
        "only_in_engine": report.only_engine,
        "feature_equal_share": report.feature_share,
        "feature_mismatches": {k: v for k, v in report.per_feature.items() if v},
        "worst": [m.__dict__ for m in report.worst],
        "state_array_bytes": state,
        "distinct_counter_entries": len(engine.pairs),
        "retained_ids": len(engine.seen),
        "load_before": load_before,
        "load_after": load_after,
    }


def python_once(warehouse: str, date: str, limit: int | None) -> dict:
    from bankanom_pipeline.online import replay
    from bankanom_pipeline.online.engine import OnlineEngine

    load_before = _load()
    stored = _read(warehouse, date, limit)
    engine = OnlineEngine()
    spent = 0.0
    frame = stored.events
    for start in range(0, frame.height, CHUNK):
        events = replay.to_events(frame.slice(start, CHUNK))
        cpu = time.process_time()
        engine.ingest_many(events)
        spent += time.process_time() - cpu
    return {
        "engine": "python",
        "events": frame.height,
        "cpu_s": spent,
        "us_per_event": spent / frame.height * 1e6,
        "counters": dict(engine.counters),
        "load_before": load_before,
        "load_after": _load(),
    }


def compile_once() -> dict:
    """Import, then ``compiled.warm`` (every kernel function: events in order, a late one, a peek, both
    prepares): numba compiles, or reads its cache."""
    began, cpu = time.perf_counter(), time.process_time()
    from bankanom_pipeline.online import compiled

    imported = time.perf_counter() - began
    compiled.warm()
    return {
        "import_wall_s": imported,
        "wall_s": time.perf_counter() - began,
        "cpu_s": time.process_time() - cpu,
    }


def worker(kind: str, args, env: dict | None = None) -> dict:
    command = ["taskset", "-c", str(args.cpu), sys.executable, __file__, "--worker", kind]
    command += ["--warehouse", str(args.warehouse), "--date", args.date]
    if args.limit:
        command += ["--limit", str(args.limit)]
    done = subprocess.run(command, env=env or os.environ, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--warehouse", type=Path, required=True, help="a warehouse holding the day and the one before"
    )
    parser.add_argument("--date", default=DATE)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpu", type=int, default=1, help="the core the workers are pinned to")
    parser.add_argument("--limit", type=int, help="only the last N events (a short version)")
    parser.add_argument("--compile-only", action="store_true")
    parser.add_argument(
        "--python-tree",
        type=Path,
        help="a source tree whose OnlineEngine is the Python engine (main before the compiled engine "
        "replaced it): its ingest_many is run beside, alternated; without it, the compiled engine only",
    )
    parser.add_argument("--worker", choices=["compiled", "python", "compile"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "compiled":
        print(json.dumps(compiled_once(str(args.warehouse), args.date, args.limit)))
        return
    if args.worker == "python":
        print(json.dumps(python_once(str(args.warehouse), args.date, args.limit)))
        return
    if args.worker == "compile":
        print(json.dumps(compile_once()))
        return
    if args.compile_only:
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            first = worker("compile", args, env) | {"load": _load()}
            second = worker("compile", args, env) | {"load": _load()}
        record("compiled_engine_compile", {"empty_cache": first, "cached": second})
        return
    runs: dict[str, list[dict]] = {"compiled": [], "python": []}
    python_env = {**os.environ, "PYTHONPATH": str(args.python_tree)} if args.python_tree else None
    for _ in range(args.rounds):
        for kind in ("compiled", "python") if python_env else ("compiled",):
            result = worker(kind, args, python_env if kind == "python" else None)
            runs[kind].append(result)
            print(json.dumps(result), flush=True)  # whole: a cut-short run keeps its figures
    compiled, python = runs["compiled"], runs["python"]
    record(
        "compiled_engine",
        {
            "date": args.date,
            "cpu": args.cpu,
            "events": compiled[0]["events"],
            "median_compiled_us_per_event": statistics.median(r["total_us_per_event"] for r in compiled),
            "median_prepare_us_per_event": statistics.median(r["prepare_us_per_event"] for r in compiled),
            "median_kernel_us_per_event": statistics.median(r["kernel_us_per_event"] for r in compiled),
            "median_python_us_per_event": (
                statistics.median(r["us_per_event"] for r in python) if python else None
            ),
            "feature_equal_share": [r["feature_equal_share"] for r in compiled],
            "runs": runs,
            "target": "prepare + kernel <= 15 µs per event (25,000 events/s with scoring's 24.6 µs)",
        },
    )


if __name__ == "__main__":
    main()
