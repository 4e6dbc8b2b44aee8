"""Real PostgreSQL and Redis servers on free loopback ports (Debian's packages, installed by
scripts/setup.sh), started for a test and stopped after it."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.api_server import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def start(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A background process in a session of its own, so that ``stop`` (or a test) reaches its children."""
    with log.open("w") as out:
        return subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def require_servers() -> None:
    if _postgres_bin() is None or shutil.which("redis-server") is None:
        pytest.fail("postgresql and redis-server are needed: run scripts/setup.sh (it apt-installs them)")


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stdout[-2000:]} {result.stderr[-2000:]}")


@contextmanager
def postgres() -> Iterator[dict[str, str]]:
    """A fresh cluster in a temporary folder; yields the DAGSTER_PG_* settings of its ``dagster`` database."""
    bin_dir = _postgres_bin()
    port = free_port()
    # under /tmp itself: pytest's folders are private to root, and the server may run as another user
    data = Path(tempfile.mkdtemp(prefix="bankanom-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as Debian's postgres user
        owner = pwd.getpwnam("postgres")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*args: str) -> None:
        _run(*as_user, *args)

    run(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "--username=dagster", "--encoding=UTF8")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off"
    run(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "server.log"), "-w", "start"
    )
    try:
        _run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dagster", "dagster")
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_USER": "dagster",
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": "dagster",
        }
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def redis(log: Path) -> Iterator[str]:
    """A Redis server without persistence; yields its base URL (redis://127.0.0.1:<port>)."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while "Ready to accept connections" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)
