"""The one full demo the end-to-end tier shares: `bankanom demo` in a subprocess on a small pair of days
(training day, held-out day with another seed), leaving its output in ``<root>/demo.out``, its exit code
in ``<root>/demo.rc`` and its data folder (warehouse, models, snapshots, landing) in ``<root>/data``.

The `demo` fixture runs it once per test session; scripts/test.sh runs it once per test run, beside the fast
tier (``python -m tests.demo_world ROOT``), and points every end-to-end stream at it through
BANKANOM_TEST_DEMO=ROOT, so no stream waits for it or builds its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO_DAY = "2026-01-06"
# events per second: ~86k a day, above the 50,000 scored events and 1,000 returning customers the
# demo's tests ask for, with incidents of every severity the console and API tests look at
DEMO_RATE = "1.0"
# without the feedback loop (tests/test_demo_feedback.py runs it on a copy of this world): it would add
# two transaction deliveries, an API and the re-rankers' runs to every end-to-end run
COMMAND = ["-m", "bankanom_pipeline.cli", "demo", "--date", DEMO_DAY, "--rate", DEMO_RATE, "--no-feedback"]


def build(root: Path) -> None:
    """Run the demo into ``root`` (created); what it printed and its exit code land beside its data."""
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "BANKANOM_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "dagster_home")}
    with open(root / "demo.out", "w") as out:
        run = subprocess.run(
            [sys.executable, *COMMAND], env=env, stdout=out, stderr=subprocess.STDOUT, timeout=900
        )
    (root / "demo.rc").write_text(str(run.returncode))


def read(root: Path) -> tuple[int, str]:
    """The exit code and output of the demo built into ``root``."""
    return int((root / "demo.rc").read_text()), (root / "demo.out").read_text()


if __name__ == "__main__":
    build(Path(sys.argv[1]))
