"""The whole API against its own OpenAPI document: schemathesis (every check: server errors, status
codes, content types, response schemas, negative and positive data, Allow headers, auth, stateful
links) on the real server over HTTP, serving the demo's snapshot and models plus a transactions
delivery. A bounded number of examples per operation and a fixed seed keep it to about a minute; the
longer run is the same script with more examples (docs/api.md)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bankanom_pipeline.transactions.generator import write
from tests.api_server import running_api

PROJECT = Path(__file__).resolve().parent.parent
KEY = "fuzz-key"
EXAMPLES, SEED = 15, 42


@pytest.fixture(scope="module")
def world(demo, tmp_path_factory) -> Path:
    """The demo's models and snapshot (a copy) and a transactions delivery run through the pipeline, so
    that every route has something to serve."""
    _, _, data = demo
    root = tmp_path_factory.mktemp("fuzz")
    world = root / "data"
    world.mkdir()
    shutil.copytree(data / "models", world / "models")
    shutil.copytree(data / "snapshots", world / "snapshots")
    shutil.copy(data / "warehouse.duckdb", world / "warehouse.duckdb")
    inbox, home = root / "inbox", root / "dagster_home"
    home.mkdir()
    write(
        inbox / "bank.csv", inbox / "bank.labels.csv", rows=10_000, seed=3, start=dt.date(2026, 1, 2), days=30
    )
    env = {**os.environ, "BANKANOM_DATA_DIR": str(world), "DAGSTER_HOME": str(home)}
    cli = [sys.executable, "-m", "bankanom_pipeline.cli"]
    result = subprocess.run(
        [*cli, "ingest-transactions", str(inbox / "bank.csv"), "--date", "2026-02-01"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return world


@pytest.mark.slow
def test_schemathesis_finds_no_failure_with_every_check(world, tmp_path):
    limits = {
        # what is under test is the contract, not the limits (they have their own tests): the auth
        # checks send requests without a key, which would otherwise throttle the fuzzer's address
        "BANKANOM_API_RATE_LIMIT": "100000/second",
        "BANKANOM_API_AUTH_FAILURE_LIMIT": "100000/second",
    }
    with running_api(world, KEY, tmp_path / "api.log", **limits) as url:
        result = subprocess.run(
            ["bash", str(PROJECT / "scripts" / "schemathesis.sh"), url, KEY, str(EXAMPLES), str(SEED)],
            env={**os.environ, "PYTHON": sys.executable, "NO_COLOR": "1"},
            cwd=tmp_path,  # its report folder, if any, stays out of the work tree
            capture_output=True,
            text=True,
            timeout=540,
        )
    out = result.stdout
    assert result.returncode == 0, out[-12000:] + result.stderr[-3000:]
    # and every operation of the document was exercised
    selected, tested = re.search(r"Selected: \d+/(\d+)", out), re.search(r"Tested: (\d+)", out)
    assert selected and tested and int(tested.group(1)) == int(selected.group(1)) > 0, out[-3000:]
