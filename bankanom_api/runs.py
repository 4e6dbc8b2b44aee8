"""The last pipeline runs, read from the Dagster instance's run storage without importing Dagster.

The default (embedded) instance keeps runs in SQLite, ``$DAGSTER_HOME/history/runs.db``; it is opened
read-only, so the console never takes a lock a run needs. An instance on another storage (Postgres) is
not read here: the page says so and the Dagster UI has the history.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path


def recent_runs(dagster_home: Path, limit: int = 20) -> tuple[list[dict], str | None]:
    """Newest runs first: run_id, job, partition, status, started, seconds; and a note when none can be read."""
    path = dagster_home / "history" / "runs.db"
    if not path.exists():
        return [], f"no run history at {path} (another run storage, or nothing has run yet)"
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error as error:
        return [], f"run history unreadable: {error}"
    try:
        rows = con.execute(
            """SELECT run_id, pipeline_name, partition, status, start_time, end_time FROM runs
               WHERE pipeline_name NOT LIKE '\\_\\_%' ESCAPE '\\'
               ORDER BY coalesce(start_time, 0) DESC, id DESC LIMIT ?""",
            [limit],
        ).fetchall()
    except sqlite3.Error as error:
        return [], f"run history unreadable: {error}"
    finally:
        con.close()
    return [
        {
            "run_id": run_id,
            "job": job,
            "partition": partition,
            "status": status,
            "started": dt.datetime.fromtimestamp(start, dt.UTC).replace(tzinfo=None) if start else None,
            "seconds": round(end - start, 1) if start and end else None,
        }
        for run_id, job, partition, status, start, end in rows
    ], None
