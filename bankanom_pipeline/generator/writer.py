"""Write generated traffic as JSONL files in the landing zone, one folder per UTC day.

A file becomes visible under its final name only when complete (written as a dot-file, fsynced, then
renamed), so a sensor or an ingest run never reads half a file.

The work is a pipeline over threads, since most of it is numpy and Arrow work that releases the GIL:
the next chunk is generated on a background thread while the calling thread renders the current one in
runs of lines; a writer thread writes each file's runs in order, joining their pieces on two more
threads; a sync thread flushes written data to disk as it goes, then publishes each finished file.
Every step is sequential where order matters, so the output does not depend on timing.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.lines import Lines
from bankanom_pipeline.generator.render import Rendered, render_lines

DAY_S = 86_400
CHUNK_S = 6 * 3600  # one file per 6 hours: fewer, larger chunks amortise per-chunk work
RENDER_LINES = 98_304  # lines rendered at a time: writing starts early; arrays stay below 32 MB
LINES_PER_WRITE = 32_768  # lines joined and written at a time
JOIN_THREADS = 2  # joining is numpy and Arrow work without the GIL: it can use both cores
JOINS_AHEAD = 4  # slices being joined while the writer writes (bounds memory)
RENDERED_AHEAD = 2  # rendered runs waiting for the writer (bounds memory)


def day_of(epoch_s: int) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d")


def partition_dir(landing_logs: Path, day: str) -> Path:
    return landing_logs / day


class HiddenFile:
    """A file written under a hidden name, then published under its own."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.temporary = path.with_name(f".{path.name}.part")
        self.handle = open(self.temporary, "wb")  # noqa: SIM115 (closed by publish)
        self.flushing: Future | None = None

    def append(self, rendered: Rendered, joins: Executor, sync: Executor) -> None:
        """Write rendered lines: slices are joined on ``joins`` (in parallel) and written in order, and
        written data is flushed to disk on ``sync`` meanwhile, so that publishing waits for little."""
        rendered.prepare(lambda tasks: _wait([joins.submit(task) for task in tasks]), JOIN_THREADS)
        runs = [slice(first, first + LINES_PER_WRITE) for first in range(0, len(rendered), LINES_PER_WRITE)]
        joined = [joins.submit(rendered.join, lines) for lines in runs[:JOINS_AHEAD]]
        for i in range(len(runs)):
            data = joined[i].result()
            joined[i] = None  # frees the slice once written
            if i + JOINS_AHEAD < len(runs):
                joined.append(joins.submit(rendered.join, runs[i + JOINS_AHEAD]))
            self.handle.write(memoryview(data))
            self.handle.flush()
            if self.flushing is None or self.flushing.done():  # one flush at a time is enough
                self.flushing = sync.submit(os.fdatasync, self.handle.fileno())

    def publish(self) -> None:
        """Make the file durable, then visible under its final name."""
        with self.handle:
            os.fsync(self.handle.fileno())
        os.replace(self.temporary, self.path)


@dataclass
class WriteSummary:
    events: int = 0
    anomalous: int = 0
    files: list[Path] = field(default_factory=list)
    days: set[str] = field(default_factory=set)


def write_range(
    generator: Generator,
    landing_logs: Path,
    start_s: int,
    end_s: int | None = None,
    events: int | None = None,
    chunk_s: int = CHUNK_S,
    progress=None,
) -> WriteSummary:
    """Write [start_s, end_s) or exactly ``events`` lines from ``start_s``; one file per chunk and day."""
    if (end_s is None) == (events is None):
        raise ValueError("give either end_s or events")
    chunks = _ahead(
        generator.stream_lines(start_s, end_s, chunk_s)
        if events is None
        else generator.lines_n(events, start_s, chunk_s)
    )
    total = WriteSummary()
    files: list[tuple[Future, int]] = []  # each file's writing job (which returns its publication)
    with (
        ThreadPoolExecutor(JOIN_THREADS, "jsonl-join") as joins,
        ThreadPoolExecutor(1, "jsonl-writer") as disk,
        ThreadPoolExecutor(1, "jsonl-sync") as sync,
    ):
        for chunk_start, lines in chunks:
            stamp = dt.datetime.fromtimestamp(chunk_start, dt.UTC).strftime("%Y%m%dT%H%M%S")
            stem = f"mock-{stamp}-seed{generator.config.seed}"
            for day, part in _days(lines):
                path = partition_dir(landing_logs, day) / f"{stem}.jsonl"
                runs: queue.Queue[Rendered | None] = queue.Queue(RENDERED_AHEAD)
                job = disk.submit(_write_file, path, runs, joins, sync)
                for run in _runs(part):
                    _put(runs, render_lines(generator, run), job)
                _put(runs, None, job)
                files.append((job, len(part)))
                total.events += len(part)
                total.anomalous += len(part.anomalous) if part.anomalous is not None else 0
                total.files.append(path)
                total.days.add(day)
                while files and files[0][0].done():  # surfaces write errors early
                    _finish(files.pop(0), progress)
        while files:
            _finish(files.pop(0), progress)
    return total


def _write_file(path: Path, runs: queue.Queue, joins: Executor, sync: Executor) -> Future:
    """Write the rendered runs of one file as they come (None ends them); returns its publication."""
    file = HiddenFile(path)
    while (rendered := runs.get()) is not None:
        file.append(rendered, joins, sync)
    return sync.submit(file.publish)  # after the file's flushes, which were submitted earlier


def _put(runs: queue.Queue, item: Rendered | None, job: Future) -> None:
    """Hand a run to a file's writing job, without waiting forever if that job has failed."""
    while True:
        try:
            runs.put(item, timeout=0.1)
            return
        except queue.Full:
            if job.done():
                job.result()  # raises the job's error
                raise RuntimeError("the file writer stopped early") from None


def _wait(futures: list[Future]) -> None:
    for future in futures:
        future.result()


def _ahead(chunks: Iterator[tuple[int, Lines]]) -> Iterator[tuple[int, Lines]]:
    """The chunks, generated one ahead on a background thread: most of generating and rendering is
    numpy work that releases the GIL, so the two overlap. Generation stays sequential (deterministic)."""
    with ThreadPoolExecutor(1, "jsonl-generator") as background:
        upcoming = background.submit(next, chunks, None)
        while (chunk := upcoming.result()) is not None:
            upcoming = background.submit(next, chunks, None)
            yield chunk


def _finish(item: tuple[Future, int], progress) -> None:
    job, events = item
    job.result().result()  # the writing, then the publication
    if progress is not None:
        progress(events)


def _days(lines: Lines) -> Iterator[tuple[str, Lines]]:
    """The lines of each UTC day in the chunk (a chunk may straddle midnight)."""
    rest = lines
    while len(rest):
        first = min(int(block.ts[0]) for block, _ in rest.parts() if len(block))
        day_index = first // (DAY_S * 1000)
        part, rest = rest.split((day_index + 1) * DAY_S * 1000)
        yield day_of(day_index * DAY_S), part


def _runs(lines: Lines) -> Iterator[Lines]:
    """Consecutive runs of at most RENDER_LINES lines."""
    rest = lines
    while len(rest):
        run, rest = rest.split_count(RENDER_LINES)
        yield run
