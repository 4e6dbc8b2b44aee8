"""Giving and reading analyst feedback, shared by the JSON routes (``routes/feedback.py``) and the
console's form (``routes/console.py``): one validation (``schemas.FeedbackRequest``), one rule for who may
give feedback (a key mapped to a person in BANKANOM_ANALYSTS), one lookup of the item it is given on, and
the review queue's candidates. The rows themselves are ``bankanom_pipeline.feedback``'s.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from pathlib import Path

import polars as pl
from fastapi import HTTPException, status
from pydantic import ValidationError

from bankanom_api import incident_reranks
from bankanom_api.live import LiveReader
from bankanom_api.schemas import FeedbackRequest
from bankanom_api.settings import ApiSettings
from bankanom_api.state import ServingState, Snapshot
from bankanom_pipeline import feedback


def not_mapped(key_id: str) -> str:
    return f"this API key is not mapped to an analyst: add name={key_id} to BANKANOM_ANALYSTS"


def person(analysts: dict[str, str], key_id: str) -> str:
    """The person ``key_id`` belongs to; 403 when it belongs to nobody (feedback is signed by a name)."""
    name = analysts.get(key_id)
    if name is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, not_mapped(key_id))
    return name


def from_form(fields: dict[str, str]) -> FeedbackRequest:
    """The console form's fields as the JSON route's body, validated by the same model; 422 with each
    problem otherwise (the form sends an empty selection for an analyst's own pick)."""
    body = {name: fields.get(name, "") for name in ("kind", "target_id", "label", "comment")}
    body["comment"] = body["comment"].strip()
    body["selection"] = fields.get("selection") or None
    try:
        return FeedbackRequest.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problems) from None


def target_day(state: ServingState, live: LiveReader, kind: str, target_id: str) -> dt.date | None:
    """The day of the item feedback is given on; 404 when there is no such item. An incident is the
    published snapshot's or the live stream's (its id is stable: it keeps it when the batch confirms it);
    one merged into another is refused with the survivor's id. A transaction is the published
    snapshot's, flagged or not (the review queue asks about unflagged ones too)."""
    snap = state.snapshot
    if kind == "transaction":
        if snap is None or not snap.has("transactions"):
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no transactions published yet")
        found = snap.query("SELECT partition_date FROM transactions WHERE transaction_id = ?", [target_id])[1]
        if not found:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown transaction {target_id!r}")
        return found[0][0]
    if snap is not None and snap.has("incidents"):
        found = snap.query("SELECT partition_date FROM incidents WHERE incident_id = ?", [target_id])[1]
        if found:
            return found[0][0]
    elif snap is None and not live.path.exists():
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no incidents published yet")
    row = live.incident(target_id, events=0)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown incident {target_id!r}")
    if row.get("merged_into"):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"incident {target_id} was merged into {row['merged_into']}: give feedback on that one",
        )
    day = row["partition_date"]
    return dt.date.fromisoformat(day) if isinstance(day, str) else day


def submit(
    settings: ApiSettings,
    state: ServingState,
    live: LiveReader,
    key_id: str,
    body: FeedbackRequest,
    channel: str,
) -> dict:
    """Record ``body`` as the person of ``key_id`` (403 for a key mapped to nobody, 404 for an unknown
    item); the stored row with ``changed`` and ``disagreement``."""
    name = person(settings.analysts, key_id)
    day = target_day(state, live, body.kind, body.target_id)
    return feedback.record(
        settings.feedback_db,
        body.kind,
        body.target_id,
        body.label,
        body.comment,
        name,
        day,
        key_id=key_id,
        channel=channel,
        selection=body.selection,
        analysts=settings.analysts,
    )


def rows(settings: ApiSettings) -> pl.DataFrame:
    """The feedback rows as the API and the console serve them: rows from before named analysts signed
    with the person their key id is mapped to now (``feedback.attributed``)."""
    return feedback.attributed(feedback.read(settings.feedback_db), settings.analysts)


# -- the review queue ---------------------------------------------------------------------------------------

CANDIDATE_SCHEMA = {"target_id": pl.String, "score": pl.Float64, "rerank_score": pl.Float64}
_CACHED = 4  # candidate frames kept (per snapshot file, kind and day): a published file never changes
_candidates: OrderedDict[tuple, pl.DataFrame] = OrderedDict()
_candidates_lock = threading.Lock()


def _columns(snap: Snapshot, table: str) -> set[str]:
    found = snap.query("SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table])[1]
    return {name for (name,) in found}


def candidates(snap: Snapshot, kind: str, day: dt.date | None = None) -> pl.DataFrame:
    """What the queue chooses from, ``target_id, score, rerank_score``: the published snapshot's scored
    transactions (the ensemble's score; the re-ranked one when the table has it) or its incidents (their
    max_score; the re-ranked one from ``incident_reranks`` when published), of ``day`` when given."""
    key = (snap.pointer.get("file"), kind, day)
    with _candidates_lock:
        if key in _candidates:
            _candidates.move_to_end(key)
            return _candidates[key]
    table = "transactions" if kind == "transaction" else "incidents"
    if not snap.has(table):
        return pl.DataFrame(schema=CANDIDATE_SCHEMA)
    conditions, params = ["score IS NOT NULL"], []
    if day is not None:
        conditions.append("partition_date = ?")
        params.append(day)
    if kind == "transaction":
        rerank = "rerank_score" if "rerank_score" in _columns(snap, "transactions") else "NULL"
        sql = f"""SELECT transaction_id AS target_id, ensemble_score AS score, {rerank} AS rerank_score,
                         partition_date FROM transactions"""
    elif incident_reranks.published(snap):
        sql = f"""SELECT i.incident_id AS target_id, i.max_score AS score, r.rerank_score, i.partition_date
                  FROM incidents AS i LEFT JOIN ({incident_reranks.NEWEST}) AS r USING (incident_id)"""
    else:
        sql = """SELECT incident_id AS target_id, max_score AS score, NULL AS rerank_score, partition_date
                 FROM incidents"""
    sql = f"""SELECT target_id, score::DOUBLE AS score, rerank_score::DOUBLE AS rerank_score
              FROM ({sql}) WHERE {" AND ".join(conditions)}"""
    cursor = snap.con.cursor()  # its own: the snapshot's connection serves other requests meanwhile
    try:
        frame = cursor.execute(sql, params).pl().cast(CANDIDATE_SCHEMA)
    finally:
        cursor.close()
    with _candidates_lock:
        _candidates[key] = frame
        while len(_candidates) > _CACHED:
            _candidates.popitem(last=False)
    return frame


def queue(
    snap: Snapshot,
    rows: pl.DataFrame,
    kind: str,
    n: int,
    day: dt.date | None = None,
    models_dir: Path | None = None,
) -> list[dict]:
    """The ``n`` items to ask analysts about next (``reranking.selection.select``) among ``kind``'s
    candidates not labelled yet (any label that counts, unsure included), each with its reason.
    ``models_dir``: the models' root, where the promoted incident re-ranker's cut is read."""
    from bankanom_pipeline.reranking.selection import select  # numpy's random generator: on demand

    labelled = set(rows.filter(pl.col("kind") == kind)["target_id"].to_list())
    chosen = select(
        candidates(snap, kind, day),
        labelled,
        n,
        threshold=_threshold(kind),
        random_min_score=_random_floor(kind),
        rerank_threshold=_rerank_threshold(kind, models_dir),
    )
    return [{"kind": kind, **item} for item in chosen.to_dicts()]


def _rerank_threshold(kind: str, models_dir: Path | None) -> float:
    """The re-ranked decision boundary the ``uncertain`` items are nearest to once a re-ranker is
    promoted: a transaction is flagged at ``transactions.reranking.CUT``; an incident is suppressed
    below the promoted incident re-ranker's cut (its manifest's ``gate.cut``, chosen on held-out
    labels, e.g. 0.02), far from 0.5, where nearly every re-ranked incident is confirmed. 0.5 when no
    incident re-ranker is promoted (or no models folder is given)."""
    if kind == "transaction":
        from bankanom_pipeline.transactions.reranking import CUT

        return CUT
    if models_dir is None:
        return 0.5
    from bankanom_pipeline.detection.registry import promoted_gain

    gain = promoted_gain(models_dir, "incident_reranker")
    cut = (gain or {}).get("gate", {}).get("cut")
    return 0.5 if cut is None else float(cut)


def _random_floor(kind: str) -> float | None:
    """The lowest unsupervised score the queue's random share is drawn from: a transaction re-ranker
    judges only transactions at or above its floor (``transactions.reranking.FLOOR``), and the gate
    compares orders on the random labels, which must hold frauds; drawn from every transaction they
    would be nearly all normal. Incidents: every candidate (the incident re-ranker has no floor)."""
    if kind != "transaction":
        return None
    from bankanom_pipeline.transactions.reranking import FLOOR

    return FLOOR


def _threshold(kind: str) -> float:
    """The unsupervised operating cut the ``uncertain`` items are nearest to while no re-ranker is
    promoted: the transaction ensemble's flag threshold, or the score at which a lone incident is
    reported (``incidents.yaml``). Incidents' scores crowd near 1, so their median would ask only
    about true incidents: on a default dev day (2026-06-02) 196 of 200 such labels were true and no
    re-ranker could be trained, while false incidents sit at 0.94-0.96, just over the boundary."""
    if kind == "incident":
        from bankanom_pipeline.detection.incidents import default_incident_config

        return default_incident_config().reporting.lone_event_min_score
    from bankanom_pipeline.detection.sources import TRANSACTIONS

    return TRANSACTIONS.config.thresholds.ensemble
