"""The real API for tests and benchmarks: in process (``api_client``) or served by uvicorn in a subprocess
on a free loopback port (``running_api``); and events to post to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import duckdb
import httpx
from fastapi.testclient import TestClient

from bankanom_api.app import create_app
from bankanom_api.security import key_id
from bankanom_api.settings import ApiSettings
from bankanom_pipeline.ports import free_port

# nothing listens on the discard port: an API built without a stream of its own answers 503 to what it
# would forward, rather than reach a stream some other process runs on this machine
NO_STREAM = "http://127.0.0.1:9"


def analysts_of(keys: list[str]) -> dict[str, str]:
    """The test configuration's people (as BANKANOM_ANALYSTS gives them): the first key is "Test Analyst",
    the others "Analyst 2", "Analyst 3", ..."""
    return {key_id(k): "Test Analyst" if i == 0 else f"Analyst {i + 1}" for i, k in enumerate(keys)}


def analysts_setting(keys: list[str]) -> str:
    return ",".join(f"{name}={kid}" for kid, name in analysts_of(keys).items())


def api_settings(root: Path, key: str, **overrides) -> ApiSettings:
    """Settings serving ``root``'s models and snapshots with one API key, which belongs to "Test
    Analyst"; the console's feedback and alerts files and the live store's folder are in ``root`` too, so
    nothing reads or writes the project's data folder."""
    settings = {
        "api_keys": [key],
        "analysts": analysts_of([key]),
        "models_dir": root / "models",
        "snapshots_dir": root / "snapshots",
        "feedback_db": root / "feedback.duckdb",
        "alerts_db": root / "alerts.duckdb",
        "live_dir": root / "live",
        "stream_url": NO_STREAM,
        **overrides,
    }
    return ApiSettings(**settings)


def api_client(root: Path, key: str, **overrides) -> TestClient:
    """The real app (``create_app``) over ``root``, in process; an unhandled error answers 500 as over HTTP.
    Use it as a context manager: the lifespan builds the serving state."""
    return TestClient(create_app(api_settings(root, key, **overrides)), raise_server_exceptions=False)


# a server's start is a few CPU-seconds of imports; on a loaded two-core machine (the suite's other
# stream, other jobs) it has taken over a minute of wall time
STARTUP_SECONDS = 180


def wait_for_http(
    url: str, process: subprocess.Popen, log: Path, timeout: float, interval: float = 0.2
) -> None:
    """Poll ``url`` until it answers 200; fail with the tail of the server's ``log`` if ``process`` exits
    or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(interval)


STREAM_KEY = "test-stream-key"


@contextmanager
def running_stream(data_dir: Path, log: Path, **env: str) -> Iterator[str]:
    """``bankanom stream --source none`` over ``data_dir`` (its live store, models and snapshots' checkpoint)
    on a free loopback port with a stream key; yields its URL; stops it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "BANKANOM_DATA_DIR": str(data_dir),
        "BANKANOM_STREAM_URL": url,
        "BANKANOM_STREAM_KEY": STREAM_KEY,
        **env,
    }
    command = [
        sys.executable,
        "-m",
        "bankanom_pipeline.cli",
        "stream",
        "--source",
        "none",
        "--port",
        str(port),
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=environment, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                if (
                    httpx.get(f"{url}/status", headers={"X-Stream-Key": STREAM_KEY}, timeout=2).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stream at {url} did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def running_api(
    data_dir: Path, keys: str, log: Path, workers: int = 1, stream: bool = False, **env: str
) -> Iterator[str]:
    """Serve ``data_dir``'s models and snapshots; yields the base URL; stops the server afterwards. With
    ``stream`` a live stream over the same folder runs beside it (its log beside ``log``) and the API
    forwards to it; without, the API has no stream (POST /events and /predict with context answer 503)."""
    with ExitStack() as stack:
        if stream:
            url = stack.enter_context(running_stream(data_dir, log.with_suffix(".stream.log"), **env))
            env = {"BANKANOM_STREAM_URL": url, "BANKANOM_STREAM_KEY": STREAM_KEY, **env}
        else:
            env = {"BANKANOM_STREAM_URL": NO_STREAM, **env}
        yield stack.enter_context(_running_api(data_dir, keys, log, workers, **env))


@contextmanager
def _running_api(data_dir: Path, keys: str, log: Path, workers: int = 1, **env: str) -> Iterator[str]:
    port = free_port()
    environment = {
        **os.environ,
        "BANKANOM_DATA_DIR": str(data_dir),
        "BANKANOM_API_KEYS": keys,
        "BANKANOM_ANALYSTS": analysts_setting(
            [k.strip() for k in keys.split(",") if k.strip()]
        ),  # each key a person, as `bankanom up` maps
        "BANKANOM_API_RELOAD_SECONDS": "0.2",
        **env,
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bankanom_pipeline.cli",
                "api",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", process, log, timeout=STARTUP_SECONDS)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


RAW_FIELDS = [
    "timestamp",
    "source_service",
    "log_level",
    "event_id",
    "correlation_id",
    "user_id",
    "ip_address",
    "geo_location",
    "message",
    "metrics",
    "anomaly_details",
]


def accepted_lines(
    con: duckdb.DuckDBPyConnection, day: str, limit: int | None = None, newest: bool = False
) -> list[dict]:
    """The day's lines that validation accepted, as the generator wrote them (anomaly_details included),
    in order; the first ``limit``, or with ``newest`` the last (the ones still in the context an online
    state that ingested the day keeps)."""
    columns = ", ".join(f'r."{c}"' for c in RAW_FIELDS)
    direction = "DESC" if newest else ""
    rows = con.execute(
        f"""SELECT {columns} FROM raw_logs AS r
            JOIN validated_logs AS v USING (partition_date, source_file, line_no)
            WHERE r.partition_date = ? ORDER BY r."timestamp" {direction}, r.event_id {direction} LIMIT ?""",
        [day, limit or 10**9],
    ).fetchall()
    if newest:
        rows.reverse()
    events = []
    for row in rows:
        event = dict(zip(RAW_FIELDS, row, strict=True))
        event["metrics"] = json.loads(event["metrics"] or "{}")
        event["anomaly_details"] = json.loads(event["anomaly_details"] or "null")
        events.append({k: v for k, v in event.items() if v is not None})
    return events
