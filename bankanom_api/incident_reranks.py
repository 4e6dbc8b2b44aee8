"""The incident re-ranker's verdict on published incidents, as every reader of the snapshot serves it.

The snapshot's ``incident_reranks`` holds a row per incident and re-ranker version that scored it
(``rerank_score``, ``suppressed``). One rule picks the row that counts: the newest ``reranker_version``
(versions are named ``incident_reranker-<UTC time>-<hex>``, so the newest sorts last). GET /incidents,
an incident's page, the console's lists and the review queue's candidates all read it through here.

A suppressed incident (re-ranked below the promoted version's cut) is kept and still listed, with
``suppressed: true``, and is not ``reported``: the cut is what withdraws it from the incidents analysts
are alerted to (docs/api.md, docs/detection.md). An incident without a row (no re-ranker promoted when
its day ran, or a live incident) has ``rerank_score`` null and is not suppressed.
"""

from __future__ import annotations

from bankanom_api.responses import as_dicts
from bankanom_api.state import Snapshot

TABLE = "incident_reranks"
# per incident, the newest version's row
NEWEST = f"""SELECT incident_id, arg_max(rerank_score, reranker_version) AS rerank_score,
                    arg_max(suppressed, reranker_version) AS suppressed, max(reranker_version) AS reranker_version
             FROM {TABLE} GROUP BY incident_id"""


def published(snap: Snapshot | None) -> bool:
    return snap is not None and snap.has(TABLE)


def columns(snap: Snapshot | None, table: str = "incidents") -> str:
    """Select-list items for a query over ``table`` (the snapshot's incidents, by that name):
    ``rerank_score``, ``suppressed`` and ``reported`` (the table's, false when suppressed)."""
    if not published(snap):
        return "NULL::DOUBLE AS rerank_score, false AS suppressed, reported"
    row = f"(SELECT r.{{}} FROM ({NEWEST}) AS r WHERE r.incident_id = {table}.incident_id)"
    suppressed = f"coalesce({row.format('suppressed')}, false)"
    return (
        f"{row.format('rerank_score')}::DOUBLE AS rerank_score, {suppressed} AS suppressed, "
        f"({table}.reported AND NOT {suppressed}) AS reported"
    )


def of(snap: Snapshot | None, incident_id: str) -> dict | None:
    """The row that counts for ``incident_id`` (``rerank_score, suppressed, reranker_version``), None
    when it has none."""
    if not published(snap):
        return None
    names, found = snap.query(f"SELECT * FROM ({NEWEST}) WHERE incident_id = ?", [incident_id])
    return {k: v for k, v in as_dicts(names, found)[0].items() if k != "incident_id"} if found else None


def served(row: dict, rerank: dict | None) -> dict:
    """An incident row as served: ``rerank_score`` and ``suppressed`` from ``rerank`` (``of``), and
    ``reported`` false when suppressed."""
    suppressed = bool(rerank and rerank.get("suppressed"))
    return {
        **row,
        "rerank_score": rerank.get("rerank_score") if rerank else None,
        "suppressed": suppressed,
        "reported": bool(row.get("reported")) and not suppressed,
    }
