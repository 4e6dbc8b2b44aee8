"""The analyst console's shared pieces: session cookies, CSRF, templates and their filters, the error page
and the feedback it shows. The pages are ``routes/console.py`` (server-rendered under ``/console``: Jinja2,
no JavaScript build, no CDN); what they read is ``console_pages.py``.

The pages read exactly what the JSON API reads (the published snapshot and the promoted models, through
the same ``ServingState``), so they keep working while a run writes the warehouse. Analyst feedback is
appended to its own DuckDB file (``bankanom_pipeline.feedback``), never to the warehouse.

Security: the same API keys as the JSON API. The login form takes a key and sets a signed, HTTP-only,
SameSite=Lax session cookie (``itsdangerous``; it holds the key's non-secret id and a CSRF token, never
the key). A session names a key id, so removing a key from BANKANOM_API_KEYS ends its sessions. Every
form that posts carries the session's CSRF token in a hidden field; a missing or wrong token is a 403.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import jinja2
import polars as pl
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer

from bankanom_api.responses import rfc3339
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
    name: str | None  # the person the key belongs to (BANKANOM_ANALYSTS); None: nobody, may not give feedback


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


def safe_next(value: str | None) -> str:
    """Where to go after login: a console path only (no open redirect)."""
    if value and value.startswith(PREFIX) and not value.startswith("//") and "\\" not in value:
        return value
    return f"{PREFIX}/incidents"


def parse_time(value: str | None) -> dt.datetime | None:
    value = (value or "").strip()
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)  # ValueError: reported next to the field
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def to_int(value: str | None, default: int, low: int = 1) -> int:
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


TEMPLATES = Jinja2Templates(env=_environment())


def render(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    """``name`` rendered with ``context`` and the signed-in analyst's CSRF token, key id and menu entry."""
    who = getattr(request.state, "analyst", None)
    context.setdefault("csrf", who.csrf if who else "")
    context.setdefault("key_id", who.key_id if who else None)
    context.setdefault("analyst_name", who.name if who else None)
    context.setdefault("nav", name.removesuffix(".html"))
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)


async def error_page(request: Request, error: ConsoleError) -> HTMLResponse:
    return render(request, "error.html", status_code=error.status, message=error.message)


def check_csrf(expected: str | None, fields: dict[str, str]) -> None:
    presented = fields.get("csrf", "")
    if not expected or not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise ConsoleError(403, "The form's CSRF token is missing or invalid: reload the page and try again.")


def feedback_rows(feedback_db: Path, analysts: dict[str, str] | None = None) -> pl.DataFrame:
    """The feedback rows, those from before named analysts signed with the person ``analysts`` maps
    their key id to now (``feedback.attributed``); none when the file cannot be read."""
    try:
        return feedback.attributed(feedback.read(feedback_db), analysts)
    except duckdb.Error as error:
        log.warning("could not read feedback: %s", error)
        return pl.DataFrame(schema=feedback.COLUMNS)


def feedback_summary(rows: pl.DataFrame) -> dict[str, dict]:
    """Per kind: the labels that count and the analysts' precision, and how many changes of mind and
    disagreements the audit trail holds."""
    summary = {}
    for kind in feedback.KINDS:
        audit = feedback.audit(rows, kind)
        summary[kind] = {
            **feedback.precision(rows, kind),
            "changes": len(audit["changes"]),
            "disagreements": len(audit["disagreements"]),
        }
    return summary


def labels_by_target(rows: pl.DataFrame, kind: str) -> dict[str, str]:
    latest = feedback.latest(rows).filter(pl.col("kind") == kind)
    return dict(zip(latest["target_id"].to_list(), latest["label"].to_list(), strict=True))


def feedback_history(rows: pl.DataFrame, kind: str, target_id: str) -> dict[str, Any]:
    """One item's feedback, newest first, each row marked ``changed`` when its analyst replaced their own
    different label with it; the label that counts; and, when the item's analysts' latest labels differ,
    each analyst's latest label (``disagreement``, else None)."""
    mine = rows.filter((pl.col("kind") == kind) & (pl.col("target_id") == target_id))
    audit = feedback.audit(mine)
    changed = {c["feedback_id"] for c in audit["changes"]}
    history = [{**r, "changed": r["feedback_id"] in changed} for r in reversed(mine.to_dicts())]
    return {
        "rows": history,
        "counts": history[0]["label"] if history else None,
        "disagreement": audit["disagreements"][0]["labels"] if audit["disagreements"] else None,
    }
