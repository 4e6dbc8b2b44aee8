"""The analyst console (/console) over a real uvicorn server: the demo's logs world plus a small bank
transactions delivery in the same data folder. HTTP-level tests (login, CSRF, feedback, pages with and
without a snapshot), the evaluation assets' analyst precision, and an end-to-end run in headless
Chromium (Playwright) that saves a screenshot of every page under ``test-artifacts/console``."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest

from bankanom_pipeline import feedback
from bankanom_pipeline.automation import alerts
from bankanom_pipeline.defs.detection.assets import evaluation
from bankanom_pipeline.defs.resources import RegistryResource, WarehouseResource
from bankanom_pipeline.defs.transactions.assets import transaction_evaluation
from tests.api_server import running_api
from tests.conftest import copy_world
from tests.demo_world import DEMO_DAY

pytestmark = pytest.mark.e2e

KEY, OTHER_KEY = "console-key-1", "console-key-2"
TX_DAY = "2026-02-01"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_ENV = {"BANKANOM_API_RATE_LIMIT": "10000/second", "BANKANOM_CONSOLE_LOGIN_LIMIT": "1000/minute"}


@pytest.fixture(scope="module")
def world(transactions_world, tmp_path_factory) -> Path:
    return copy_world(transactions_world, tmp_path_factory.mktemp("console"))


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    log = tmp_path_factory.mktemp("console-log") / "api.log"
    # the live stream beside it, as deployed: the event form scores in context through it
    with running_api(world, f"{KEY},{OTHER_KEY}", log, stream=True, **SERVER_ENV) as url:
        yield url


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def login(client: httpx.Client, key: str = KEY) -> httpx.Response:
    form = client.get("/console/login")
    assert form.status_code == 200
    return client.post(
        "/console/login", data={"csrf": csrf_of(form.text), "api_key": key, "next": "/console/incidents"}
    )


@pytest.fixture
def analyst(server):
    """A client logged in to the console (its cookie jar holds the session)."""
    with httpx.Client(base_url=server, timeout=60) as client:
        response = login(client)
        assert response.status_code == 303 and response.headers["location"] == "/console/incidents"
        yield client


def first_incident(world: Path, **where: str) -> tuple[str, str]:
    """(incident_id, scenario_name) of an incident in the served snapshot."""
    from bankanom_pipeline.serving import snapshot

    pointer = snapshot.SnapshotPublisher(world / "snapshots").current()
    with duckdb.connect(str(world / "snapshots" / pointer["file"]), read_only=True) as con:
        clause = " AND ".join(f"{k} = ?" for k in where) or "TRUE"
        return con.execute(
            f"SELECT incident_id, scenario_name FROM incidents WHERE {clause} ORDER BY start_ts LIMIT 1",
            list(where.values()),
        ).fetchone()


def served(world: Path, sql: str) -> list[tuple]:
    from bankanom_pipeline.serving import snapshot

    pointer = snapshot.SnapshotPublisher(world / "snapshots").current()
    with duckdb.connect(str(world / "snapshots" / pointer["file"]), read_only=True) as con:
        return con.execute(sql).fetchall()


# -- login and sessions ---------------------------------------------------------------------------------


def test_every_page_needs_a_login_and_redirects_to_the_form(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        for path in [
            "/console/incidents",
            "/console/incidents/X",
            "/console/transactions",
            "/console/predict",
            "/console/models",
            "/console/events/E",
            "/console/review",
        ]:
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/console/login?next=%2Fconsole%2F"), path
        # a write without a session goes to the login form too, and stores nothing
        response = client.post(
            "/console/feedback", data={"kind": "incident", "target_id": "X", "label": "unsure"}
        )
        assert response.status_code == 303 and response.headers["location"].startswith("/console/login")
        # the JSON API's header is no console session
        assert client.get("/console/incidents", headers={"X-API-Key": KEY}).status_code == 303


def test_a_bad_key_is_refused_and_gets_no_session(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        for key in ["wrong", KEY + "x", ""]:
            response = login(client, key)
            assert response.status_code == 401, key
            assert "That API key is not valid." in response.text
            assert client.get("/console/incidents").status_code == 303


def test_login_sets_a_signed_http_only_samesite_cookie_without_the_key(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        response = login(client, OTHER_KEY)
        assert response.status_code == 303
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Path=/console" in cookie
        value = client.cookies["bankanom_console"]
        assert OTHER_KEY not in value and OTHER_KEY not in __import__("base64").urlsafe_b64decode(
            value.split(".")[0] + "=="
        ).decode(errors="replace")
        assert client.get("/console/incidents").status_code == 200
        # a tampered cookie is no session
        client.cookies.set(
            "bankanom_console", value[:-2] + ("AA" if not value.endswith("AA") else "BB"), path="/console"
        )
        assert client.get("/console/incidents").status_code == 303
    # an open redirect through ?next is refused
    with httpx.Client(base_url=server, timeout=30) as client:
        form = client.get("/console/login")
        response = client.post(
            "/console/login",
            data={"csrf": csrf_of(form.text), "api_key": KEY, "next": "https://evil.example/"},
        )
        assert response.headers["location"] == "/console/incidents"


def test_logout_ends_the_session(server):
    with httpx.Client(base_url=server, timeout=30) as client:
        login(client)
        page = client.get("/console/models")
        assert client.post("/console/logout", data={"csrf": csrf_of(page.text)}).status_code == 303
        assert client.get("/console/models").status_code == 303


# -- CSRF -----------------------------------------------------------------------------------------------


def test_every_form_that_posts_needs_the_session_csrf_token(analyst, world):
    incident_id, _ = first_incident(world)
    before = feedback.read(world / "feedback.duckdb").height if (world / "feedback.duckdb").exists() else 0
    posts = {
        "/console/feedback": {
            "kind": "incident",
            "target_id": incident_id,
            "label": "true_positive",
            "comment": "",
        },
        "/console/predict/transaction": {"TransactionID": "T1"},
        "/console/predict/event": {"event": "{}"},
        "/console/logout": {},
    }
    other = httpx.Client(base_url=str(analyst.base_url), timeout=30)
    login(other, OTHER_KEY)
    foreign = csrf_of(other.get("/console/models").text)  # a valid token of another session
    other.close()
    for path, data in posts.items():
        for token in (None, "", "forged", foreign):
            body = dict(data) if token is None else {**data, "csrf": token}
            response = analyst.post(path, data=body)
            assert response.status_code == 403, (path, token)
            assert "CSRF" in response.text
    assert analyst.get("/console/incidents").status_code == 200  # still logged in: logout was refused
    after = feedback.read(world / "feedback.duckdb").height if (world / "feedback.duckdb").exists() else 0
    assert after == before
    # the login form itself carries a token (no login CSRF)
    with httpx.Client(base_url=str(analyst.base_url), timeout=30) as fresh:
        fresh.get("/console/login")
        assert fresh.post("/console/login", data={"api_key": KEY}).status_code == 403


# -- feedback -------------------------------------------------------------------------------------------


def test_feedback_is_stored_and_counted(analyst, world):
    incident_id, _ = first_incident(world)
    flagged = served(world, "SELECT transaction_id FROM transactions WHERE is_anomaly ORDER BY ts LIMIT 1")[
        0
    ][0]
    page = analyst.get(f"/console/incidents/{incident_id}")
    token = csrf_of(page.text)

    def counts() -> tuple[int, int]:
        html = analyst.get("/console/incidents").text
        return tuple(
            int(re.search(rf'class="count-{kind}">(\d+)<', html).group(1))
            for kind in ("incident", "transaction")
        )

    incidents_before, transactions_before = counts()
    post = {
        "csrf": token,
        "kind": "incident",
        "target_id": incident_id,
        "label": "false_positive",
        "comment": "maintenance window",
    }
    response = analyst.post("/console/feedback", data=post)
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/incidents/{incident_id}?saved=1#feedback"
    shown = analyst.get(response.headers["location"])
    assert "Feedback saved." in shown.text and "maintenance window" in shown.text
    response = analyst.post(
        "/console/feedback",
        data={
            "csrf": token,
            "kind": "transaction",
            "target_id": flagged,
            "label": "true_positive",
            "comment": "",
        },
    )
    assert response.status_code == 303
    rows = feedback.read(world / "feedback.duckdb")
    mine = rows.filter(rows["target_id"] == incident_id).to_dicts()[-1]
    assert (
        mine["kind"] == "incident"
        and mine["label"] == "false_positive"
        and mine["comment"] == "maintenance window"
    )
    assert mine["partition_date"] == dt.date.fromisoformat(DEMO_DAY)
    # signed by the person the key belongs to (tests/api_server.py maps the keys as BANKANOM_ANALYSTS)
    assert mine["analyst"] == "Test Analyst" and mine["channel"] == "console"
    assert re.fullmatch(r"[0-9a-f]{12}", mine["key_id"])
    latest = feedback.latest(rows)
    assert counts() == (
        int((latest["kind"] == "incident").sum()),
        int((latest["kind"] == "transaction").sum()),
    )
    assert counts()[0] >= max(incidents_before, 1) and counts()[1] >= transactions_before + 1
    # the label shows in the list
    listing = analyst.get("/console/incidents", params={"sort": "start", "order": "asc"}).text
    assert "false positive" in listing
    # refused as POST /feedback refuses them: unknown label or kind, unknown incident or transaction
    for data, status in [
        ({**post, "label": "maybe"}, 422),
        ({**post, "kind": "account"}, 422),
        ({**post, "target_id": "INC-NOPE"}, 404),
        ({**post, "kind": "transaction", "target_id": "TX-NOPE"}, 404),
        ({**post, "comment": "x" * 2001}, 422),
    ]:
        assert analyst.post("/console/feedback", data=data).status_code == status, data
    assert feedback.read(world / "feedback.duckdb").height == rows.height


def test_analysts_are_named_and_their_disagreement_shown(analyst, server, world):
    incident_id, _ = first_incident(world, severity="High")
    token = csrf_of(analyst.get(f"/console/incidents/{incident_id}").text)
    form = {"csrf": token, "kind": "incident", "target_id": incident_id, "comment": ""}
    assert analyst.post("/console/feedback", data={**form, "label": "true_positive"}).status_code == 303
    with httpx.Client(base_url=server, timeout=60) as other:
        login(other, OTHER_KEY)
        page = other.get(f"/console/incidents/{incident_id}").text
        assert "Analyst 2 (key " in page and "Save feedback as Analyst 2" in page
        data = {**form, "csrf": csrf_of(page), "label": "false_positive"}
        assert other.post("/console/feedback", data=data).status_code == 303
    page = analyst.get(f"/console/incidents/{incident_id}").text
    disagreement = page[page.index('id="disagreement"') :].split("</p>")[0]
    assert "Test Analyst says" in disagreement and "Analyst 2 says" in disagreement
    history = page[page.index('id="history"') :].split("</table>")[0]
    assert "Test Analyst" in history and "Analyst 2" in history
    # no re-ranker in this world: the score shown is the unsupervised one
    assert 'id="not-reranked"' in page and 'id="score-after"' not in page
    review = analyst.get("/console/review").text
    assert incident_id in review[review.index('id="disagreements"') :].split("</table>")[0]
    assert re.search(r'href="/console/incidents/[^"?]+\?selection=(top|uncertain|random)"', review)
    assert re.search(r'href="/console/transactions/[^"?]+\?selection=(top|uncertain|random)"', review)


def test_concurrent_feedback_posts_are_all_stored(analyst, world):
    flagged = [
        r[0]
        for r in served(
            world, "SELECT transaction_id FROM transactions WHERE is_anomaly ORDER BY ts LIMIT 16"
        )
    ]
    token = csrf_of(analyst.get("/console/transactions").text)
    before = feedback.read(world / "feedback.duckdb").height if (world / "feedback.duckdb").exists() else 0

    def post(target: str) -> int:
        data = {
            "csrf": token,
            "kind": "transaction",
            "target_id": target,
            "label": "unsure",
            "comment": "parallel",
        }
        return analyst.post("/console/feedback", data=data).status_code

    with ThreadPoolExecutor(16) as pool:
        assert set(pool.map(post, flagged)) == {303}
    rows = feedback.read(world / "feedback.duckdb")
    assert rows.height == before + len(flagged)
    assert set(rows.filter(rows["comment"] == "parallel")["target_id"].to_list()) == set(flagged)


# -- pages ----------------------------------------------------------------------------------------------


def test_pages_render_from_the_snapshot(analyst, world):
    incident_id, scenario = first_incident(world, severity="High")
    page = analyst.get(f"/console/incidents/{incident_id}")
    assert page.status_code == 200
    html = page.text
    assert 'aria-label="event scores over time"' in html and "<circle" in html
    assert 'aria-label="deviation from normal of the top features"' in html and "<rect" in html
    assert scenario in html and "confidence" in html
    event_id = re.search(r'href="/console/events/([^"]+)"', html).group(1)
    raw = analyst.get(f"/console/events/{event_id}")
    assert raw.status_code == 200 and 'id="message"' in raw.text  # the raw log line
    # filters, sorting and paging
    listing = analyst.get(
        "/console/incidents", params={"severity": "High", "sort": "score", "order": "desc"}
    ).text
    total = int(re.search(r"<strong>(\d+)</strong> incidents match", listing).group(1))
    assert total == served(world, "SELECT count(*) FROM incidents WHERE severity = 'High'")[0][0]
    assert listing.count('class="sev sev-') == min(total, 25) and "sev-Critical" not in listing
    second = analyst.get("/console/incidents", params={"page": 2}).text
    assert "page 2 of" in second
    bad = analyst.get("/console/incidents", params={"since": "yesterday"})
    assert bad.status_code == 200 and "not a date and time" in bad.text
    service = served(world, "SELECT unnest(services) FROM incidents LIMIT 1")[0][0]
    by_service = analyst.get(
        "/console/incidents", params={"service": service, "since": f"{DEMO_DAY}T00:00"}
    ).text
    assert (
        int(re.search(r"<strong>(\d+)</strong> incidents match", by_service).group(1))
        == served(world, f"SELECT count(*) FROM incidents WHERE list_contains(services, '{service}')")[0][0]
    )
    assert analyst.get("/console/incidents/INC-NOPE").status_code == 404
    alerts.record(
        world / "alerts.duckdb", "run-0123456789", "pipeline_job", DEMO_DAY, "boom: disk full", None
    )
    for path, text in [
        ("/console/models", "boom: disk full"),
        ("/console/transactions", "flagged transactions"),
        ("/console/predict", "Score transaction"),
        ("/console/models", "Failed runs (pipeline_alerts)"),
    ]:
        response = analyst.get(path)
        assert response.status_code == 200 and text in response.text, path
    models = analyst.get("/console/models").text
    assert "isolation_forest-" in models and "Latest evaluated day" in models
    # the world's transactions delivery ran through the CLI, which records its runs (pipeline_runs)
    runs = models.split('<table id="runs">')[1].split("</table>")[0]
    assert "transactions_job" in runs and "SUCCESS" in runs
    # both evaluations' precision-recall curves, from the snapshot
    assert (
        models.count('class="pr-curve"') >= 8
        and "Precision-recall curves of the latest evaluated day" in models
    )


def test_the_predict_forms_show_scores_or_field_errors(analyst):
    token = csrf_of(analyst.get("/console/predict").text)
    from bankanom_api.transactions import EXAMPLE_TRANSACTION

    good = {k: "" if v is None else str(v) for k, v in EXAMPLE_TRANSACTION.items()}
    response = analyst.post("/console/predict/transaction", data={**good, "csrf": token})
    assert (
        response.status_code == 200
        and 'id="transaction-result"' in response.text
        and "Decision:" in response.text
    )
    response = analyst.post(
        "/console/predict/transaction",
        data={**good, "csrf": token, "TransactionAmount": "-1", "CustomerAge": "abc", "IPAddress": "1.2.3"},
    )
    assert response.status_code == 422 and "Traceback" not in response.text
    for field in ("TransactionAmount", "CustomerAge", "IPAddress"):
        assert f'id="error-{field}"' in response.text, field
    assert 'value="-1"' in response.text  # the analyst's input is kept
    response = analyst.post("/console/predict/event", data={"csrf": token, "event": "{not json"})
    assert response.status_code == 422 and "not valid JSON" in response.text
    response = analyst.post(
        "/console/predict/event", data={"csrf": token, "event": '{"event_id": "e1", "log_level": "LOUD"}'}
    )
    assert response.status_code == 422 and "log_level" in response.text and "timestamp" in response.text


# -- the evaluation assets ------------------------------------------------------------------------------


def test_the_evaluation_assets_report_analyst_precision_from_feedback(world, tmp_path, monkeypatch):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(world / "warehouse.duckdb", warehouse)
    db = tmp_path / "feedback.duckdb"
    monkeypatch.setenv("BANKANOM_FEEDBACK_DB", str(db))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        incidents = [
            r[0]
            for r in con.execute(
                "SELECT incident_id FROM incidents WHERE partition_date = ? ORDER BY incident_id LIMIT 5",
                [DEMO_DAY],
            ).fetchall()
        ]
        flagged = [
            r[0]
            for r in con.execute(
                "SELECT transaction_id FROM scored_transactions WHERE partition_date = ? AND is_anomaly ORDER BY transaction_id LIMIT 3",
                [TX_DAY],
            ).fetchall()
        ]
    # incidents: 3 true, 1 false (after a change of mind), 1 unsure -> 0.75; transactions: 1 of 2 -> 0.5
    for target, label in zip(
        incidents,
        ["true_positive", "true_positive", "false_positive", "true_positive", "unsure"],
        strict=True,
    ):
        feedback.record(db, "incident", target, label, "", "tester")
    feedback.record(db, "incident", incidents[3], "false_positive", "changed my mind", "tester")
    feedback.record(db, "incident", incidents[3], "true_positive", "checked again", "tester")
    feedback.record(db, "incident", "INC-OTHER-DAY", "false_positive", "", "tester")  # not this day's
    for target, label in zip(flagged, ["true_positive", "false_positive", "unsure"], strict=True):
        feedback.record(db, "transaction", target, label, "", "tester")

    resources = {
        "warehouse": WarehouseResource(database=str(warehouse), landing_dir=str(tmp_path / "landing")),
        "registry": RegistryResource(models_dir=str(world / "models")),
    }
    result = dg.materialize(
        [evaluation],
        partition_key=DEMO_DAY,
        resources=resources,
        run_config={"ops": {"evaluation": {"config": {"baseline": False}}}},
    )
    meta = result.asset_materializations_for_node("evaluation")[0].metadata
    assert meta["analyst_precision"].value == pytest.approx(0.75)
    assert (
        meta["analyst_true_positives"].value,
        meta["analyst_false_positives"].value,
        meta["analyst_unsure"].value,
    ) == (3, 1, 1)
    assert 0 <= meta["incident_precision_synthetic"].value <= 1  # beside the synthetic labels' figure

    result = dg.materialize([transaction_evaluation], partition_key=TX_DAY, resources=resources)
    meta = result.asset_materializations_for_node("transaction_evaluation")[0].metadata
    assert meta["analyst_precision"].value == pytest.approx(0.5) and meta["analyst_labelled"].value == 3
    assert meta["precision_synthetic"].value is not None

    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM feedback").fetchone()[0] == 11
        logs = dict(
            con.execute(
                "SELECT metric, value FROM evaluation_metrics WHERE partition_date = ? AND model = 'incidents'",
                [DEMO_DAY],
            ).fetchall()
        )
        assert logs["analyst_precision"] == pytest.approx(0.75) and "incident_precision" in logs
        tx = dict(
            con.execute(
                "SELECT metric, value FROM transaction_evaluation_metrics WHERE partition_date = ? AND model = 'ensemble'",
                [TX_DAY],
            ).fetchall()
        )
        assert tx["analyst_precision"] == pytest.approx(0.5) and "precision" in tx


# -- end to end in a real browser -----------------------------------------------------------------------


def test_the_console_end_to_end_in_headless_chromium(server, world):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "install chromium (scripts/setup.sh does: apt-get install -y chromium)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(f"{server}/console/incidents")
            expect(page).to_have_url(re.compile(r"/console/login\?next="))
            shot(page, "01-login")
            page.fill("input[name=api_key]", "not-a-key")
            page.click("button[type=submit]")
            expect(page.locator("p.error")).to_contain_text("not valid")
            page.fill("input[name=api_key]", KEY)
            page.click("button[type=submit]")
            expect(page).to_have_url(re.compile(r"/console/incidents$"))
            expect(page.locator("#incidents tr.incident-row").first).to_be_visible()
            shot(page, "02-incidents")
            labelled_before = int(page.locator(".count-incident").inner_text())

            # filter: High only, highest score first
            page.select_option("select[name=severity]", "High")
            page.click("form.filters button[type=submit]")
            expect(page).to_have_url(re.compile(r"severity=High"))
            severities = page.locator("#incidents tr.incident-row .sev").all_inner_texts()
            assert severities and set(severities) == {"High"}
            page.click("#incidents th a:has-text('Max score')")
            expect(page).to_have_url(re.compile(r"sort=score"))
            shot(page, "03-incidents-filtered")

            # an incident: timeline, root cause, scenario, events
            rows = page.locator("#incidents tr.incident-row")
            target = next(
                (
                    r.locator("td a").inner_text()
                    for r in rows.all()
                    if not r.locator("td").last.inner_text().strip()
                ),
                rows.first.locator("td a").inner_text(),
            )
            page.click(f"#incidents a:has-text('{target}')")
            expect(page.locator("h1")).to_contain_text(target)
            expect(page.locator("svg[aria-label='event scores over time'] circle").first).to_be_attached()
            expect(
                page.locator("svg[aria-label='deviation from normal of the top features'] rect").first
            ).to_be_attached()
            expect(page.locator("#scenario")).to_contain_text("confidence")
            shot(page, "04-incident")
            shutil.copy(ARTIFACTS / "04-incident.png", ARTIFACTS / "incident.png")

            # feedback, then seen counted
            page.check("#feedback input[value=true_positive]")
            page.fill("#feedback textarea[name=comment]", "confirmed with the fraud team")
            page.click("#feedback button[type=submit]")
            expect(page.locator("#feedback .ok")).to_have_text("Feedback saved.")
            expect(page.locator("#feedback")).to_contain_text("confirmed with the fraud team")
            shot(page, "05-feedback")
            page.click("a:has-text('← incidents')")
            expect(page.locator(".count-incident")).to_have_text(str(labelled_before + 1))

            # a raw event of the incident
            page.goto(f"{server}/console/incidents/{target}")
            page.click("#events a >> nth=0")
            expect(page.locator("#message")).to_be_visible()
            shot(page, "06-event")

            # predict: a valid and an invalid transaction, a valid and an invalid event
            page.click("nav a:has-text('Predict')")
            page.click("#transaction-form button[type=submit]")
            expect(page.locator("#transaction-result .decision")).to_contain_text("Decision")
            expect(page.locator("#transaction-result table.contrib tr")).not_to_have_count(1)
            shot(page, "07-predict-transaction")
            page.fill("#tx-TransactionAmount", "-12")
            page.fill("#tx-IPAddress", "300.1.1.1")
            page.click("#transaction-form button[type=submit]")
            expect(page.locator("#error-TransactionAmount")).to_contain_text("greater than or equal to 0")
            expect(page.locator("#error-IPAddress")).to_be_visible()
            expect(page.locator("#transaction-result")).to_have_count(0)
            shot(page, "08-predict-transaction-invalid")
            page.click("#event-form button[type=submit]")
            expect(page.locator("#event-result .decision")).to_contain_text("Decision")
            shot(page, "09-predict-event")
            page.fill("#event-json", '{"event_id": "x", "timestamp": "yesterday", "log_level": "INFO"}')
            page.click("#event-form button[type=submit]")
            expect(page.locator("#event-errors")).to_contain_text("timestamp")
            expect(page.locator("#event-errors")).to_contain_text("source_service")
            shot(page, "10-predict-event-invalid")

            # flagged transactions and their feedback
            page.click("nav a:has-text('Transactions')")
            page.click("#transactions td a >> nth=0")
            page.check("#feedback input[value=false_positive]")
            page.click("#feedback button[type=submit]")
            expect(page.locator("#feedback .ok")).to_be_visible()
            shot(page, "11-transaction")

            page.click("nav a:has-text('Models')")
            expect(page.locator("h1")).to_have_text("Models and pipeline runs")
            expect(
                page.locator("svg[aria-label='precision and recall of each model at its threshold']").first
            ).to_be_visible()
            shot(page, "12-models")

            page.click("nav a:has-text('To review')")
            expect(page.locator("#queue-incident")).to_be_visible()
            expect(page.locator("#audit")).to_contain_text("Test Analyst")
            shot(page, "13-review")
        finally:
            browser.close()
    assert len(list(ARTIFACTS.glob("*.png"))) >= 13
