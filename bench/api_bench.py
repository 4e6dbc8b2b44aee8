"""The prediction API under load: a real uvicorn server over HTTP on loopback.

Scenarios (each repeated ``--runs`` times; medians reported):
- ``predict_1``: POST /predict with one event, 16 concurrent clients, closed loop, for ``--seconds``;
- ``predict_1_alone``: the same request from one client, sequential (latency without queueing);
- ``predict_1000``: POST /predict with a 1,000-event batch, one client, sequential;
- ``incidents``: GET /incidents (first page), 16 concurrent clients, closed loop.

The server serves a demo data folder (promoted models and a published snapshot): ``--data-dir``, or a
fresh ``bankanom demo --rate 1.5`` in a temporary folder (about three minutes). The load generator
runs in this process (asyncio + httpx) and shares the machine's cores with the server, as a sidecar
client would; its own cost is part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import record

from tests.api_server import accepted_lines, running_api

KEY = "bench-key"
H = {"X-API-Key": KEY}


def demo_data(folder: Path) -> Path:
    env = {**os.environ, "BANKANOM_DATA_DIR": str(folder / "data"), "DAGSTER_HOME": str(folder / "dh")}
    subprocess.run(
        [sys.executable, "-m", "bankanom_pipeline.cli", "demo", "--date", "2026-01-06", "--rate", "1.5"],
        env=env,
        check=True,
        capture_output=True,
    )
    return folder / "data"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(url: str, clients: int, seconds: float, request) -> dict:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=H, timeout=30, limits=limits) as client:
        for _ in range(clients):  # open the connections before the clock starts
            await client.get("/health")
        deadline = time.perf_counter() + seconds

        async def worker():
            nonlocal errors
            while time.perf_counter() < deadline:
                began = time.perf_counter()
                response = await request(client)
                latencies.append(time.perf_counter() - began)
                errors += response.status_code != 200

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        took = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / took,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


def sequential(url: str, count: int, request) -> dict:
    latencies, errors = [], 0
    with httpx.Client(base_url=url, headers=H, timeout=60) as client:
        request(client)  # warm-up
        for _ in range(count):
            began = time.perf_counter()
            response = request(client)
            latencies.append(time.perf_counter() - began)
            errors += response.status_code != 200
    return {
        "requests": count,
        "errors": errors,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, help="a data folder with promoted models and a snapshot")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bankanom-api-bench-") as tmp:
        data = args.data_dir or demo_data(Path(tmp))
        con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
        day = con.execute("SELECT max(partition_date) FROM scored_events").fetchone()[0].isoformat()
        events = accepted_lines(con, day, 1000)
        con.close()
        one = {"events": events[:1]}
        batch = {"events": events}
        runs: dict[str, list[dict]] = {
            "predict_1": [],
            "predict_1_alone": [],
            "predict_1000": [],
            "incidents": [],
        }
        env = {"BANKANOM_API_RATE_LIMIT": "1000000/second"}
        with running_api(data, KEY, Path(tmp) / "api.log", workers=args.workers, **env) as url:
            for _ in range(args.runs):
                runs["predict_1"].append(
                    asyncio.run(
                        closed_loop(url, args.clients, args.seconds, lambda c: c.post("/predict", json=one))
                    )
                )
                runs["predict_1_alone"].append(sequential(url, 50, lambda c: c.post("/predict", json=one)))
                runs["predict_1000"].append(sequential(url, 10, lambda c: c.post("/predict", json=batch)))
                runs["incidents"].append(
                    asyncio.run(closed_loop(url, args.clients, args.seconds, lambda c: c.get("/incidents")))
                )
    summary = {
        name: {metric: statistics.median(r[metric] for r in results) for metric in results[0]}
        for name, results in runs.items()
    }
    record(
        f"api_bench_w{args.workers}",
        {
            "workers": args.workers,
            "clients": args.clients,
            "seconds": args.seconds,
            "runs": runs,
            "median": summary,
        },
    )


if __name__ == "__main__":
    main()
