"""The demo's feedback loop (`bankanom demo-feedback`, the end of `bankanom demo`), end to end on a copy
of the shared demo world: a real API, the simulated analyst's labels through it, the re-ranker jobs,
and the lines printed before -> after checked against the figures the pipeline stored and against an
independent computation over the unlabelled items.

End to end: a real uvicorn API and recorded Dagster runs (two transaction deliveries, two re-ranker
jobs, the re-scored days), about two minutes on two cores; it starts from the demo world the tier
builds once, so no log day is generated again."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pytest

from tests import tiny_platform
from tests.demo_world import DEMO_DAY

pytestmark = pytest.mark.e2e

# labels per source: above the re-ranker's minimum of 50, and the day's incidents hold both classes
LABELS = 60
# a transaction delivery this small holds ~7 frauds: fewer true positives than a re-ranker needs (10),
# so the one run shows a promotion (incidents) and a refusal with its reason (transactions)
ROWS = 1000
FLOAT = r"(n/a|[0-9][0-9,]*(?:\.[0-9]+)?)"


@pytest.fixture(scope="module")
def looped(demo, tmp_path_factory) -> tuple[Path, str]:
    """`bankanom demo-feedback` on a writable copy of the demo world's data folder (a Dagster instance of
    its own), the CLI app run in this process (tests/tiny_platform.py: no second import of Dagster,
    scikit-learn and GX; the API it labels through is still a uvicorn server of its own): the folder and
    what it printed."""
    import os

    _, _, data = demo
    root = tmp_path_factory.mktemp("demo-feedback")
    shutil.copytree(data, root / "data", ignore=shutil.ignore_patterns("live"))
    env = {**os.environ, "BANKANOM_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "home")}
    for name in (
        "BANKANOM_WAREHOUSE",
        "BANKANOM_FEEDBACK_DB",
        "BANKANOM_SNAPSHOTS_DIR",
        "BANKANOM_MODELS_DIR",
    ):
        env.pop(name, None)
    out = tiny_platform.ok(
        env, "demo-feedback", "--date", DEMO_DAY, "--labels", str(LABELS), "--transaction-rows", str(ROWS)
    )
    return root, out


def _section(out: str, title: str) -> str:
    rest = out[out.index(title) :]
    ends = [rest.find(t, 1) for t in ("log incidents of", "transactions of", "feedback loop:")]
    return rest[: min(e for e in ends if e > 0)]


def _figure(section: str, name: str, scope: str) -> tuple[str, str | None]:
    """The before and after (None when not printed) of ``name`` over ``scope`` in a printed section."""
    found = re.search(rf"^  {re.escape(name)}, {scope}: {FLOAT}(?: -> {FLOAT})?$", section, re.M)
    assert found, f"{name}, {scope} not printed in:\n{section}"
    return found.group(1), found.group(2)


def _rows(root: Path, sql: str, params: list) -> list[tuple]:
    con = duckdb.connect(str(root / "data" / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def _labelled(root: Path, kind: str) -> set[str]:
    con = duckdb.connect(str(root / "data" / "feedback.duckdb"), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT target_id FROM feedback WHERE kind = ?", [kind]).fetchall()}
    finally:
        con.close()


def test_incident_labels_promote_a_reranker_and_the_printed_figures_are_the_stored_ones(looped):
    root, out = looped
    assert "simulated analyst: reads the generator's ground truth, for the demo only" in out
    section = _section(out, "log incidents of")
    done = re.search(
        r"labelled by the simulated analyst: ([0-9]+) \(([0-9]+) true positives, ([0-9]+) false", section
    )
    assert done and int(done[1]) == LABELS == int(done[2]) + int(done[3]), section
    assert len(_labelled(root, "incident")) == LABELS  # through the API, into the feedback store
    assert f"re-ranker trained on {LABELS} labels" in section
    gate = re.search(
        r"^  gate: promoted (incident_reranker-\S+): on [0-9]+ held-out labels (.*)$", section, re.M
    )
    assert gate, section
    gain = re.search(r"\(gain ([-+][0-9.]+), needed > 0\.01\)", gate[2])
    assert gain and float(gain[1]) > 0.01, gate[2]
    # the evaluation ran again after the re-ranker's cut: what it stored before and after is what was printed
    stored = {
        (m, k): v
        for m, k, v in _rows(
            root,
            "SELECT model, metric, value FROM evaluation_metrics WHERE partition_date = ? AND model LIKE 'incidents%'",
            [DEMO_DAY],
        )
    }
    every = rf"every incident \([0-9,]+, the {LABELS} labelled included\)"
    # the figures over the items no analyst labelled come first
    assert section.index("incidents no analyst labelled") < section.index("every incident (")
    for name, metric, digits in (
        ("incident precision", "incident_precision", 3),
        ("lowest scenario recall", "min_scenario_recall", 3),
        ("reported incidents", "incidents_reported", 0),
    ):
        assert _figure(section, name, every) == (
            f"{stored[('incidents', metric)]:,.{digits}f}",
            f"{stored[('incidents_reranked', metric)]:,.{digits}f}",
        ), name
    assert _rows(
        root, "SELECT DISTINCT reranker_version FROM incident_reranks WHERE partition_date = ?", [DEMO_DAY]
    ) == [(gate[1],)]
    # over the incidents no analyst labelled, computed here in SQL: a reported incident is true when it
    # holds an event of a real anomaly (the evaluation's rule), before the cut and after it
    labelled = sorted(_labelled(root, "incident"))
    per_incident = """SELECT count(*) FILTER (WHERE hit) / count(*) FROM (
        SELECT i.incident_id, bool_or(coalesce(l.is_anomaly, false)) AS hit
        FROM incidents AS i JOIN incident_events AS ie USING (partition_date, incident_id)
        LEFT JOIN log_labels AS l USING (partition_date, event_id)
        LEFT JOIN incident_reranks AS r USING (partition_date, incident_id)
        WHERE i.partition_date = ? AND i.reported AND NOT list_contains(?, i.incident_id) {cut}
        GROUP BY 1)"""
    expected = [
        _rows(root, per_incident.format(cut=cut), [DEMO_DAY, labelled])[0][0]
        for cut in ("", "AND NOT r.suppressed")
    ]
    incidents = _rows(root, "SELECT count(*) FROM incidents WHERE partition_date = ?", [DEMO_DAY])[0][0]
    scope = f"the {incidents - LABELS:,} incidents no analyst labelled"
    assert _figure(section, "incident precision", scope) == tuple(f"{v:.3f}" for v in expected)


def test_too_few_transaction_labels_print_the_refusal_and_no_after_figure(looped):
    root, out = looped
    section = _section(out, "transactions of")
    refused = re.search(r"^  gate: refused, none trained: (.*)$", section, re.M)
    assert refused, section
    positives = re.search(r"labelled by the simulated analyst: [0-9]+ \(([0-9]+) true positives", section)[1]
    assert int(positives) < 10
    assert "a transaction re-ranker needs at least 50 labelled items, 10 of each class; it has" in refused[1]
    assert f"({positives} true positives" in refused[1]
    assert "no after figures" in section and " -> " not in section
    stored = dict(
        _rows(
            root,
            "SELECT metric, value FROM transaction_evaluation_metrics WHERE partition_date = ? AND model = 'ensemble'",
            [DEMO_DAY],
        )
    )
    every = rf"every transaction \({ROWS:,}, the [0-9]+ labelled included\)"
    assert _figure(section, "PR-AUC", every) == (f"{stored['pr_auc']:.3f}", None)
    incidents = dict(
        _rows(
            root,
            "SELECT metric, value FROM transaction_evaluation_metrics WHERE partition_date = ? AND model = 'incidents'",
            [DEMO_DAY],
        )
    )
    assert _figure(section, "instance recall", every) == (f"{incidents['instance_recall']:.3f}", None)
    assert section.index("transactions no analyst labelled") < section.index("every transaction (")
    # over the transactions no analyst labelled, computed here without the demo's code
    from sklearn.metrics import average_precision_score

    scored = _rows(
        root,
        "SELECT transaction_id, ensemble_score FROM scored_transactions WHERE partition_date = ?",
        [DEMO_DAY],
    )
    fraud = {
        r[0]
        for r in _rows(
            root,
            "SELECT transaction_id FROM transaction_labels WHERE partition_date = ? AND is_fraud",
            [DEMO_DAY],
        )
    }
    labelled = _labelled(root, "transaction")
    rest = [(t, s) for t, s in scored if t not in labelled]
    assert 0 < len(scored) - len(rest) <= LABELS
    expected = average_precision_score([t in fraud for t, _ in rest], [s for _, s in rest])
    assert _figure(section, "PR-AUC", f"the {len(rest):,} transactions no analyst labelled") == (
        f"{expected:.3f}",
        None,
    )
    assert re.search(r"^feedback loop: [0-9]+s \(", out, re.M)
