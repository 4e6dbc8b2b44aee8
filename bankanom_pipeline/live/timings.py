"""Where the stream's time goes, batch by batch: each stage's wall time, the batch's size, the Python
garbage collector's pauses, and the slowest recent batches in full. ``LiveScorer`` records every batch;
``GET /status`` serves ``describe()`` and each commit's ``meta.status`` carries the summary, so a stall
(a batch that held every event behind it) can be told from a slow rate without a profiler.
docs/live.md#lag-and-latency.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque

# the stages of one batch, in order (LiveScorer._ingest)
STAGES = (
    "validate",  # parsing and the declared rules, line by line
    "engine",  # folding into the online engine
    "score",  # score_values on the batch
    "rows",  # the store's rows and the API's results
    "incidents",  # live grouping (LiveIncidents.update, without the root-cause passes)
    "rca",  # the root-cause passes (build_incidents) of the groups due
    "commit",  # the one SQLite transaction (WAL checkpoints SQLite runs at commit included)
    "checkpoint",  # forking the engine's checkpoint (or writing one in place), and gc.freeze
    "retain",  # the day's retention prune
)
# upper bounds (s) of the batch-wall histogram's buckets; the last one is unbounded
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Timings:
    """Running figures of the batches and the collector; thread-safe for one writer and any readers."""

    def __init__(self, slow_s: float = 0.5, keep: int = 10):
        self.slow_s = slow_s
        self.batches = 0
        self.events = 0
        self.totals = dict.fromkeys(STAGES, 0.0)
        self.worst = dict.fromkeys(STAGES, 0.0)
        self.wall = [0] * (len(BUCKETS) + 1)
        self.wall_max = 0.0
        self.wall_total = 0.0
        self.largest = 0
        self.slow: deque[dict] = deque(maxlen=keep)
        self.gc = {"collections": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "max_s": [0.0, 0.0, 0.0]}
        self._gc_started: float | None = None
        self._lock = threading.Lock()

    # -- the collector's pauses ----------------------------------------------------------------------

    def watch_gc(self) -> None:
        """Time every collection (``gc.callbacks``): a full collection of a large heap holds the GIL, so
        every thread of the process, for as long as it takes."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        if self._gc_started is None:
            return
        took, generation = time.perf_counter() - self._gc_started, info["generation"]
        self._gc_started = None
        self.gc["collections"][generation] += 1
        self.gc["seconds"][generation] += took
        self.gc["max_s"][generation] = max(self.gc["max_s"][generation], took)

    # -- batches -------------------------------------------------------------------------------------

    def gc_seconds(self) -> float:
        """Seconds of every collection so far (a batch's share: the difference over the batch)."""
        return sum(self.gc["seconds"])

    def record(
        self,
        lines: int,
        stages: dict[str, float],
        began: float,
        ended: float,
        cpu_s: float | None = None,
        gc_s: float = 0.0,
    ) -> dict:
        """One batch of ``lines`` lines (from ``began`` to ``ended``, ``perf_counter``), with each stage's
        seconds, the thread's CPU seconds (wall far above CPU: the process waited for a core) and the
        collector's seconds within it (counted inside the stages too); returns the batch's figures."""
        wall = ended - began
        batch = {"lines": lines, "wall_s": round(wall, 4)}
        if cpu_s is not None:
            batch["cpu_s"] = round(cpu_s, 4)
        if gc_s:
            batch["gc_s"] = round(gc_s, 4)
        batch.update({k: round(v, 4) for k, v in stages.items() if v})
        with self._lock:
            self.batches += 1
            self.events += lines
            for stage, seconds in stages.items():
                self.totals[stage] += seconds
                self.worst[stage] = max(self.worst[stage], seconds)
            self.wall[next((i for i, b in enumerate(BUCKETS) if wall <= b), len(BUCKETS))] += 1
            self.wall_max = max(self.wall_max, wall)
            self.wall_total += wall
            self.largest = max(self.largest, lines)
            if wall >= self.slow_s:
                self.slow.append({"at": round(time.time(), 3), **batch})
        return batch

    def summary(self) -> dict:
        """The cheap part, for each commit's status: counts, totals, the worst of each stage."""
        with self._lock:
            return {
                "batches": self.batches,
                "lines": self.events,
                "largest_batch": self.largest,
                "wall_max_s": round(self.wall_max, 4),
                "wall_total_s": round(self.wall_total, 3),
                "wall_le_s": dict(zip([*map(str, BUCKETS), "inf"], self.wall, strict=True)),
                "stage_total_s": {k: round(v, 3) for k, v in self.totals.items()},
                "stage_max_s": {k: round(v, 4) for k, v in self.worst.items()},
                "gc_collections": list(self.gc["collections"]),
                "gc_seconds": [round(s, 3) for s in self.gc["seconds"]],
                "gc_max_s": [round(s, 4) for s in self.gc["max_s"]],
            }

    def describe(self) -> dict:
        """``summary`` with the slowest recent batches (at least ``slow_s``), each stage by stage."""
        described = self.summary()
        with self._lock:
            described["slow_batches"] = list(self.slow)
        return described
