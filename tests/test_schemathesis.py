"""The whole API against its own OpenAPI document: schemathesis (every check: server errors, status
codes, content types, response schemas, negative and positive data, Allow headers, auth, stateful
links) on the real server over HTTP, serving the demo's snapshot and models plus a transactions
delivery. Five examples per operation and a fixed seed keep it short (the test checks that every
operation was still exercised); the longer run is the same script with more examples (docs/api.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api_server import running_api
from tests.conftest import copy_world

PROJECT = Path(__file__).resolve().parent.parent
KEY = "fuzz-key"
EXAMPLES, SEED = 5, 42


@pytest.fixture(scope="module")
def world(transactions_world, tmp_path_factory) -> Path:
    """The demo's world plus a transactions delivery, so that every route has something to serve."""
    return copy_world(transactions_world, tmp_path_factory.mktemp("fuzz"))


@pytest.mark.e2e
def test_schemathesis_finds_no_failure_with_every_check(world, tmp_path):
    limits = {
        # what is under test is the contract, not the limits (they have their own tests): the auth
        # checks send requests without a key, which would otherwise throttle the fuzzer's address
        "BANKANOM_API_RATE_LIMIT": "100000/second",
        "BANKANOM_API_AUTH_FAILURE_LIMIT": "100000/second",
        # the same key ingests too, so that POST /events is exercised beyond its 403
        "BANKANOM_INGEST_KEYS": KEY,
    }
    # with the live stream beside it, as deployed: POST /events and /predict with context forward to it
    with running_api(world, KEY, tmp_path / "api.log", stream=True, **limits) as url:
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
