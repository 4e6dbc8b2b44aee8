"""What the step-fence tests (tests/test_scale_out.py) publish, in a module of its own: the executions
they start in processes of their own import it without importing Dagster and the definitions."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from bankanom_pipeline.warehouse import frames, lake

DAY = "2026-02-04"
ATTEMPT = "run-1/stg_logs/0"


def publish(root: Path, writer: str) -> str:
    """One execution's output: the partition's file, holding who wrote it."""
    con = lake.connect(str(root))
    frames.replace_partition(con, "outputs", pl.DataFrame({"partition_date": [DAY], "writer": [writer]}), DAY)
    return f"events of {writer}"


def writers(root: Path) -> list[str]:
    con = lake.connect(str(root))
    return [row[0] for row in con.execute("SELECT writer FROM outputs").fetchall()]
