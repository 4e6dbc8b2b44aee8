"""The console's list of the last pipeline runs: the published ``pipeline_runs`` record.

The run-record sensor (in the Dagster daemon) and the CLI's own runs write the record; the console reads
its published copy, so it takes no lock anything writes and needs no Dagster (see
``bankanom_pipeline/automation/run_records.py``). Both sides find that copy through
``records.published_root()``: the embedded warehouse's published tables, or the lake when it is a folder.
"""

from __future__ import annotations

from bankanom_pipeline import settings
from bankanom_pipeline.automation import records, run_records


def recent_runs(limit: int = 20) -> tuple[list[dict], str | None]:
    """Newest runs first: run_id, job, partition, status, started, seconds; and a note when there are none."""
    root = records.published_root()
    if root is None:
        return [], (
            f"the run record is not published to an object-store lake ({settings.lake_root()}): "
            f"it is pipeline_runs in {settings.alerts_path()}"
        )
    runs = run_records.latest(root, limit)
    if runs is None:
        return [], (
            f"no run recorded yet under {root}: bankanom's CLI records its runs, and the run-record "
            "sensor (dagster daemon, bankanom up) records every run of the instance"
        )
    return runs, None
