"""Shared helpers: repeat a measurement, report the median, keep a JSON record."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

# compare.py gives each run a folder of its own, so that two trees' runs of one script keep their records
RESULTS = Path(os.environ.get("BANKANOM_BENCH_RESULTS") or Path(__file__).parent / "results")


def repeat(fn: Callable[[], int], runs: int, setup: Callable[[], None] | None = None) -> dict:
    """Run ``fn`` (which returns an item count) ``runs`` times; median and spread of items/s.
    ``setup`` runs before each run, untimed (e.g. removing the previous run's output)."""
    rates, seconds = [], []
    for _ in range(runs):
        if setup is not None:
            setup()
        began = time.perf_counter()
        items = fn()
        took = time.perf_counter() - began
        seconds.append(took)
        rates.append(items / took)
    return {
        "items": items,
        "runs": runs,
        "median_seconds": statistics.median(seconds),
        "median_items_per_s": statistics.median(rates),
        "min_items_per_s": min(rates),
        "max_items_per_s": max(rates),
    }


def cpu() -> dict:
    """The processor the figures were taken on: machines of the same size differ (the same 1M
    transactions took 61 CPU-s on one 2-core machine and 41 on another), so a figure without its
    processor cannot be compared with another."""
    info = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in (info.read_text() if info.exists() else "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's
    return {
        "model": fields.get("model name") or platform.processor(),
        "family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "cores": os.cpu_count(),
        "avx512": "avx512f" in fields.get("flags", "").split(),
        "bogomips": fields.get("bogomips"),
    }


def machine_pace(rows: int = 100_000_000) -> float:
    """Seconds a fixed DuckDB aggregate takes on both cores, measured next to a run: the same 2-core
    machine ran the same pipeline in 19 s and in 24 s within an hour (CPU seconds up by as much, so the
    cores themselves were slower, not busy), and this figure moves with it, so runs can be told apart."""
    import duckdb

    con = duckdb.connect()
    began = time.perf_counter()
    con.execute(f"SELECT sum(hash(i) % 7) FROM range({rows}) t(i)").fetchone()
    took = time.perf_counter() - began
    con.close()
    return took


def record(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "bench": name,
        "machine": platform.machine(),
        "cpu": cpu(),
        "python": platform.python_version(),
        **result,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
