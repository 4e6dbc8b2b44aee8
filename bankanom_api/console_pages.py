"""What the console's pages read and how they read their forms: snapshot queries, the pipeline's alerts,
and the predict forms' parsing (``routes/console.py`` renders them)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import duckdb
from pydantic import ValidationError

from bankanom_api import console_svg, incident_reranks
from bankanom_api.console import (
    EVENT_METRICS,
    INCIDENT_SORTS,
    PAGE_SIZE,
    PREFIX,
    SEVERITIES,
    TRANSACTION_FIELDS,
    parse_time,
)
from bankanom_api.labelling import queue
from bankanom_api.live import LiveReader
from bankanom_api.responses import as_dicts
from bankanom_api.schemas import LogEvent
from bankanom_api.state import Models, ServingState, Snapshot
from bankanom_api.transactions import Transaction

_BAD_TIME = "not a date and time (YYYY-MM-DD or YYYY-MM-DDTHH:MM)"


def holding(state: ServingState, table: str) -> Snapshot | None:
    """The current snapshot if it holds ``table``."""
    snap = state.snapshot
    return snap if snap is not None and snap.has(table) else None


def _link(page: str, query: dict) -> Callable[..., str]:
    """The page's URL with ``query`` changed as a template asks (``link(page=2)``)."""

    def link(**change) -> str:
        merged = {**query, **change}
        return f"{PREFIX}/{page}?" + urlencode({k: v for k, v in merged.items() if v not in ("", None)})

    return link


def _paged(snap: Snapshot, table: str, where: str, params: list, page: int) -> tuple[int, int, int]:
    """The filters' total, the number of pages and the page shown (the last one when asked past it)."""
    total = snap.query(f"SELECT count(*) FROM {table} {where}", params)[1][0][0]
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return total, pages, min(page, pages)


def incident_filters(filters: dict[str, str], errors: dict[str, str]) -> tuple[str, list]:
    """The incidents list's WHERE clause and parameters; an unreadable time is noted in ``errors``."""
    conditions: list[tuple[str, Any]] = []
    if filters["severity"] in SEVERITIES:
        conditions.append(("severity = ?", filters["severity"]))
    if filters["status"]:
        conditions.append(("status = ?", filters["status"]))
    if filters["service"]:
        conditions.append(("list_contains(services, ?)", filters["service"]))
    for name, sql in (("since", "end_ts >= ?"), ("until", "start_ts < ?")):
        try:
            value = parse_time(filters[name])
        except ValueError:
            errors[name] = _BAD_TIME
            continue
        if value is not None:
            conditions.append((sql, value))
    where = ("WHERE " + " AND ".join(sql for sql, _ in conditions)) if conditions else ""
    return where, [value for _, value in conditions]


def incident_list(snap: Snapshot, filters: dict[str, str], context: dict[str, Any]) -> dict[str, Any]:
    """One page of incidents, sorted as ``context`` says, with the filters' choices."""
    where, params = incident_filters(filters, context["errors"])
    total, pages, current = _paged(snap, "incidents", where, params, context["page"])
    direction = "ASC" if context["order"] == "asc" else "DESC"
    columns, found = snap.query(
        f"""SELECT incident_id, start_ts, end_ts, severity, status, services, event_count, max_score,
                   scenario_name, scenario_confidence, origin_service, {incident_reranks.columns(snap)}
            FROM incidents {where}
            ORDER BY {INCIDENT_SORTS[context["sort"]]} {direction} NULLS LAST, incident_id
            LIMIT ? OFFSET ?""",
        [*params, PAGE_SIZE, (current - 1) * PAGE_SIZE],
    )
    query = {**filters, "sort": context["sort"], "order": context["order"], "page": current}
    return {
        "items": as_dicts(columns, found),
        "total": total,
        "page": current,
        "pages": pages,
        "statuses": [r[0] for r in snap.query("SELECT DISTINCT status FROM incidents ORDER BY 1")[1]],
        "services": [
            r[0] for r in snap.query("SELECT DISTINCT unnest(services) AS s FROM incidents ORDER BY 1")[1]
        ],
        "link": _link("incidents", query),
    }


def incident_events(snap: Snapshot, incident_id: str) -> list[dict]:
    if not snap.has("incident_events"):
        return []
    columns, found = snap.query(
        """SELECT event_id, ts, source_service, user_id, ip_address, ensemble_score
           FROM incident_events WHERE incident_id = ? ORDER BY ts, event_id LIMIT 5000""",
        [incident_id],
    )
    return as_dicts(columns, found)


def event_detail(snap: Snapshot, event_id: str) -> tuple[dict, dict, list[str]] | None:
    """The event's scored row, its raw fields not among them, and the incidents holding it; None if the
    snapshot has neither."""
    columns, found = snap.query("SELECT * FROM scored_events WHERE event_id = ? LIMIT 1", [event_id])
    raw: dict = {}
    incidents_of: list[str] = []
    if snap.has("incident_events"):
        c2, r2 = snap.query("SELECT * FROM incident_events WHERE event_id = ?", [event_id])
        if r2:
            raw = as_dicts(c2, r2)[0]
            incidents_of = sorted({r["incident_id"] for r in as_dicts(c2, r2)})
    if not found and not raw:
        return None
    scored = as_dicts(columns, found)[0] if found else {}
    extra = {k: v for k, v in raw.items() if k not in scored or k in ("message", "log_level")}
    return scored, extra, incidents_of


def flagged_transactions(snap: Snapshot, account: str, page: int) -> dict[str, Any]:
    """One page of the flagged transactions, of one account when ``account`` is given."""
    where, params = "WHERE is_anomaly", []
    if account:
        where += " AND account_id = ?"
        params.append(account)
    total, pages, current = _paged(snap, "transactions", where, params, page)
    columns, found = snap.query(
        f"""SELECT transaction_id, account_id, ts, amount, channel, location, if_score, lof_score,
                   ensemble_score FROM transactions {where}
            ORDER BY ts DESC, transaction_id LIMIT ? OFFSET ?""",
        [*params, PAGE_SIZE, (current - 1) * PAGE_SIZE],
    )
    return {
        "items": as_dicts(columns, found),
        "total": total,
        "page": current,
        "pages": pages,
        "link": _link("transactions", {"account": account, "page": current}),
    }


# -- learning from feedback --------------------------------------------------------------------------------

REVIEW_ITEMS = 20  # items of each kind the "To review" page lists


def incident_rerank(snap: Snapshot | None, incident_id: str) -> dict | None:
    """The promoted incident re-ranker's score of an incident (``incident_reranks.of``), None without one."""
    return incident_reranks.of(snap, incident_id)


def reranker_gain(models_dir: Path, name: str) -> tuple[dict | None, str | None]:
    """The promoted re-ranker ``name``'s version, held-out figures and labels (``promoted_gain``), and a
    note when its manifest cannot be read (the page still renders)."""
    from bankanom_pipeline.detection.registry import promoted_gain

    try:
        return promoted_gain(models_dir, name), None
    except (OSError, ValueError, KeyError) as error:
        return None, f"the promoted {name}'s figures cannot be read: {error}"


def review_queue(snap: Snapshot | None, rows, kind: str, models_dir: Path | None = None) -> list[dict]:
    """The items the feedback queue asks about for ``kind`` (as GET /feedback/queue answers), with the
    console page each opens on, its reason passed through."""
    if snap is None or not snap.has("incidents" if kind == "incident" else "transactions"):
        return []
    page = "incidents" if kind == "incident" else "transactions"
    return [
        {**item, "href": f"{PREFIX}/{page}/{quote(item['target_id'], safe='')}?selection={item['reason']}"}
        for item in queue(snap, rows, kind, REVIEW_ITEMS, models_dir=models_dir)
    ]


def transaction_form(fields: dict[str, str]) -> tuple[dict[str, str], Transaction | None, dict[str, str]]:
    """The form's values as typed, the transaction they make, and the errors by field when they make none."""
    values = {name: fields.get(name, "").strip() for name, _ in TRANSACTION_FIELDS}
    body: dict[str, Any] = {k: (v if v != "" else None) for k, v in values.items()}
    try:
        return values, Transaction.from_text(body), {}
    except ValidationError as error:
        errors: dict[str, str] = {}
        for e in error.errors():
            name = str(e["loc"][0]) if e["loc"] else "form"
            errors.setdefault(name, e["msg"].removeprefix("Value error, "))
        return values, None, errors


def event_form(text: str) -> tuple[LogEvent | None, list[str]]:
    """The pasted event, or what is wrong with it."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        return None, [f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"]
    if not isinstance(parsed, dict):
        return None, ["paste one event: a JSON object"]
    try:
        return LogEvent.model_validate(parsed), []
    except ValidationError as error:
        return None, [
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
        ]


def evaluation(state: ServingState, table: str, curve_table: str) -> dict[str, Any]:
    """The latest evaluated day's metrics by model, with the operating points and curves drawn."""
    snap = holding(state, table)
    if snap is None:
        return {"day": None, "wide": [], "other": {}, "points": {}, "svg": "", "curves": False}
    _, found = snap.query(
        f"SELECT partition_date, model, metric, value FROM {table} "
        f"WHERE partition_date = (SELECT max(partition_date) FROM {table}) ORDER BY model, metric"
    )
    by_model: dict[str, dict[str, float]] = {}
    for _, model, metric, value in found:
        by_model.setdefault(model, {})[metric] = value
    points = {
        m: (v["recall"], v["precision"])
        for m, v in by_model.items()
        if v.get("recall") is not None and v.get("precision") is not None
    }
    curves = _curves(snap, curve_table, found[0][0]) if found else {}
    return {
        "curves": bool(curves),
        "day": found[0][0] if found else None,
        "wide": [
            {"model": m, **{k: v.get(k) for k in EVENT_METRICS}}
            for m, v in by_model.items()
            if any(k in v for k in EVENT_METRICS)
        ],
        "other": by_model.get("incidents", {}),
        "analyst": {k: v for k, v in by_model.get("ensemble", {}).items() if k.startswith("analyst_")},
        "svg": console_svg.operating_points(points, curves) if points else "",
    }


def _curves(snap: Snapshot, curve_table: str, day) -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = {}
    if snap.has(curve_table):
        for model, recall, precision in snap.query(
            f"SELECT model, recall, precision FROM {curve_table} WHERE partition_date = ? ORDER BY model, point",
            [day],
        )[1]:
            curves.setdefault(model, []).append((recall, precision))
    return curves


def manifests(models: Models | None) -> list[dict]:
    if models is None:
        return []
    return [{"name": name, **models.manifests[name]} for name in sorted(models.manifests)]


def registry(snap: Snapshot | None) -> list[dict]:
    """The registry's latest versions, as published."""
    if snap is None or not snap.has("model_registry"):
        return []
    columns, found = snap.query(
        """SELECT version, name, created_at, window_start, window_end, training_rows, status, promoted_at
           FROM model_registry ORDER BY created_at DESC LIMIT 12"""
    )
    return as_dicts(columns, found)


def alerts(alerts_db: Path) -> tuple[list[dict], str | None]:
    """The pipeline's last failure alerts, and a note when the file cannot be read this instant."""
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


# -- the live stream's results ------------------------------------------------------------------------------

INCIDENT_EVENTS = 5000  # events listed on an incident's page
LIVE_LISTED = 100  # live incidents listed above the batch's (newest first)


def live_incident_list(
    live: LiveReader, snap: Snapshot | None, filters: dict[str, str], errors: dict
) -> dict:
    """The live incidents the merge rule shows beside the snapshot, under the list's filters: the newest
    ``LIVE_LISTED`` and how many there are."""
    where: list[tuple[str, object]] = [
        ("severity = ?", filters["severity"] if filters["severity"] in SEVERITIES else None),
        ("status = ?", filters["status"] or None),
    ]
    for name, sql in (("since", "end_ts >= ?"), ("until", "start_ts < ?")):
        try:
            where.append((sql, parse_time(filters[name])))
        except ValueError:
            errors[name] = _BAD_TIME
    found = live.visible_incidents(snap, where)
    if filters["service"]:
        found = [i for i in found if filters["service"] in i["services"]]
    return {"items": found[:LIVE_LISTED], "total": len(found)}


_RECONCILED: dict[tuple, tuple[float, dict | None]] = {}
_RECONCILED_LOCK = threading.Lock()
RECONCILE_EVERY_S = 60.0  # a day's comparison is recomputed at most this often (late lines change it)


def reconciliation(live: LiveReader, snap: Snapshot | None, day) -> dict | None:
    """How far the live results of ``day`` agree with the batch's (``live.reconcile``), or None without
    a live store, a snapshot or live events that day."""
    tables = ("scored_events", "incidents", "incident_events")
    if snap is None or day is None or not live.path.exists() or not all(snap.has(t) for t in tables):
        return None
    key = (str(live.path), snap.pointer["file"], str(day))
    with _RECONCILED_LOCK:
        cached = _RECONCILED.get(key)
    if cached is not None and time.monotonic() - cached[0] < RECONCILE_EVERY_S:
        return cached[1]
    from bankanom_pipeline.live.reconcile import reconcile_day  # polars frames of a whole day: on demand

    cursor = snap.con.cursor()  # its own: the snapshot's connection serves other requests meanwhile
    try:
        found = reconcile_day(live.path, cursor, str(day))
    finally:
        cursor.close()
    figures = None if found is None else found.as_dict()
    with _RECONCILED_LOCK:
        _RECONCILED.clear()  # one day of one snapshot is what the page shows
        _RECONCILED[key] = (time.monotonic(), figures)
    return figures
