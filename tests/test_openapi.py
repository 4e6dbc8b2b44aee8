"""The API's OpenAPI document equals the committed copy, ``tests/openapi.json``, byte for byte.

A change to the API shows as a reviewed diff of that copy: a change that means to alter the API
regenerates the copy in the same commit, with

    .venv/bin/python -m tests.test_openapi

which writes the document of the code as it stands (paths and keys in the order the app serves them).
The app is built with the default settings (only the API key given), so neither the environment nor the
data folder changes the document.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from fastapi.testclient import TestClient

from bankanom_api.app import create_app
from bankanom_api.settings import ApiSettings

COPY = Path(__file__).with_name("openapi.json")
SHOWN_LINES = 200


def document_text() -> str:
    """The document as ``GET /openapi.json`` serves it, laid out one key per line."""
    return json.dumps(create_app(ApiSettings(api_keys=["k"])).openapi(), indent=2) + "\n"


def test_openapi_document_matches_the_committed_copy():
    current, committed = document_text(), COPY.read_text()
    if current == committed:
        return
    diff = list(
        difflib.unified_diff(
            committed.splitlines(), current.splitlines(), "tests/openapi.json", "the app", lineterm=""
        )
    )
    shown = "\n".join(diff[:SHOWN_LINES])
    more = f"\n... {len(diff) - SHOWN_LINES} more diff lines" if len(diff) > SHOWN_LINES else ""
    raise AssertionError(
        f"The OpenAPI document differs from the committed copy:\n{shown}{more}\n\n"
        "If the change is deliberate, regenerate the copy and commit it with the change:\n"
        "    .venv/bin/python -m tests.test_openapi"
    )


def test_each_app_documents_its_own_batch_limit():
    # the routers are module-level and shared: one app's limit must not show in another's document
    small, large = (create_app(ApiSettings(api_keys=["k"], max_batch=n)) for n in (7, 123))
    for app, limit in ((small, 7), (large, 123)):
        served = TestClient(app).get("/openapi.json").json()
        assert served == app.openapi()
        predict = served["paths"]["/predict"]["post"]
        assert predict["description"].startswith(f"Up to {limit} events in the generator's JSON log format.")
        assert (
            predict["responses"]["413"]["description"]
            == f"more than {limit} events, or a body over the size limit"
        )
        scoring = served["paths"]["/models/predict"]["post"]
        assert scoring["description"].startswith(f"A JSON list of up to {limit} transactions")
        for path in ("/models/predict", "/models/{model_name}/predict"):
            answer = served["paths"][path]["post"]["responses"]["413"]["description"]
            assert answer == f"more than {limit} transactions, or a body over the size limit"
        assert "{max_batch}" not in json.dumps(served)


if __name__ == "__main__":
    COPY.write_text(document_text())
    print(f"wrote {COPY}")
