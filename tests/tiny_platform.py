"""The tiny platform the crash-recovery and reader-during-run tests start from, and the CLI run in this
process for the runs those tests are not about.

``prepare`` lands two tiny days (~5k events each: a training day and the day the tests run
pipeline_job on) and builds a data folder holding features and a promoted model pair for the training
day (``bankanom run --job features_job`` and ``bankanom train``); the ``tiny_world`` fixture
(tests/conftest.py) does it once per test process, or scripts/test.sh once per test run (``python -m
tests.tiny_platform ROOT``, handed to both tiers in BANKANOM_TEST_TINY=ROOT), and each test copies that
folder instead of building its own.

``bankanom`` runs a CLI command in this process, typer's ``CliRunner`` around the real app: a run
whose process a test kills, signals or watches is still a process of its own running
``bankanom_pipeline.cli`` (or ``tests.crash_point``), forked by tests/fork_server.py; the runs that only
set a scene or repair one do not pay the seconds of importing Dagster, scikit-learn and Great
Expectations again."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_DAY = "2026-02-01"
DAY = "2026-02-02"
RATE = 0.05  # events per second: ~5k a day
SEEDS = {TRAIN_DAY: 100, DAY: 101}  # each day's traffic seed
# settings that would send the runs elsewhere than the test's folders (lake mode, Celery, another file)
_FOREIGN = (
    "BANKANOM_STORAGE",
    "BANKANOM_EXECUTOR",
    "BANKANOM_LAKE_ROOT",
    "BANKANOM_WAREHOUSE",
    "BANKANOM_PUBLISHED_DIR",
)


def cli_env(data: Path, landing: Path, home: Path) -> dict:
    """The environment of a CLI run writing under ``data``, reading ``landing``, recording its runs in the
    instance ``home`` (created with the committed dagster.yaml: the duckdb pool of one)."""
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {name: value for name, value in os.environ.items() if name not in _FOREIGN}
    return env | {
        "BANKANOM_DATA_DIR": str(data),
        "BANKANOM_LANDING_DIR": str(landing),
        "DAGSTER_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    }


def bankanom(env: dict, *args: str) -> tuple[int, str]:
    """``bankanom *args`` in this process with ``env`` as the whole environment: its exit code and what it
    printed (Dagster's DEBUG lines left out).

    The code location binds the warehouse's path when it is imported, so it is imported afresh under
    ``env``, and again after the command under the environment of before."""
    from typer.testing import CliRunner

    import bankanom_pipeline.definitions as definitions
    from bankanom_pipeline.cli import app

    before = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        importlib.reload(definitions)
        assert definitions.defs.resources["warehouse"].database == str(
            Path(env["BANKANOM_DATA_DIR"]) / "warehouse.duckdb"
        )
        result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        os.environ.clear()
        os.environ.update(before)
        importlib.reload(definitions)
    printed = "\n".join(line for line in result.output.splitlines() if " - DEBUG - " not in line)
    return result.exit_code, printed


def ok(env: dict, *args: str) -> str:
    """``bankanom(env, *args)``, which must exit 0; what it printed."""
    code, printed = bankanom(env, *args)
    assert code == 0, f"bankanom {' '.join(args)} exited {code}:\n{printed[-4000:]}"
    return printed


def prepare(root: Path) -> Path:
    """``root`` with ``landing/`` (TRAIN_DAY and DAY) and ``base/``, a data folder with TRAIN_DAY's
    features and a promoted model pair trained on them (the session's ``tiny_world`` fixture)."""
    from tests.conftest import generated_days

    generated_days(root / "landing", SEEDS, RATE)
    env = cli_env(root / "base", root / "landing", root / "dagster_home")
    ok(env, "run", "--job", "features_job", "--date", TRAIN_DAY)
    ok(env, "train", "--end-date", TRAIN_DAY)
    return root


def stream_days(scorer, landing_logs: Path, batch: int) -> None:
    """Both tiny days' landed lines through ``scorer`` (a ``LiveScorer``) in timestamp order, ``batch``
    at a time, numbered as the mock server's stream numbers them: what a live run of these days keeps."""
    import orjson

    from bankanom_pipeline.live.sources import Item

    offset = 0
    for day in (TRAIN_DAY, DAY):
        lines = [
            line for p in sorted((landing_logs / day).glob("*.jsonl")) for line in p.read_bytes().splitlines()
        ]
        lines.sort(key=lambda line: orjson.loads(line)["timestamp"])
        for start in range(0, len(lines), batch):
            items = [
                Item(f"1:{offset + i}", line, None) for i, line in enumerate(lines[start : start + batch])
            ]
            offset += len(items)
            scorer.process(items, "mock")


if __name__ == "__main__":
    import sys

    prepare(Path(sys.argv[1]))
