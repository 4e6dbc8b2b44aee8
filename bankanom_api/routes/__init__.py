"""The API's routers, one module per area, in the order the app includes them (the OpenAPI document's
order of paths). The transaction routes come before ``/models/{name}``: a path matching several routes
gets its 405 (and Allow) from the first one, so ``/models/{name}`` (GET) would otherwise answer for
``POST /models/predict``'s OPTIONS, PUT, ..."""

from __future__ import annotations

from fastapi import FastAPI

from bankanom_api.responses import BATCH_LIMIT
from bankanom_api.routes import (
    console,
    feedback,
    health,
    incidents,
    metrics,
    models,
    predict,
    scores,
    transactions,
)

ROUTERS = (
    health.router,
    transactions.router,
    models.router,
    predict.router,
    scores.router,
    incidents.router,
    feedback.router,
    console.router,
    metrics.router,
)


def document_batch_limit(app: FastAPI, max_batch: int) -> None:
    """Write the app's batch limit where its operations' documentation says ``BATCH_LIMIT``: the routers
    are module-level and shared by every app, the limit is one app's setting. FastAPI's documented way to
    change the generated document is to replace ``app.openapi``; the first call generates and keeps it."""
    generate, limit = app.openapi, str(max_batch)

    def openapi() -> dict:
        fresh = app.openapi_schema is None
        document = generate()
        if fresh:
            for operations in document["paths"].values():
                for operation in operations.values():
                    texts = [operation, *operation.get("responses", {}).values()]
                    for text in texts:
                        if "description" in text:
                            text["description"] = text["description"].replace(BATCH_LIMIT, limit)
        return document

    app.openapi = openapi
