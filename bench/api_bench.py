"""The prediction API under load: a real uvicorn server over HTTP on loopback.

Scenarios (each repeated ``--runs`` times; medians reported):
- ``predict_1``: POST /predict with one event, ``--clients`` (16) connections, closed loop (each sends
  its next request when the previous one is answered) for ``--seconds``: saturation throughput;
- ``predict_1_paced``: the same request at a fixed offered load of ``--rate`` (300) req/s spread over
  the 16 connections (open loop; latency counted from the scheduled send time);
- ``predict_1_alone``: the same request from one client, sequential (latency without queueing);
- ``predict_1000``: POST /predict with a 1,000-event batch, one client, sequential;
- ``incidents`` / ``incidents_paced``: GET /incidents (first page), closed loop and paced, as above.

In a closed loop latency is queueing: p50 ~ clients / throughput (Little's law), so "p50 <= 10 ms at 16
clients" would need 1,600 req/s. The paced scenario is the reading under which the issue's three
numbers (300 req/s, p50 <= 10 ms, p99 <= 30 ms at 16 concurrent clients) can hold together.

The server serves a demo data folder (promoted models and a published snapshot): ``--data-dir``, or a
fresh ``bankanom demo --rate 1.5`` in a temporary folder (about three minutes), or with ``--keep`` one
built once per tree. Under ``compare.py``, ``--data-dir NAME=PATH`` gives tree NAME its own folder (two
commits of one feature set on the same demo, the yardstick on the one its own code built, ``--keep``). Since issue 25 the online
state is the live stream's: for a tree that has it, a ``bankanom stream --source none`` over the same
folder runs beside the API (restored from the snapshot's checkpoint), /predict with context asks it
over loopback HTTP, and its CPU is reported apart from the API's (``stream_cpu_ms``, ``api_cpu_ms``).
The load generator runs in this process and shares the machine's cores with the server, as a sidecar
client would: it is a small asyncio HTTP/1.1 client over keep-alive connections sending pre-built
requests, so its own cost (tens of microseconds per request) is small next to the server's. What it
loaded before the first request (DuckDB, the test helpers, the events) is frozen out of its collector's
sight: a full collection of that heap stopped its event loop for 60-170 ms, late sends the paced p99
then counted as the server's. The paced scenarios also report the client's own event-loop lag
(``client_lag_p99_ms``, ``client_lag_max_ms``: how late a 5 ms sleep wakes), so a stall of the load
generator shows beside the p99 it would inflate.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import inspect
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
# appended, not first: under compare.py the measured tree is on PYTHONPATH and its tests.api_server (and
# the API it starts) must be the ones imported, not this checkout's
sys.path.append(str(Path(__file__).resolve().parent.parent))
import _trees
from _common import record

from tests.api_server import accepted_lines, running_api

KEY = "bench-key"


def demo_data(folder: Path, rate: float = 1.5) -> Path:
    """A data folder built by ``bankanom demo`` of the tree imported (its own Dagster home)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BANKANOM_DATA_DIR": str(folder / "data"), "DAGSTER_HOME": str(folder / "dh")}
    command = [
        sys.executable,
        "-m",
        "bankanom_pipeline.cli",
        "demo",
        "--date",
        "2026-01-06",
        "--rate",
        str(rate),
    ]
    with open(folder / "demo.log", "w") as log:
        subprocess.run(command, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    return folder / "data"


def kept_demo_data(keep: Path) -> Path:
    """KEEP/<tree>'s demo data, built once by that tree's code (compare.py: each tree serves data its own
    pipeline wrote)."""
    folder = keep / _trees.tree_tag()
    if not (folder / "built").exists():
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        demo_data(folder)
        (folder / "built").touch()
    return folder / "data"


def chosen_data(specs: list[str]) -> Path | None:
    """The data folder ``--data-dir`` gives the tree measured (``NAME=PATH`` for compare.py's tree NAME,
    whose tag is ``NAME-<commit>``; a plain PATH for any tree), or None."""
    name = _trees.tree_tag().rsplit("-", 1)[0]
    plain = None
    for spec in specs:
        tree, sep, path = spec.partition("=")
        if not sep:
            plain = Path(spec)
        elif tree == name:
            return Path(path)
    return plain


def as_new(events: list[dict], after: dt.datetime) -> list[dict]:
    """The events as if they happened just after the served day (new ids, one millisecond apart from
    ``after`` + 1 s), their users, addresses and messages unchanged: what a live caller posts. An API
    that scores with each entity's state then reads the state the day left; the stored events
    themselves are already in it, and are hours older than its newest event."""
    fresh = []
    for k, event in enumerate(events):
        ts = after + dt.timedelta(seconds=1, milliseconds=k)
        fresh.append(
            event
            | {"event_id": str(uuid.uuid4()), "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
        )
    return fresh


def last_timestamp(con: duckdb.DuckDBPyConnection, day: str) -> dt.datetime:
    value = con.execute('SELECT max("timestamp") FROM raw_logs WHERE partition_date = ?', [day]).fetchone()[0]
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return (
        value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def server_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process's descendants, by role: ``stream`` (the
    live stream /predict reads the state from) and ``api`` (the server and, with --workers, its worker
    processes). On a shared machine CPU per request is the steadier figure; wall-clock latencies also
    carry everyone else's load."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - mine
        mine |= frontier
    by_role = {"api": 0.0, "stream": 0.0}
    for pid in mine:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            command = []
        by_role["stream" if b"stream" in command else "api"] += cpu[pid]
    return by_role


async def measured(scenario) -> dict:
    """A scenario's figures plus the server's (API and stream together, and each) and this client's CPU
    milliseconds per request."""
    server, client = server_cpu_seconds(), time.process_time()
    result = await scenario
    requests = max(1, result["requests"])
    used = {
        role: 1000 * (seconds - server[role]) / requests for role, seconds in server_cpu_seconds().items()
    }
    return {
        **result,
        "server_cpu_ms": sum(used.values()),
        "api_cpu_ms": used["api"],
        "stream_cpu_ms": used["stream"],
        "client_cpu_ms": 1000 * (time.process_time() - client) / requests,
    }


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    """The bytes of one keep-alive HTTP/1.1 request, built once and sent many times."""
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {KEY}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


class Connection:
    """A minimal HTTP/1.1 client over one keep-alive connection, sending pre-built requests: it costs the
    two cores the server also uses a fraction of a millisecond per request (``client_cpu_ms``)."""

    def __init__(self, url: str):
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, url: str) -> Connection:
        connection = cls(url)
        await connection.connect()
        return connection

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, request: bytes) -> int:
        """Sends ``request``, reads the whole response; returns its status. The server closes a connection
        idle for 5 s (uvicorn's keep-alive timeout): then it reconnects and sends again."""
        try:
            return await self._exchange(request)
        except (asyncio.IncompleteReadError, ConnectionResetError) as error:
            if getattr(error, "partial", b""):  # closed mid-response: a real failure
                raise
            self.close()
            await self.connect()
            return await self._exchange(request)

    async def _exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if length is None:
            raise RuntimeError(f"no content-length in {head[:200]!r}")
        await self.reader.readexactly(int(length.group(1)))
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


def summary(latencies: list[float], errors: int, took: float) -> dict:
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / took,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
    }


async def closed_loop(url: str, clients: int, seconds: float, request: bytes) -> dict:
    """``clients`` connections each sending the next request as soon as the previous one is answered:
    measures saturation throughput; latency is then queueing, about clients / throughput."""
    connections = [await Connection.open(url) for _ in range(clients)]
    for c in connections:  # warm-up, untimed
        await c.send(request)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(connection: Connection):
        nonlocal errors
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            status = await connection.send(request)
            latencies.append(time.perf_counter() - began)
            errors += status != 200

    began = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    took = time.perf_counter() - began
    for c in connections:
        c.close()
    return summary(latencies, errors, took)


async def paced(url: str, clients: int, seconds: float, rate: float, request: bytes) -> dict:
    """An offered load of ``rate`` requests/s spread over ``clients`` connections (each sends on its own
    fixed schedule, staggered). Latency is counted from the scheduled send time, so a request that
    waits for its connection's previous answer counts the wait (no coordinated omission)."""
    connections = [await Connection.open(url) for _ in range(clients)]
    for c in connections:
        await c.send(request)
    latencies: list[float] = []
    errors = 0
    interval = clients / rate
    start = time.perf_counter() + 0.05
    count = int(seconds * rate / clients)
    # a server slower than the offered load falls ever further behind: stop sending after this and
    # count what was never sent (its latency would be at least the time left)
    cutoff = start + 2 * seconds
    unsent = 0
    lags: list[float] = []
    running = True

    async def lag_monitor():
        # the client's own event-loop lag: a late wake-up here delays every send and read as much
        while running:
            asked = time.perf_counter()
            await asyncio.sleep(0.005)  # 200 wake-ups a second: no load of its own to speak of
            lags.append(time.perf_counter() - asked - 0.005)

    async def worker(index: int, connection: Connection):
        nonlocal errors, unsent
        for k in range(count):
            scheduled = start + (index / clients + k) * interval
            if time.perf_counter() > cutoff:
                unsent += count - k
                return
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await connection.send(request)
            latencies.append(time.perf_counter() - scheduled)
            errors += status != 200

    monitor = asyncio.create_task(lag_monitor())
    await asyncio.gather(*(worker(i, c) for i, c in enumerate(connections)))
    took = time.perf_counter() - start
    running = False
    await monitor
    for c in connections:
        c.close()
    return {
        **summary(latencies, errors, took),
        "offered_rps": rate,
        "unsent": unsent,
        "client_lag_p99_ms": 1000 * percentile(lags, 0.99),
        "client_lag_max_ms": 1000 * max(lags),
    }


async def sequential(url: str, count: int, request: bytes) -> dict:
    """One client, one request at a time: latency without queueing."""
    connection = await Connection.open(url)
    await connection.send(request)  # warm-up
    latencies, errors = [], 0
    began = time.perf_counter()
    for _ in range(count):
        sent = time.perf_counter()
        errors += await connection.send(request) != 200
        latencies.append(time.perf_counter() - sent)
    took = time.perf_counter() - began
    connection.close()
    return summary(latencies, errors, took)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        action="append",
        default=[],
        help="a data folder with promoted models and a snapshot; NAME=PATH: for compare.py's tree NAME only "
        "(repeatable; a tree without one uses a plain --data-dir, or --keep)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="build the demo data once per tree under KEEP/<tree> and reuse it (for compare.py)",
    )
    parser.add_argument(
        "--stored-events",
        action="store_true",
        help="post the day's first stored events as they are (default: as new events just after the day)",
    )
    parser.add_argument(
        "--predict-query",
        default="",
        help="appended to /predict's path, e.g. '?context=false' (the API's what-if scoring, where it has one)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--rate", type=float, default=300.0, help="offered load of the paced scenarios, req/s"
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bankanom-api-bench-") as tmp:
        data = chosen_data(args.data_dir) or (
            kept_demo_data(args.keep) if args.keep else demo_data(Path(tmp))
        )
        con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
        day = con.execute("SELECT max(partition_date) FROM scored_events").fetchone()[0].isoformat()
        events = accepted_lines(con, day, 1000)
        if not args.stored_events:
            events = as_new(events, last_timestamp(con, day))
        con.close()
        predict = "/predict" + args.predict_query
        one = http_request("POST", predict, json.dumps({"events": events[:1]}).encode())
        batch = http_request("POST", predict, json.dumps({"events": events}).encode())
        incidents = http_request("GET", "/incidents")
        clients, seconds, rate = args.clients, args.seconds, args.rate
        scenarios = {
            "predict_1": lambda url: closed_loop(url, clients, seconds, one),
            "predict_1_paced": lambda url: paced(url, clients, seconds, rate, one),
            "predict_1_alone": lambda url: sequential(url, 50, one),
            "predict_1000": lambda url: sequential(url, 10, batch),
            "incidents": lambda url: closed_loop(url, clients, seconds, incidents),
            "incidents_paced": lambda url: paced(url, clients, seconds, rate, incidents),
        }
        runs: dict[str, list[dict]] = {name: [] for name in scenarios}
        # the ingest key is read only by an API with POST /events; an older one ignores it
        env = {"BANKANOM_API_RATE_LIMIT": "1000000/second", "BANKANOM_INGEST_KEYS": "bench-ingest-key"}
        # since issue 25 the online state lives in the live stream, beside the API (its CPU counts as the
        # server's: it is a descendant of this process); an older tree's API keeps the state itself
        if "stream" in inspect.signature(running_api).parameters:
            env["stream"] = True
        with running_api(data, KEY, Path(tmp) / "api.log", workers=args.workers, **env) as url:
            # untimed: every connection's first requests (the server prepares per-session state)
            asyncio.run(closed_loop(url, clients, 2.0, one))
            # the client's heap so far (libraries, events, requests) lives to the end: out of its
            # collector's full passes, which otherwise stop the load generator for tens of ms
            gc.collect()
            gc.freeze()
            for _ in range(args.runs):
                for name, scenario in scenarios.items():
                    runs[name].append(asyncio.run(measured(scenario(url))))
    medians = {
        name: {metric: statistics.median(r[metric] for r in results) for metric in results[0]}
        for name, results in runs.items()
    }
    for name, m in medians.items():
        print(
            f"{name:18} {m['rps']:8.1f} req/s  p50 {m['p50_ms']:7.1f} ms  p99 {m['p99_ms']:7.1f} ms"
            f"  server CPU {m['server_cpu_ms']:6.2f} ms/req (API {m['api_cpu_ms']:.2f}, stream"
            f" {m['stream_cpu_ms']:.2f})  client CPU {m['client_cpu_ms']:5.2f} ms/req"
            f"  errors {m['errors']:.0f}"
            + (f"  unsent {m['unsent']:.0f}" if "unsent" in m else "")
            + (
                f"  client loop lag p99 {m['client_lag_p99_ms']:.1f} max {m['client_lag_max_ms']:.1f} ms"
                if "client_lag_max_ms" in m
                else ""
            )
        )
    record(
        f"api_bench_w{args.workers}",
        {
            "workers": args.workers,
            "clients": clients,
            "seconds": seconds,
            "rate": rate,
            "predict_query": args.predict_query,
            "stored_events": args.stored_events,
            "runs": runs,
            "median": medians,
            "load_average_after": os.getloadavg(),
        },
    )


if __name__ == "__main__":
    main()
