"""The simulated analyst and the truth it reads are for measuring only: the ground truth reaches a model
only through the feedback store, as an analyst's labels. No asset, job or API route imports them (the
demo's CLI command does, to run the loop), and this fails if one starts to."""

from __future__ import annotations

import json
import subprocess
import sys

MEASURING_ONLY = (
    "bankanom_pipeline.reranking.simulated_analyst",
    "bankanom_pipeline.reranking.incident_truth",
    "bankanom_pipeline.reranking.feedback_loop",
)


def test_the_code_location_and_the_api_app_never_import_the_simulated_analyst(tmp_path):
    code = (
        "import json, sys\n"
        "import bankanom_pipeline.definitions\n"
        "import bankanom_api.main\n"
        "assert bankanom_api.main.app.routes\n"
        f"print(json.dumps(sorted(set(sys.modules) & set({MEASURING_ONLY!r}))))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "BANKANOM_HOME": str(tmp_path),
        "BANKANOM_API_KEYS": "guard-test-key",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_the_guard_sees_an_import_of_the_simulated_analyst():
    # the check itself: a process that does import them lists all three
    code = (
        "import json, sys\n"
        "from bankanom_pipeline.reranking import feedback_loop, incident_truth, simulated_analyst\n"
        f"print(json.dumps(sorted(set(sys.modules) & set({MEASURING_ONLY!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == sorted(MEASURING_ONLY)
