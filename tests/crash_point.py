"""``python -m tests.crash_point <bankanom arguments>``: the bankanom CLI, made to stop for good just before
one write commits, so that a test can kill -9 it at a known point of a known step.

CRASH_AT names a warehouse table (the pause comes inside the transaction that rewrites it, after its
statements, before COMMIT) or ``current.json`` (the snapshot pointer, written last when a snapshot is
published). At the pause the process touches CRASH_MARKER and sleeps; with CRASH_STUBBORN set it
also ignores interrupts, as a step stuck in native code would. The patches are made before the
pipeline modules import the patched functions by name."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from bankanom_pipeline import files
from bankanom_pipeline.warehouse import frames

AT = os.environ["CRASH_AT"]
MARKER = Path(os.environ["CRASH_MARKER"])
STUBBORN = bool(os.environ.get("CRASH_STUBBORN"))  # the paused step ignores interrupts


def _pause() -> None:
    MARKER.touch()
    while True:
        try:
            time.sleep(3600)
        except BaseException:
            if not STUBBORN:
                raise


_rewriting = frames.rewriting
_write_atomic = files.write_atomic


@contextmanager
def rewriting(con, *tables: str, day=None):
    with _rewriting(con, *tables, day=day):
        yield
        if AT in tables:
            _pause()


def write_atomic(path: Path, data: bytes) -> None:
    if path.name == AT:
        _pause()
    _write_atomic(path, data)


frames.rewriting = rewriting
files.write_atomic = write_atomic

if __name__ == "__main__":
    from bankanom_pipeline.cli import app

    sys.argv[0] = "bankanom"
    app()
