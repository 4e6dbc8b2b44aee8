"""The simulated analyst and the truth it reads are for measuring only: the ground truth reaches a model
only through the feedback store, as an analyst's labels. No asset, job or API route imports them (the
demo's CLI command does, to run the loop), and this fails if one starts to."""

from __future__ import annotations

from tests.imports import imported_by

MEASURING_ONLY = (
    "bankanom_pipeline.reranking.simulated_analyst",
    "bankanom_pipeline.reranking.incident_truth",
    "bankanom_pipeline.reranking.feedback_loop",
)


def test_the_code_location_and_the_api_app_never_import_the_simulated_analyst(tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "BANKANOM_HOME": str(tmp_path),
        "BANKANOM_API_KEYS": "guard-test-key",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    statements = (
        "import bankanom_pipeline.definitions\nimport bankanom_api.main\nassert bankanom_api.main.app.routes"
    )
    assert imported_by(statements, MEASURING_ONLY, env) == []


def test_the_guard_sees_an_import_of_the_simulated_analyst():
    # the check itself: a process that does import them lists all three
    statements = "from bankanom_pipeline.reranking import feedback_loop, incident_truth, simulated_analyst"
    assert imported_by(statements, MEASURING_ONLY) == sorted(MEASURING_ONLY)
