"""Start the real API (uvicorn in a subprocess) on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_api(data_dir: Path, keys: str, log: Path, **env: str) -> Iterator[str]:
    """Serve ``data_dir``'s models and snapshots; yields the base URL; stops the server afterwards."""
    port = free_port()
    environment = {
        **os.environ,
        "BANKANOM_DATA_DIR": str(data_dir),
        "BANKANOM_API_KEYS": keys,
        "BANKANOM_API_RELOAD_SECONDS": "0.2",
        **env,
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bankanom_pipeline.cli", "api", "--port", str(port)],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
