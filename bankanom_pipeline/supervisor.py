"""Runs a few long-lived processes together and stops them together (``bankanom up``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

STOP_TIMEOUT_S = 20


class Supervisor:
    def __init__(self, commands: dict[str, list[str]], env: dict[str, str], cwd: Path):
        self.commands, self.env, self.cwd = commands, env, cwd
        self.processes: dict[str, subprocess.Popen] = {}
        self._stopping = False

    def run(self) -> int:
        """Start everything, wait until Ctrl-C / SIGTERM or until one process dies, stop the rest.
        Returns 0 after a requested stop, 1 when a process died on its own."""
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for name, command in self.commands.items():
                # own process group: the terminal's Ctrl-C reaches only us, and we stop each group whole
                # (dagster dev has its own children: webserver, daemon, code server)
                self.processes[name] = subprocess.Popen(
                    command, env=self.env, cwd=self.cwd, start_new_session=True
                )
            died = None
            while not self._stopping and died is None:
                died = next((n for n, p in self.processes.items() if p.poll() is not None), None)
                time.sleep(0.2)
            if died is not None:
                print(f"{died} exited with code {self.processes[died].returncode}; stopping the others")
            self.stop()
            return 1 if died is not None else 0
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _request_stop(self, _signum, _frame) -> None:
        self._stopping = True

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for name, process in self.processes.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in {STOP_TIMEOUT_S} s; killing it")
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
