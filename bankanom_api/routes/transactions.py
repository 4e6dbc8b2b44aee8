"""Bank-transaction routes with the predecessor transaction detector's bodies (``bankanom_api.transactions``
has the records and the scorer)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status

from bankanom_api.deps import (
    API_KEY,
    Scorer,
    Settings,
    State,
    loaded_transaction_models,
    published_transactions,
)
from bankanom_api.responses import (
    AUTH,
    BATCH_LIMIT,
    Limit,
    Offset,
    as_dicts,
    json_response,
    problem,
    where_clause,
)
from bankanom_api.state import ServingState
from bankanom_api.transactions import (
    RECORD_COLUMNS,
    PublishedTransaction,
    ScoredTransaction,
    Transaction,
)

router = APIRouter(tags=["transactions"], dependencies=[API_KEY], responses=AUTH)

_NO_SNAPSHOT = problem(503, "no transactions published yet")
_SCORING = {
    **problem(503, "no transaction models promoted yet"),
    **problem(413, f"more than {BATCH_LIMIT} transactions, or a body over the size limit"),
    **problem(409, "a TransactionID repeated within the request"),
}


@router.get(
    "/transactions",
    summary="Scored transactions, newest first",
    response_model=list[PublishedTransaction],
    responses=_NO_SNAPSHOT,
)
@router.get("/transactions/", include_in_schema=False)
def list_transactions(
    state: State,
    account: str | None = None,
    flagged_only: bool = False,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="minimum ensemble score")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    clause, params = where_clause(
        [
            ("account_id = ?", account),
            ("ensemble_score >= ?", min_score),
            ("is_anomaly", True if flagged_only else None),
        ]
    )
    return json_response(_records(state, clause, params, limit, offset))


@router.get(
    "/transactions/{account_id}",
    summary="One account's scored transactions, newest first",
    response_model=list[PublishedTransaction],
    responses={**_NO_SNAPSHOT, **problem(404, '{"detail": "Account ID not found"}')},
)
@router.get("/transactions/{account_id}/", include_in_schema=False)
def account_transactions(account_id: str, state: State, limit: Limit = 100, offset: Offset = 0) -> Response:
    found = _records(state, "WHERE account_id = ?", [account_id], limit, offset)
    if not found and offset == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Account ID not found")
    return json_response(found)


@router.post(
    "/models/predict",
    summary="Score transactions with both models: if_pred, lof_pred and the combined isFraud",
    response_model=list[ScoredTransaction],
    responses=_SCORING,
    description=(
        f"A JSON list of up to {BATCH_LIMIT} transactions (the CSV's fields). Each is scored with its "
        "account's published history. isFraud is the ensemble decision (transactions/detection.yaml), or "
        "the promoted transaction re-ranker's (rerank_score >= 0.5) when one is promoted."
    ),
)
@router.post("/models/predict/", include_in_schema=False)
def predict_both(body: list[Transaction], state: State, settings: Settings, scorer: Scorer) -> Response:
    _check_size(body, settings.max_batch)
    return json_response(
        scorer.predict(
            body,
            loaded_transaction_models(state),
            state.snapshot,
            None,
            scorer.reranker(state.transaction_models_dir),
        )
    )


@router.post(
    "/models/{model_name}/predict",
    summary="Score transactions with one model: isFraud is its flag",
    response_model=list[ScoredTransaction],
    responses=_SCORING,
)
@router.post("/models/{model_name}/predict/", include_in_schema=False)
def predict_one(
    model_name: Literal["isolation_forest", "local_outlier_factor"],
    body: list[Transaction],
    state: State,
    settings: Settings,
    scorer: Scorer,
) -> Response:
    _check_size(body, settings.max_batch)
    return json_response(
        scorer.predict(
            body,
            loaded_transaction_models(state),
            state.snapshot,
            model_name,
            scorer.reranker(state.transaction_models_dir),
        )
    )


def _check_size(body: list[Transaction], max_batch: int) -> None:
    if len(body) > max_batch:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"{len(body)} transactions; at most {max_batch} per request"
        )


def _records(state: ServingState, where: str, params: list, limit: int, offset: int) -> list[dict]:
    names, rows = published_transactions(state).query(
        f"SELECT {RECORD_COLUMNS} FROM transactions {where} ORDER BY ts DESC, transaction_id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return as_dicts(names, rows)
