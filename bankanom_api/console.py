"""The analyst console: server-rendered pages under ``/console`` (Jinja2, no JavaScript build, no CDN).

The pages read exactly what the JSON API reads (the published snapshot and the promoted models, through
the same ``ServingState``), so they keep working while a run writes the warehouse. Analyst feedback is
appended to its own DuckDB file (``bankanom_pipeline.feedback``), never to the warehouse.

Security: the same API keys as the JSON API. The login form takes a key and sets a signed, HTTP-only,
SameSite=Lax session cookie (``itsdangerous``; it holds the key's non-secret id and a CSRF token, never
the key). A session names a key id, so removing a key from BANKANOM_API_KEYS ends its sessions. Every
form that posts carries the session's CSRF token in a hidden field; a missing or wrong token is a 403.

Handlers are plain ``def`` (the thread pool runs them); only reading a posted form is ``async`` (a
dependency), so nothing blocks the event loop. (No ``from __future__ import annotations`` here: FastAPI
must resolve the handlers' ``Annotated`` dependencies, which are local to ``install``.)
"""

import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import duckdb
import jinja2
import polars as pl
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import ValidationError

from bankanom_api import console_svg
from bankanom_api.predict import Predictor
from bankanom_api.responses import as_dicts, rfc3339
from bankanom_api.runs import recent_runs
from bankanom_api.schemas import EXAMPLE_EVENT, LogEvent
from bankanom_api.security import KeyChecker, RateLimiter
from bankanom_api.state import ServingState, Snapshot
from bankanom_api.transactions import EXAMPLE_TRANSACTION, Transaction, TransactionScorer
from bankanom_pipeline import feedback

log = logging.getLogger("bankanom_api.console")

HERE = Path(__file__).parent
PREFIX = "/console"
COOKIE = "bankanom_console"
SESSION_SECONDS = 12 * 3600
PAGE_SIZE = 25
SEVERITIES = ["Critical", "High", "Medium", "Low"]
_SEVERITY_RANK = "CASE severity WHEN 'Critical' THEN 4 WHEN 'High' THEN 3 WHEN 'Medium' THEN 2 ELSE 1 END"
INCIDENT_SORTS = {
    "start": "start_ts",
    "severity": _SEVERITY_RANK,
    "score": "max_score",
    "events": "event_count",
    "confidence": "scenario_confidence",
}
EVENT_METRICS = ["precision", "recall", "f1", "pr_auc", "roc_auc", "fp_per_10k_normal"]
TRANSACTION_FIELDS = [
    ("TransactionID", "text"),
    ("AccountID", "text"),
    ("TransactionAmount", "number"),
    ("TransactionDate", "text"),
    ("TransactionType", ["Debit", "Credit"]),
    ("Location", "text"),
    ("DeviceID", "text"),
    ("IPAddress", "text"),
    ("MerchantID", "text"),
    ("Channel", ["ATM", "Online", "Branch"]),
    ("CustomerAge", "number"),
    ("CustomerOccupation", ["Doctor", "Student", "Retired", "Engineer", "Other"]),
    ("TransactionDuration", "number"),
    ("LoginAttempts", "number"),
    ("AccountBalance", "number"),
    ("PreviousTransactionDate", "text"),
]


class ConsoleError(Exception):
    """Rendered as the console's error page with this status (instead of JSON)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Analyst:
    key_id: str
    csrf: str


class Sessions:
    """The signed session cookie: ``{"k": key id or None, "c": CSRF token}``."""

    def __init__(self, secret: bytes):
        self._serializer = URLSafeTimedSerializer(secret, salt="bankanom-console-session")

    def read(self, request: Request) -> dict:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return {}
        try:
            data = self._serializer.loads(raw, max_age=SESSION_SECONDS)
        except BadSignature:  # includes expired
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, response: Response, request: Request, data: dict) -> None:
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(data),
            max_age=SESSION_SECONDS,
            path=PREFIX,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )

    @staticmethod
    def clear(response: Response) -> None:
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="lax")


def session_secret(configured: str, api_keys: list[str]) -> bytes:
    """BANKANOM_CONSOLE_SECRET when set; otherwise derived from the API keys, so every worker process
    signs alike and changing the keys ends every session."""
    if configured:
        return configured.encode()
    return hashlib.sha256(b"bankanom-console\0" + b"\0".join(sorted(k.encode() for k in api_keys))).digest()


async def form_fields(request: Request) -> dict[str, str]:
    """The posted form's text fields (reading the body is the only async step of a console POST)."""
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


Form = Annotated[dict[str, str], Depends(form_fields)]


def _safe_next(value: str | None) -> str:
    """Where to go after login: a console path only (no open redirect)."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/incidents"


def _parse_time(value: str | None) -> dt.datetime | None:
    value = (value or "").strip()
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)  # ValueError: reported next to the field
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _int(value: str | None, default: int, low: int = 1) -> int:
    try:
        return max(low, int(value or default))
    except ValueError:
        return default


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value.is_integer() and abs(value) >= 1:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:,.{digits}f}"
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    return str(value)


def _instant(text: str | None) -> str:
    """An ISO 8601 time held as text (manifests, the snapshot pointer), shown as ``_fmt`` shows times."""
    return _fmt(dt.datetime.fromisoformat(text)) if text else "–"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "console_templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["instant"] = _instant
    env.filters["label_name"] = lambda v: feedback.LABEL_NAMES.get(v, v or "")
    env.globals["prefix"] = PREFIX
    env.globals["feedback_labels"] = feedback.LABEL_NAMES
    return env


def install(
    app: FastAPI,
    state: ServingState,
    keys: KeyChecker,
    limiter: RateLimiter,
    login_limiter: RateLimiter,
    predictor: Predictor,
    secret: bytes,
    feedback_db: Path,
    alerts_db: Path,
) -> None:
    """Mount the console's pages, static files and error page on ``app``."""
    templates = Jinja2Templates(env=_environment())
    sessions = Sessions(secret)
    scorer = TransactionScorer()

    def render(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        who = getattr(request.state, "analyst", None)
        context.setdefault("csrf", who.csrf if who else "")
        context.setdefault("key_id", who.key_id if who else None)
        context.setdefault("nav", name.removesuffix(".html"))
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    @app.exception_handler(ConsoleError)
    async def _console_error(request: Request, error: ConsoleError) -> HTMLResponse:
        return render(request, "error.html", status_code=error.status, message=error.message)

    async def analyst(request: Request) -> Analyst:
        """The logged-in analyst; otherwise a redirect to the login form."""
        data = sessions.read(request)
        key_id, csrf = data.get("k"), data.get("c")
        if not key_id or not csrf or key_id not in keys.known_ids():
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(
                303, "log in first", headers={"Location": f"{PREFIX}/login?{urlencode({'next': target})}"}
            )
        limiter.check(key_id)
        who = Analyst(key_id, csrf)
        request.state.analyst = who
        return who

    Who = Annotated[Analyst, Depends(analyst)]

    def check_csrf(expected: str | None, fields: dict[str, str]) -> None:
        presented = fields.get("csrf", "")
        if not expected or not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
            raise ConsoleError(
                403, "The form's CSRF token is missing or invalid: reload the page and try again."
            )

    def snapshot(table: str) -> Snapshot | None:
        snap = state.snapshot
        return snap if snap is not None and snap.has(table) else None

    def published(table: str, unpublished: str) -> Snapshot:
        """The current snapshot, which must hold ``table`` (503 with ``unpublished`` otherwise)."""
        snap = snapshot(table)
        if snap is None:
            raise ConsoleError(
                503, unpublished if state.snapshot else state.unavailable("snapshot", unpublished)
            )
        return snap

    def feedback_rows() -> Any:
        try:
            return feedback.read(feedback_db)
        except duckdb.Error as error:
            log.warning("could not read feedback: %s", error)
            return pl.DataFrame(schema=feedback.COLUMNS)

    def feedback_summary(rows) -> dict[str, dict]:
        return {kind: feedback.precision(rows, kind) for kind in feedback.KINDS}

    def labels_by_target(rows, kind: str) -> dict[str, str]:
        latest = feedback.latest(rows).filter(pl.col("kind") == kind)
        return dict(zip(latest["target_id"].to_list(), latest["label"].to_list(), strict=True))

    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    # -- login ----------------------------------------------------------------------------------------

    @router.get("")
    @router.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/incidents", status_code=303)

    @router.get("/login")
    def login_form(request: Request, next: str | None = None) -> HTMLResponse:
        data = sessions.read(request)
        if not data.get("c"):
            data = {"k": None, "c": secrets.token_urlsafe(24)}
        response = render(request, "login.html", csrf=data["c"], next=_safe_next(next), error=None)
        sessions.write(response, request, data)
        return response

    @router.post("/login")
    def login(request: Request, fields: Form) -> Response:
        check_csrf(sessions.read(request).get("c"), fields)
        login_limiter.check("login:" + (request.client.host if request.client else "?"))
        target = _safe_next(fields.get("next"))
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
    def logout(who: Who, fields: Form) -> Response:
        check_csrf(who.csrf, fields)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        sessions.clear(response)
        return response

    # -- incidents ------------------------------------------------------------------------------------

    @router.get("/incidents")
    def incidents(
        request: Request,
        who: Who,
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
        rows = feedback_rows()
        context: dict[str, Any] = {
            "filters": filters,
            "sort": sort if sort in INCIDENT_SORTS else "start",
            "order": "asc" if order == "asc" else "desc",
            "severities": SEVERITIES,
            "feedback_counts": feedback_summary(rows),
            "errors": {},
            "items": [],
            "total": 0,
            "page": _int(page, 1),
            "pages": 1,
            "statuses": [],
            "services": [],
        }
        snap = snapshot("incidents")
        if snap is None:
            return render(
                request, "incidents.html", no_snapshot=True, refused=state.errors.get("snapshot"), **context
            )
        conditions: list[tuple[str, Any]] = []
        if severity in SEVERITIES:
            conditions.append(("severity = ?", severity))
        if status:
            conditions.append(("status = ?", status))
        if service:
            conditions.append(("list_contains(services, ?)", service))
        for name, sql in (("since", "end_ts >= ?"), ("until", "start_ts < ?")):
            try:
                value = _parse_time(filters[name])
            except ValueError:
                context["errors"][name] = "not a date and time (YYYY-MM-DD or YYYY-MM-DDTHH:MM)"
                continue
            if value is not None:
                conditions.append((sql, value))
        where = ("WHERE " + " AND ".join(sql for sql, _ in conditions)) if conditions else ""
        params = [value for _, value in conditions]
        total = snap.query(f"SELECT count(*) FROM incidents {where}", params)[1][0][0]
        pages = max(1, math.ceil(total / PAGE_SIZE))
        current = min(context["page"], pages)
        direction = "ASC" if context["order"] == "asc" else "DESC"
        columns, found = snap.query(
            f"""SELECT incident_id, start_ts, end_ts, severity, status, services, event_count, max_score,
                       scenario_name, scenario_confidence, origin_service
                FROM incidents {where}
                ORDER BY {INCIDENT_SORTS[context["sort"]]} {direction} NULLS LAST, incident_id
                LIMIT ? OFFSET ?""",
            [*params, PAGE_SIZE, (current - 1) * PAGE_SIZE],
        )
        context.update(
            items=as_dicts(columns, found),
            total=total,
            page=current,
            pages=pages,
            labels=labels_by_target(rows, "incident"),
            statuses=[r[0] for r in snap.query("SELECT DISTINCT status FROM incidents ORDER BY 1")[1]],
            services=[
                r[0] for r in snap.query("SELECT DISTINCT unnest(services) AS s FROM incidents ORDER BY 1")[1]
            ],
        )

        def link(**change) -> str:
            query = {**filters, "sort": context["sort"], "order": context["order"], "page": current, **change}
            return f"{PREFIX}/incidents?" + urlencode({k: v for k, v in query.items() if v not in ("", None)})

        context["link"] = link
        return render(request, "incidents.html", no_snapshot=False, **context)

    @router.get("/incidents/{incident_id}")
    def incident(request: Request, who: Who, incident_id: str, saved: str = "") -> HTMLResponse:
        snap = published("incidents", "No snapshot published yet: run pipeline_job (or `bankanom demo`).")
        columns, found = snap.query("SELECT * FROM incidents WHERE incident_id = ?", [incident_id])
        if not found:
            raise ConsoleError(404, f"There is no incident {incident_id!r} in the current snapshot.")
        row = as_dicts(columns, found)[0]
        events: list[dict] = []
        if snap.has("incident_events"):
            columns, found = snap.query(
                """SELECT event_id, ts, source_service, user_id, ip_address, ensemble_score
                   FROM incident_events WHERE incident_id = ? ORDER BY ts, event_id LIMIT 5000""",
                [incident_id],
            )
            events = as_dicts(columns, found)
        top = json.loads(row.get("top_features") or "[]")
        rows = feedback_rows()
        history = rows.filter(
            (pl.col("kind") == "incident") & (pl.col("target_id") == incident_id)
        ).to_dicts()
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
            history=history,
            saved=bool(saved),
            kind="incident",
            target_id=incident_id,
        )

    @router.get("/events/{event_id}")
    def event(request: Request, who: Who, event_id: str) -> HTMLResponse:
        snap = published("scored_events", "No snapshot published yet: run pipeline_job (or `bankanom demo`).")
        columns, found = snap.query("SELECT * FROM scored_events WHERE event_id = ? LIMIT 1", [event_id])
        raw: dict = {}
        incidents_of: list[str] = []
        if snap.has("incident_events"):
            c2, r2 = snap.query("SELECT * FROM incident_events WHERE event_id = ?", [event_id])
            if r2:
                raw = as_dicts(c2, r2)[0]
                incidents_of = sorted({r["incident_id"] for r in as_dicts(c2, r2)})
        if not found and not raw:
            raise ConsoleError(404, f"There is no event {event_id!r} in the current snapshot.")
        scored = as_dicts(columns, found)[0] if found else {}
        return render(
            request,
            "event.html",
            nav="incidents",
            event_id=event_id,
            scored=scored,
            raw={k: v for k, v in raw.items() if k not in scored or k in ("message", "log_level")},
            incidents_of=incidents_of,
        )

    # -- transactions ---------------------------------------------------------------------------------

    @router.get("/transactions")
    def transactions(request: Request, who: Who, account: str = "", page: str = "1") -> HTMLResponse:
        snap = snapshot("transactions")
        context: dict[str, Any] = {"account": account, "items": [], "total": 0, "page": 1, "pages": 1}
        rows = feedback_rows()
        context["feedback_counts"] = feedback_summary(rows)
        if snap is None:
            return render(request, "transactions.html", no_snapshot=True, **context)
        where, params = "WHERE is_anomaly", []
        if account:
            where += " AND account_id = ?"
            params.append(account)
        total = snap.query(f"SELECT count(*) FROM transactions {where}", params)[1][0][0]
        pages = max(1, math.ceil(total / PAGE_SIZE))
        current = min(_int(page, 1), pages)
        columns, found = snap.query(
            f"""SELECT transaction_id, account_id, ts, amount, channel, location, if_score, lof_score,
                       ensemble_score FROM transactions {where}
                ORDER BY ts DESC, transaction_id LIMIT ? OFFSET ?""",
            [*params, PAGE_SIZE, (current - 1) * PAGE_SIZE],
        )
        context.update(
            items=as_dicts(columns, found),
            total=total,
            page=current,
            pages=pages,
            labels=labels_by_target(rows, "transaction"),
        )

        def link(**change) -> str:
            query = {"account": account, "page": current, **change}
            return f"{PREFIX}/transactions?" + urlencode(
                {k: v for k, v in query.items() if v not in ("", None)}
            )

        return render(request, "transactions.html", no_snapshot=False, link=link, **context)

    @router.get("/transactions/{transaction_id}")
    def transaction(request: Request, who: Who, transaction_id: str, saved: str = "") -> HTMLResponse:
        snap = published("transactions", "No transactions published yet: run transactions_job.")
        columns, found = snap.query("SELECT * FROM transactions WHERE transaction_id = ?", [transaction_id])
        if not found:
            raise ConsoleError(404, f"There is no transaction {transaction_id!r} in the current snapshot.")
        row = as_dicts(columns, found)[0]
        top = list(row.pop("top_features") or [])
        rows = feedback_rows()
        history = rows.filter(
            (pl.col("kind") == "transaction") & (pl.col("target_id") == transaction_id)
        ).to_dicts()
        return render(
            request,
            "transaction.html",
            nav="transactions",
            tx=row,
            bars=console_svg.deviation_bars(top),
            history=history,
            saved=bool(saved),
            kind="transaction",
            target_id=transaction_id,
        )

    # -- feedback -------------------------------------------------------------------------------------

    @router.post("/feedback")
    def post_feedback(request: Request, who: Who, fields: Form) -> Response:
        check_csrf(who.csrf, fields)
        kind, target_id = fields.get("kind", ""), fields.get("target_id", "")
        label, comment = fields.get("label", ""), fields.get("comment", "").strip()
        if kind not in feedback.KINDS:
            raise ConsoleError(400, f"Feedback is for an incident or a transaction, not {kind!r}.")
        page = f"{PREFIX}/{'incidents' if kind == 'incident' else 'transactions'}/{target_id}"
        if label not in feedback.LABELS:
            raise ConsoleError(400, "Choose true positive, false positive or unsure.")
        if len(comment) > feedback.MAX_COMMENT:
            raise ConsoleError(400, f"The comment is longer than {feedback.MAX_COMMENT} characters.")
        table, column = (
            ("incidents", "incident_id") if kind == "incident" else ("transactions", "transaction_id")
        )
        snap = published(table, "No snapshot published yet: nothing to give feedback on.")
        extra = " AND is_anomaly" if kind == "transaction" else ""
        found = snap.query(f"SELECT partition_date FROM {table} WHERE {column} = ?{extra}", [target_id])[1]
        if not found:
            raise ConsoleError(
                404, f"No {'incident' if kind == 'incident' else 'flagged transaction'} {target_id!r}."
            )
        feedback.record(feedback_db, kind, target_id, label, comment, who.key_id, found[0][0])
        return RedirectResponse(f"{page}?saved=1#feedback", status_code=303)

    # -- predict --------------------------------------------------------------------------------------

    def predict_page(request: Request, status_code: int = 200, **context) -> HTMLResponse:
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
    def predict_form(request: Request, who: Who) -> HTMLResponse:
        return predict_page(request)

    @router.post("/predict/transaction")
    def predict_transaction(request: Request, who: Who, fields: Form) -> HTMLResponse:
        check_csrf(who.csrf, fields)
        values = {name: fields.get(name, "").strip() for name, _ in TRANSACTION_FIELDS}
        body: dict[str, Any] = {k: (v if v != "" else None) for k, v in values.items()}
        try:
            posted = Transaction.from_text(body)
        except ValidationError as error:
            errors: dict[str, str] = {}
            for e in error.errors():
                name = str(e["loc"][0]) if e["loc"] else "form"
                errors.setdefault(name, e["msg"].removeprefix("Value error, "))
            return predict_page(request, 422, tx_values=values, tx_errors=errors)
        models = state.transaction_models
        if models is None:
            return predict_page(
                request, 503, tx_values=values, tx_errors={"form": "no promoted transaction models yet"}
            )
        record = scorer.predict([posted], models, state.snapshot, None)[0]
        record["versions"] = models.versions
        return predict_page(request, tx_values=values, tx_result=record)

    @router.post("/predict/event")
    def predict_event(request: Request, who: Who, fields: Form) -> HTMLResponse:
        check_csrf(who.csrf, fields)
        text = fields.get("event", "")
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            return predict_page(
                request,
                422,
                event_text=text,
                event_errors=[f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"],
            )
        if not isinstance(parsed, dict):
            return predict_page(
                request, 422, event_text=text, event_errors=["paste one event: a JSON object"]
            )
        try:
            posted = LogEvent.model_validate(parsed)
        except ValidationError as error:
            problems = [
                f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg'].removeprefix('Value error, ')}"
                for e in error.errors()
            ]
            return predict_page(request, 422, event_text=text, event_errors=problems)
        models = state.models
        if models is None:
            return predict_page(
                request,
                503,
                event_text=text,
                event_errors=[state.unavailable("models", "no promoted log models yet")],
            )
        result = predictor.predict([posted], models, None)[0]  # one event: no duplicate ids
        result["versions"] = models.versions
        return predict_page(request, event_text=text, event_result=result)

    # -- models and pipeline --------------------------------------------------------------------------

    def evaluation(table: str, curve_table: str) -> dict[str, Any]:
        snap = snapshot(table)
        if snap is None:
            return {"day": None, "wide": [], "other": {}, "points": {}, "svg": "", "curves": False}
        _, found = snap.query(
            f"SELECT partition_date, model, metric, value FROM {table} "
            f"WHERE partition_date = (SELECT max(partition_date) FROM {table}) ORDER BY model, metric"
        )
        by_model: dict[str, dict[str, float]] = {}
        for _, model, metric, value in found:
            by_model.setdefault(model, {})[metric] = value
        wide = [
            {"model": m, **{k: v.get(k) for k in EVENT_METRICS}}
            for m, v in by_model.items()
            if any(k in v for k in EVENT_METRICS)
        ]
        points = {
            m: (v["recall"], v["precision"])
            for m, v in by_model.items()
            if v.get("recall") is not None and v.get("precision") is not None
        }
        curves: dict[str, list[tuple[float, float]]] = {}
        if found and snap.has(curve_table):
            for model, recall, precision in snap.query(
                f"SELECT model, recall, precision FROM {curve_table} WHERE partition_date = ? ORDER BY model, point",
                [found[0][0]],
            )[1]:
                curves.setdefault(model, []).append((recall, precision))
        return {
            "curves": bool(curves),
            "day": found[0][0] if found else None,
            "wide": wide,
            "other": by_model.get("incidents", {}),
            "analyst": {k: v for k, v in by_model.get("ensemble", {}).items() if k.startswith("analyst_")},
            "svg": console_svg.operating_points(points, curves) if points else "",
        }

    def manifests(models) -> list[dict]:
        if models is None:
            return []
        return [{"name": name, **models.manifests[name]} for name in sorted(models.manifests)]

    def alerts() -> tuple[list[dict], str | None]:
        if not alerts_db.exists():
            return [], None
        for attempt in range(5):
            try:
                con = duckdb.connect(str(alerts_db), read_only=True)
            except duckdb.IOException:  # the daemon is writing an alert this instant
                time.sleep(0.1 * (attempt + 1))
                continue
            try:
                columns = [
                    r[0]
                    for r in con.execute(
                        "SELECT table_name FROM information_schema.tables WHERE table_name = 'pipeline_alerts'"
                    ).fetchall()
                ]
                if not columns:
                    return [], None
                cursor = con.execute("SELECT * FROM pipeline_alerts ORDER BY alerted_at DESC LIMIT 20")
                return as_dicts([d[0] for d in cursor.description], cursor.fetchall()), None
            finally:
                con.close()
        return [], "the alerts file is busy (a failure is being recorded): reload in a moment"

    @router.get("/models")
    def models_page(request: Request, who: Who) -> HTMLResponse:
        snap = state.snapshot
        registry: list[dict] = []
        if snap is not None and snap.has("model_registry"):
            columns, found = snap.query(
                """SELECT version, name, created_at, window_start, window_end, training_rows, status, promoted_at
                   FROM model_registry ORDER BY created_at DESC LIMIT 12"""
            )
            registry = as_dicts(columns, found)
        failures, alerts_problem = alerts()
        runs, runs_problem = recent_runs()
        return render(
            request,
            "models.html",
            log_models=manifests(state.models),
            tx_models=manifests(state.transaction_models),
            log_eval=evaluation("evaluation_metrics", "evaluation_curves"),
            tx_eval=evaluation("transaction_evaluation_metrics", "transaction_evaluation_curves"),
            pointer=snap.pointer if snap is not None else None,
            registry=registry,
            failures=failures,
            alerts_problem=alerts_problem,
            runs=runs,
            runs_problem=runs_problem,
            feedback_counts=feedback_summary(feedback_rows()),
            problems=dict(state.errors),
        )

    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "console_static"), name="console-static")
