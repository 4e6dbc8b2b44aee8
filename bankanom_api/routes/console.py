"""The analyst console's pages under ``/console`` (left out of the OpenAPI document).

Handlers are plain ``def`` (the thread pool runs them); reading a posted form is ``async`` (the ``Form``
dependency), and so is the event form's handler, which awaits the live stream's peek (``stream.py``)
and then scores one event and renders its page on the event loop (about a millisecond), so nothing
blocks the event loop for long.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bankanom_api import console_pages as pages
from bankanom_api import console_svg, labelling
from bankanom_api.console import (
    INCIDENT_SORTS,
    PREFIX,
    SEVERITIES,
    TRANSACTION_FIELDS,
    ConsoleError,
    Sessions,
    check_csrf,
    feedback_history,
    feedback_rows,
    feedback_summary,
    labels_by_target,
    render,
    safe_next,
    to_int,
)
from bankanom_api.deps import (
    ConsoleSession,
    ConsoleSessions,
    Form,
    Keys,
    Live,
    LoginLimiter,
    LogPredictor,
    Scorer,
    Settings,
    State,
    Stream,
    feature_set_mismatch,
)
from bankanom_api.responses import as_dicts
from bankanom_api.runs import recent_runs
from bankanom_api.schemas import EXAMPLE_EVENT
from bankanom_api.state import ServingState, Snapshot
from bankanom_api.transactions import EXAMPLE_TRANSACTION
from bankanom_pipeline import feedback
from bankanom_pipeline.online.engine import OnlineEngine

log = logging.getLogger("bankanom_api.console")

router = APIRouter(prefix=PREFIX, include_in_schema=False)

_NOTHING_PUBLISHED = "No snapshot published yet: run pipeline_job (or `bankanom demo`)."


def _published(state: ServingState, table: str, unpublished: str) -> Snapshot:
    """The current snapshot, which must hold ``table`` (503 with ``unpublished`` otherwise)."""
    snap = pages.holding(state, table)
    if snap is None:
        raise ConsoleError(503, unpublished if state.snapshot else state.unavailable("snapshot", unpublished))
    return snap


# -- login ------------------------------------------------------------------------------------------------


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/incidents", status_code=303)


@router.get("/login")
def login_form(request: Request, sessions: ConsoleSessions, next: str | None = None) -> HTMLResponse:
    data = sessions.read(request)
    if not data.get("c"):
        data = {"k": None, "c": secrets.token_urlsafe(24)}
    response = render(request, "login.html", csrf=data["c"], next=safe_next(next), error=None)
    sessions.write(response, request, data)
    return response


@router.post("/login")
def login(
    request: Request, fields: Form, sessions: ConsoleSessions, keys: Keys, login_limiter: LoginLimiter
) -> Response:
    check_csrf(sessions.read(request).get("c"), fields)
    login_limiter.check("login:" + (request.client.host if request.client else "?"))
    target = safe_next(fields.get("next"))
    try:
        key_id = keys.identify(fields.get("api_key") or None)
    except HTTPException:
        csrf = secrets.token_urlsafe(24)
        response = render(
            request, "login.html", 401, csrf=csrf, next=target, error="That API key is not valid."
        )
        sessions.write(response, request, {"k": None, "c": csrf})
        return response
    response = RedirectResponse(target, status_code=303)
    # a fresh token at login: one learned before it is useless after
    sessions.write(response, request, {"k": key_id, "c": secrets.token_urlsafe(24)})
    log.info("console login by key %s", key_id)
    return response


@router.post("/logout")
def logout(who: ConsoleSession, fields: Form) -> Response:
    check_csrf(who.csrf, fields)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    Sessions.clear(response)
    return response


# -- incidents and events ---------------------------------------------------------------------------------


@router.get("/incidents")
def incidents(
    request: Request,
    who: ConsoleSession,
    state: State,
    settings: Settings,
    live: Live,
    severity: str = "",
    status: str = "",
    service: str = "",
    since: str = "",
    until: str = "",
    sort: str = "start",
    order: str = "desc",
    page: str = "1",
) -> HTMLResponse:
    filters = {"severity": severity, "status": status, "service": service, "since": since, "until": until}
    rows = feedback_rows(settings.feedback_db, settings.analysts)
    context: dict[str, Any] = {
        "filters": filters,
        "sort": sort if sort in INCIDENT_SORTS else "start",
        "order": "asc" if order == "asc" else "desc",
        "severities": SEVERITIES,
        "feedback_counts": feedback_summary(rows),
        "errors": {},
        "items": [],
        "total": 0,
        "page": to_int(page, 1),
        "pages": 1,
        "statuses": [],
        "services": [],
    }
    snap = pages.holding(state, "incidents")
    labels = labels_by_target(rows, "incident")
    context["live_items"] = pages.live_incident_list(live, snap, filters, context["errors"])
    if snap is None:
        refused = state.errors.get("snapshot")
        return render(request, "incidents.html", no_snapshot=True, refused=refused, labels=labels, **context)
    context.update(pages.incident_list(snap, filters, context), labels=labels)
    return render(request, "incidents.html", no_snapshot=False, **context)


@router.get("/incidents/{incident_id}")
def incident(
    request: Request,
    who: ConsoleSession,
    state: State,
    settings: Settings,
    live: Live,
    incident_id: str,
    saved: str = "",
    selection: str = "",
) -> Response:
    snap = _published(state, "incidents", _NOTHING_PUBLISHED) if not live.path.exists() else None
    snap = snap or pages.holding(state, "incidents")
    found = snap.query("SELECT * FROM incidents WHERE incident_id = ?", [incident_id]) if snap else ([], [])
    if found[1]:
        row = {**as_dicts(*found)[0], "live": False}
        events = pages.incident_events(snap, incident_id)
    else:  # the live stream's, until the batch holds it
        row = live.incident(incident_id, events=pages.INCIDENT_EVENTS)
        if row is None:
            raise ConsoleError(
                404, f"There is no incident {incident_id!r} in the snapshot or the live store."
            )
        if row.get("merged_into"):
            return RedirectResponse(f"{PREFIX}/incidents/{row['merged_into']}", status_code=303)
        events, row["live"] = row.pop("events"), True
    top = json.loads(row.get("top_features") or "[]")
    rerank = pages.incident_rerank(snap, incident_id)
    gain, gain_problem = pages.reranker_gain(settings.models_dir, "incident_reranker")
    return render(
        request,
        "incident.html",
        nav="incidents",
        incident=row,
        events=events[:200],
        event_total=len(events),
        timeline=console_svg.timeline(events),
        bars=console_svg.deviation_bars(top),
        top_features=top,
        alternatives=json.loads(row.get("scenario_alternatives") or "[]"),
        history=feedback_history(
            feedback_rows(settings.feedback_db, settings.analysts), "incident", incident_id
        ),
        saved=bool(saved),
        kind="incident",
        target_id=incident_id,
        selection=selection if selection in feedback.SELECTIONS else "",
        score_before=row.get("max_score"),
        score_after=rerank["rerank_score"] if rerank else None,
        suppressed=bool(rerank and rerank.get("suppressed")),
        gain=gain,
        gain_problem=gain_problem,
    )


@router.get("/events/{event_id}")
def event(request: Request, who: ConsoleSession, state: State, live: Live, event_id: str) -> HTMLResponse:
    snap = _published(state, "scored_events", _NOTHING_PUBLISHED) if not live.path.exists() else None
    snap = snap or pages.holding(state, "scored_events")
    found = pages.event_detail(snap, event_id) if snap else None
    is_live = found is None
    if is_live:  # the live stream's, until the batch holds it
        found = live.event(event_id)
        if found is None:
            raise ConsoleError(404, f"There is no event {event_id!r} in the snapshot or the live store.")
    scored, raw, incidents_of = found
    return render(
        request,
        "event.html",
        nav="incidents",
        live=is_live,
        event_id=event_id,
        scored=scored,
        raw=raw,
        incidents_of=incidents_of,
    )


# -- transactions -----------------------------------------------------------------------------------------


@router.get("/transactions")
def transactions(
    request: Request,
    who: ConsoleSession,
    state: State,
    settings: Settings,
    account: str = "",
    page: str = "1",
) -> HTMLResponse:
    snap = pages.holding(state, "transactions")
    context: dict[str, Any] = {"account": account, "items": [], "total": 0, "page": 1, "pages": 1}
    rows = feedback_rows(settings.feedback_db, settings.analysts)
    context["feedback_counts"] = feedback_summary(rows)
    if snap is None:
        return render(request, "transactions.html", no_snapshot=True, **context)
    context.update(pages.flagged_transactions(snap, account, to_int(page, 1)))
    context["labels"] = labels_by_target(rows, "transaction")
    return render(request, "transactions.html", no_snapshot=False, **context)


@router.get("/transactions/{transaction_id}")
def transaction(
    request: Request,
    who: ConsoleSession,
    state: State,
    settings: Settings,
    transaction_id: str,
    saved: str = "",
    selection: str = "",
) -> HTMLResponse:
    snap = _published(state, "transactions", "No transactions published yet: run transactions_job.")
    columns, found = snap.query("SELECT * FROM transactions WHERE transaction_id = ?", [transaction_id])
    if not found:
        raise ConsoleError(404, f"There is no transaction {transaction_id!r} in the current snapshot.")
    row = as_dicts(columns, found)[0]
    top = list(row.pop("top_features") or [])
    gain, gain_problem = pages.reranker_gain(settings.models_dir, "transaction_reranker")
    return render(
        request,
        "transaction.html",
        nav="transactions",
        tx=row,
        bars=console_svg.deviation_bars(top),
        history=feedback_history(
            feedback_rows(settings.feedback_db, settings.analysts), "transaction", transaction_id
        ),
        saved=bool(saved),
        kind="transaction",
        target_id=transaction_id,
        selection=selection if selection in feedback.SELECTIONS else "",
        score_before=row.get("ensemble_score"),
        score_after=row.get("rerank_score"),
        suppressed=False,
        gain=gain,
        gain_problem=gain_problem,
    )


# -- feedback ---------------------------------------------------------------------------------------------


@router.get("/review")
def review(request: Request, who: ConsoleSession, state: State, settings: Settings) -> HTMLResponse:
    """What to label next (the feedback queue of each kind) and the audit trail's summary: who labelled
    what, changes of mind and disagreements."""
    rows = feedback_rows(settings.feedback_db, settings.analysts)
    snap = state.snapshot
    return render(
        request,
        "review.html",
        queues={kind: pages.review_queue(snap, rows, kind, settings.models_dir) for kind in feedback.KINDS},
        no_snapshot=snap is None,
        feedback_counts=feedback_summary(rows),
        audit=feedback.audit(rows),
    )


@router.post("/feedback")
def post_feedback(
    who: ConsoleSession, fields: Form, state: State, settings: Settings, live: Live
) -> Response:
    check_csrf(who.csrf, fields)
    try:  # the JSON route's rules in its order (who, then what), its status codes as the error page's
        labelling.person(settings.analysts, who.key_id)
        body = labelling.from_form(fields)
        labelling.submit(settings, state, live, who.key_id, body, "console")
    except HTTPException as error:
        raise ConsoleError(error.status_code, str(error.detail)) from None
    page = f"{PREFIX}/{'incidents' if body.kind == 'incident' else 'transactions'}/{body.target_id}"
    return RedirectResponse(f"{page}?saved=1#feedback", status_code=303)


# -- predict ----------------------------------------------------------------------------------------------


def _predict_page(request: Request, state: ServingState, status_code: int = 200, **context) -> HTMLResponse:
    defaults = {
        "tx_values": {k: "" if v is None else str(v) for k, v in EXAMPLE_TRANSACTION.items()},
        "tx_errors": {},
        "tx_result": None,
        "event_text": json.dumps(EXAMPLE_EVENT, indent=2),
        "event_errors": [],
        "event_result": None,
        "fields": TRANSACTION_FIELDS,
        "tx_ready": state.transaction_models is not None,
        "logs_ready": state.models is not None,
    }
    return render(request, "predict.html", status_code, **{**defaults, **context})


@router.get("/predict")
def predict_form(request: Request, who: ConsoleSession, state: State) -> HTMLResponse:
    return _predict_page(request, state)


@router.post("/predict/transaction")
def predict_transaction(
    request: Request, who: ConsoleSession, fields: Form, state: State, scorer: Scorer
) -> HTMLResponse:
    check_csrf(who.csrf, fields)
    values, posted, errors = pages.transaction_form(fields)
    if posted is None:
        return _predict_page(request, state, 422, tx_values=values, tx_errors=errors)
    models = state.transaction_models
    if models is None:
        errors = {"form": "no promoted transaction models yet"}
        return _predict_page(request, state, 503, tx_values=values, tx_errors=errors)
    record = scorer.predict([posted], models, state.snapshot, None)[0]
    record["versions"] = models.versions
    return _predict_page(request, state, tx_values=values, tx_result=record)


@router.post("/predict/event")
async def predict_event(
    request: Request, who: ConsoleSession, fields: Form, state: State, predictor: LogPredictor, stream: Stream
) -> HTMLResponse:
    check_csrf(who.csrf, fields)
    text = fields.get("event", "")
    posted, problems = pages.event_form(text)
    if posted is None:
        return _predict_page(request, state, 422, event_text=text, event_errors=problems)
    models = state.models
    if models is None:
        problems = [state.unavailable("models", "no promoted log models yet")]
        return _predict_page(request, state, 503, event_text=text, event_errors=problems)
    mismatch = feature_set_mismatch(models, OnlineEngine.FEATURE_SET_VERSION)
    if mismatch:
        return _predict_page(request, state, 503, event_text=text, event_errors=[mismatch])
    try:  # scored in its context, as POST /predict scores it; explained whether flagged or not
        peeked = await stream.peek([posted])
    except HTTPException as error:  # the stream is down (503), or refuses the event (409, 422)
        detail = error.detail
        message = detail[0]["msg"] if isinstance(detail, list) and detail else str(detail)
        return _predict_page(request, state, error.status_code, event_text=text, event_errors=[message])
    values = np.asarray(peeked["features"], dtype=np.float64).reshape(1, -1)
    result = predictor.predict([posted.event_id], values, peeked["columns"], models, None, True)[0]
    result["versions"] = models.versions
    return _predict_page(request, state, event_text=text, event_result=result)


# -- models and pipeline ----------------------------------------------------------------------------------


@router.get("/models")
def models_page(
    request: Request, who: ConsoleSession, state: State, settings: Settings, live: Live
) -> HTMLResponse:
    snap = state.snapshot
    failures, alerts_problem = pages.alerts(settings.alerts_db)
    log_eval = pages.evaluation(state, "evaluation_metrics", "evaluation_curves")
    runs, runs_problem = recent_runs()
    return render(
        request,
        "models.html",
        log_models=pages.manifests(state.models),
        tx_models=pages.manifests(state.transaction_models),
        log_eval=log_eval,
        reconciliation=pages.reconciliation(live, snap, log_eval["day"]),
        tx_eval=pages.evaluation(state, "transaction_evaluation_metrics", "transaction_evaluation_curves"),
        pointer=snap.pointer if snap is not None else None,
        registry=pages.registry(snap),
        failures=failures,
        alerts_problem=alerts_problem,
        runs=runs,
        runs_problem=runs_problem,
        feedback_counts=feedback_summary(feedback_rows(settings.feedback_db, settings.analysts)),
        problems=dict(state.errors),
    )
