"""Write generated traffic as JSONL files in the landing zone, one folder per UTC day.

A file becomes visible under its final name only when complete (written as a dot-file, then renamed),
so a sensor or an ingest run never reads half a file.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.render import to_json_lines

DAY_S = 86_400


def day_of(epoch_s: int) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%d")


def partition_dir(landing_logs: Path, day: str) -> Path:
    return landing_logs / day


def atomic_write_lines(path: Path, lines: pl.Series) -> None:
    """Write lines (no quoting: each is already a JSON object) under a hidden name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    with open(temporary, "wb") as handle:
        pl.DataFrame({"line": lines}).write_csv(handle, include_header=False, quote_style="never")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


@dataclass
class WriteSummary:
    events: int = 0
    anomalous: int = 0
    files: list[Path] = field(default_factory=list)
    days: set[str] = field(default_factory=set)


def write_frame(frame: pl.DataFrame, generator: Generator, landing_logs: Path, stem: str) -> WriteSummary:
    """Write one frame, split at UTC midnight so every file lies inside one daily partition."""
    summary = WriteSummary()
    if frame.height == 0:
        return summary
    frame = frame.with_columns(_day=(pl.col("ts") // (DAY_S * 1000)))
    for (day_index,), part in frame.group_by("_day", maintain_order=True):
        day = day_of(int(day_index) * DAY_S)
        lines = to_json_lines(part.drop("_day"), generator)
        path = partition_dir(landing_logs, day) / f"{stem}.jsonl"
        atomic_write_lines(path, lines)
        summary.events += part.height
        if "scenario" in part.columns:
            summary.anomalous += int((part["scenario"].fill_null(-1) >= 0).sum())
        summary.files.append(path)
        summary.days.add(day)
    return summary


def write_range(
    generator: Generator,
    landing_logs: Path,
    start_s: int,
    end_s: int | None = None,
    events: int | None = None,
    chunk_s: int = 3600,
    progress=None,
) -> WriteSummary:
    """Write [start_s, end_s) or exactly ``events`` lines from ``start_s``; one file per chunk and day."""
    if (end_s is None) == (events is None):
        raise ValueError("give either end_s or events")
    chunks = (
        generator.stream(start_s, end_s, chunk_s)
        if events is None
        else generator.generate_n(events, start_s, chunk_s)
    )
    total = WriteSummary()
    for chunk_start, frame in chunks:
        stamp = dt.datetime.fromtimestamp(chunk_start, dt.UTC).strftime("%Y%m%dT%H%M%S")
        part = write_frame(frame, generator, landing_logs, f"mock-{stamp}-seed{generator.config.seed}")
        total.events += part.events
        total.anomalous += part.anomalous
        total.files.extend(part.files)
        total.days |= part.days
        if progress is not None:
            progress(part.events)
    return total
