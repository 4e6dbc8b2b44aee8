"""What watches a run the CLI executes in its own process.

While the run waits for a concurrency-pool slot, Dagster logs "Step blocked by limit for pool duckdb" at
DEBUG, and swallows SIGINT and SIGTERM: its in-process executor takes an interrupt only inside a step
(``capture_interrupts`` records it; nothing reads the record while steps wait). The guard, a thread
beside the run, says at INFO which run holds the pool (on the console and in the run's event log), cleans
that run up if its process died, and stops the run at once on SIGINT or SIGTERM while it waits. It learns
of signals through ``signal.set_wakeup_fd``, which Python writes to whatever handler Dagster installed.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType

import dagster as dg

from bankanom_pipeline.defs.automation import recovery

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_QUIT = b"\0"  # written by the guard itself to end its thread (no signal has number 0)


class RunGuard:
    """Use around ``job.execute_in_process(run_id=run_id, ...)`` in the main thread.

    A signal while the run waits stops it at once: the run is marked canceled, its pool claims freed, and
    the process exits with 128 + the signal's number. A signal while a step runs is left to Dagster, which
    interrupts the step; a second signal, or ``grace_seconds`` without the run ending, stops it the same
    way (the data stays whole: every write is one transaction, as for a killed process)."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        say: Callable[[str], None],
        poll_seconds: float = 2.0,
        grace_seconds: float = 15.0,
    ):
        self.instance, self.run_id, self.say = instance, run_id, say
        self.poll_seconds, self.grace_seconds = poll_seconds, grace_seconds
        self._said: dict[tuple[str, str], tuple[str, ...]] = {}
        self._deadline: float | None = None

    def __enter__(self) -> RunGuard:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        # only the main thread may set it (and receives signals); elsewhere the guard only watches waits
        on_main = threading.current_thread() is threading.main_thread()
        self._previous_fd = signal.set_wakeup_fd(self._write) if on_main else None
        self._thread = threading.Thread(target=self._watch, name="bankanom-run-guard", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
        os.write(self._write, _QUIT)
        self._thread.join()
        os.close(self._read)
        os.close(self._write)

    def _watch(self) -> None:
        while True:
            ready, _, _ = select.select([self._read], [], [], self.poll_seconds)
            received = os.read(self._read, 64) if ready else b""
            if _QUIT in received:
                return
            for number in received:
                if number in STOP_SIGNALS:
                    self._on_signal(signal.Signals(number))
            if self._deadline is not None and time.monotonic() > self._deadline:
                self._stop(f"because its running step did not stop within {self.grace_seconds:g} s")
            try:
                self._report_waits()
            except Exception as error:  # the guard must never end the run it watches
                self.say(f"run guard: could not read the concurrency pools: {error}")

    def _waiting(self) -> list[recovery.Wait]:
        return [w for w in recovery.waits(self.instance) if w.run_id == self.run_id]

    def _on_signal(self, received: signal.Signals) -> None:
        self._signal = received
        waiting = self._waiting()
        if waiting:
            self._stop(f"while {recovery.say_wait(self.instance, waiting[0])}")
        elif self._deadline is not None:
            self._stop("on a second signal")
        else:
            self._deadline = time.monotonic() + self.grace_seconds
            self.say(
                f"{received.name}: interrupting the running step of run {self.run_id}; "
                f"send it again to stop at once"
            )

    def _stop(self, why: str) -> None:
        name = self._signal.name
        run = self.instance.get_run_by_id(self.run_id)
        if run is not None and not run.is_finished:
            self.instance.report_run_canceled(run, message=f"Stopped by {name} {why}.")
        freed = recovery.holdings(self.instance, self.run_id)
        self.instance.event_log_storage.free_concurrency_slots_for_run(self.run_id)
        self.say(
            f"stopped by {name}: {recovery.describe(self.instance, self.run_id)} marked canceled {why}; "
            f"freed {', '.join(freed) or 'no pool slot'}"
        )
        os._exit(128 + self._signal)  # the main thread sleeps inside Dagster, deaf to signals

    def _report_waits(self) -> None:
        for wait in self._waiting():
            key = (wait.pool, wait.step)
            for holder in wait.holders:
                run = self.instance.get_run_by_id(holder)
                worker = run and recovery.worker_of(self.instance, run)
                if worker is not None and not run.is_finished and not worker.alive():
                    for cleanup in recovery.clean_dead_runs(self.instance, by="a run waiting for it"):
                        self.say(str(cleanup))
            if wait.holders and self._said.get(key) != wait.holders:
                self._said[key] = wait.holders
                message = recovery.say_wait(self.instance, wait)
                self.say(message)
                run = self.instance.get_run_by_id(self.run_id)
                if run is not None:
                    self.instance.report_engine_event(message, run, step_key=wait.step)
