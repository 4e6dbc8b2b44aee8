"""CLI processes for the tests that kill, signal or watch a run, without each paying the ~10 CPU-s of
importing Dagster, Great Expectations, scikit-learn and skops.

``python -m tests.fork_server`` imports those libraries once, then forks one child per request it reads
on stdin. A child is a process of its own (its own pid, start time, signal handlers and exit status):
it takes the request's environment and working directory, prints to the request's log, and runs the
module as ``python -m <module> <args>`` would, importing every bankanom module afresh, so the code
location binds its paths under the child's environment and tests/crash_point.py patches the writes
before the pipeline imports them. The server is the children's parent: it signals them and reaps
them, so a pid it signals is always its own child's (alive, or a zombie not yet reaped).

Only libraries that are safe to fork are imported before forking: no Python thread runs, and the
native threads that start with the imports (OpenBLAS's pool, jemalloc's background thread) are
stopped and restarted around ``fork`` by their own libraries. DuckDB and Polars are not imported:
DuckDB starts its scheduler's threads on import, and a child's exit then waits to join threads that
only the server has; Polars' out-of-core thread does not survive a fork either.

``start`` (in the tests' process) starts the server on first use and returns a ``Child``, which
answers the part of ``subprocess.Popen`` the tests use."""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# what a CLI run imports that costs seconds, none of it binding a path of the project at import
PRELOAD = (
    "dagster",
    "great_expectations",
    "skops.io",
    "sklearn.ensemble",
    "sklearn.neighbors",
    "pandas",
    "pyarrow",
    "sqlalchemy",
    "psutil",
    "typer",
    "rich",
)


def _returncode(status: int) -> int:
    """A wait status as ``subprocess.Popen.returncode`` gives it: the exit code, or -signal."""
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _child(request: dict, log: int) -> None:
    """In the forked child: become ``python -m <module> <args>`` with the request's environment,
    working directory and log, and run it. Never returns: the module's exit (or its exception)
    leaves through the interpreter's own shutdown, as it would in a process started afresh."""
    import runpy

    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's stdin, open until it exits
    for number in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()  # where ``python -m`` looks first
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [request["module"], *request["args"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    raise SystemExit(0)


def serve() -> None:
    """Read requests (JSON lines) on stdin, answer each with one JSON line on stdout, until stdin
    closes; then kill and reap the children still running."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    # nothing may be running in this process but the main thread when it forks
    assert threading.active_count() == 1, threading.enumerate()
    assert "duckdb" not in sys.modules and "polars" not in sys.modules
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.dup(1)
    server = os.getpid()
    children: dict[int, int | None] = {}  # pid -> returncode once reaped

    def answer(message: dict) -> None:
        os.write(answers, (json.dumps(message) + "\n").encode())

    def reap(pid: int) -> int | None:
        if children[pid] is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children[pid] = _returncode(status)
        return children[pid]

    answer({"ready": os.getpid()})
    for line in requests:
        request = json.loads(line)
        if request["op"] == "start":
            # opened before answering, as Popen's caller opens it: the log exists once start returns
            log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            pid = os.fork()
            if pid == 0:
                requests.close()
                os.close(answers)
                _child(request, log)
            os.close(log)
            children[pid] = None
            answer({"pid": pid})
        elif request["op"] == "signal":
            if reap(request["pid"]) is None:  # still our child, or its zombie: never a stranger
                os.kill(request["pid"], request["signal"])
            answer({"returncode": children[request["pid"]]})
        elif request["op"] == "poll":
            answer({"returncode": reap(request["pid"])})
    assert os.getpid() == server
    for pid in children:
        if reap(pid) is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


class _Server:
    """The fork server seen from the tests' process: one request at a time, from any thread."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        root = Path(__file__).resolve().parent.parent
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fork_server"],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.lock = threading.Lock()
        ready = self.process.stdout.readline()
        assert ready, f"the fork server exited {self.process.wait()}"

    def ask(self, **request) -> dict:
        with self.lock:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        assert line, f"the fork server exited {self.process.poll()}"
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=120)


_server: _Server | None = None
_starting = threading.Lock()


class Child:
    """A process the fork server forked: ``pid``, ``returncode``, ``poll``, ``wait`` and
    ``send_signal`` as ``subprocess.Popen`` has them."""

    def __init__(self, server: _Server, pid: int) -> None:
        self._server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.ask(op="poll", pid=self.pid)["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.returncode is None:
            self.returncode = self._server.ask(op="signal", pid=self.pid, signal=int(number))["returncode"]

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start(env: dict, log: Path, module: str, *args: str, cwd: Path) -> Child:
    """``python -m module *args`` with ``env`` as its whole environment, in ``cwd``, printing (stdout
    and stderr) to the end of ``log``; forked by this process's fork server."""
    global _server
    with _starting:
        if _server is None:
            _server = _Server()
            atexit.register(_server.close)
    pid = _server.ask(op="start", module=module, args=list(args), env=env, log=str(log), cwd=str(cwd))
    return Child(_server, pid["pid"])


if __name__ == "__main__":
    serve()
