"""Live results beside the batch snapshot, in process: a small snapshot (DuckDB in memory) and a live
store written with the stream's own ``LiveStore`` and the live incidents' schema. The merge rule (the
batch wins for the events it holds and for incidents whose first event it holds; live rows fill the
rest), the ``live`` marking, exact totals, order and paging across the merge, filters, merged-away
incidents, new live rows and a new snapshot, and the stream's figures in /metrics."""

from __future__ import annotations

import datetime as dt
import re
import time

import duckdb
import orjson
import pytest

from bankanom_api.state import Snapshot
from bankanom_pipeline.live.incidents import LiveIncidents
from bankanom_pipeline.live.store import EVENT_COLUMNS, LiveStore
from tests.api_server import api_client

KEY = "live-key"
H = {"X-API-Key": KEY}
DAY, NEXT = "2026-03-01", "2026-03-02"
SERVICES = ("auth-service", "payment-service")
T0 = dt.datetime(2026, 3, 1, 10, 0, 0)


def us(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)


def event(i: int, day_offset: int = 0, minutes: float | None = None, **overrides) -> dict:
    """Event ``E<i>``: one a minute from 10:00 of DAY (+ ``day_offset`` days), alternating services,
    every third anomalous."""
    ts = T0 + dt.timedelta(days=day_offset, minutes=i if minutes is None else minutes)
    score = round(0.5 + (i % 7) / 20, 3)
    return {
        "event_id": f"E{i:03d}",
        "ts": ts,
        "partition_date": ts.date().isoformat(),
        "source_service": SERVICES[i % 2],
        "user_id": f"USR-{i % 3}",
        "ip_address": "10.0.0.1",
        "correlation_id": None,
        "if_score": score,
        "lof_score": 0.1,
        "ensemble_score": score,
        "if_flag": i % 3 == 0,
        "lof_flag": False,
        "is_anomaly": i % 3 == 0,
        "if_version": "if-1",
        "lof_version": "lof-1",
        **overrides,
    }


BATCH = [event(i) for i in range(12)]  # DAY 10:00 .. 10:11
# live: 6..11 again (the batch holds them: hidden), a late line of DAY the batch never read (E100, at
# 10:05:30, between batch rows), and the next day's events (E200..E209)
LIVE = [
    *BATCH[6:],
    event(100, minutes=5.5),
    *[event(200 + i, day_offset=1) for i in range(10)],
]


def snapshot(events: list[dict], incidents: list[dict], name: str = "snapshot-a.duckdb") -> Snapshot:
    con = duckdb.connect()
    con.execute(
        """CREATE TABLE scored_events (partition_date DATE, event_id VARCHAR, ts TIMESTAMP,
           source_service VARCHAR, user_id VARCHAR, ip_address VARCHAR, correlation_id VARCHAR,
           if_score DOUBLE, lof_score DOUBLE, ensemble_score DOUBLE, if_flag BOOLEAN, lof_flag BOOLEAN,
           is_anomaly BOOLEAN, if_version VARCHAR, lof_version VARCHAR)"""
    )
    columns = [
        "partition_date",
        "event_id",
        "ts",
        "source_service",
        "user_id",
        "ip_address",
        "correlation_id",
        "if_score",
        "lof_score",
        "ensemble_score",
        "if_flag",
        "lof_flag",
        "is_anomaly",
        "if_version",
        "lof_version",
    ]
    con.executemany(
        f"INSERT INTO scored_events VALUES ({', '.join('?' * len(columns))})",
        [[e[c] for c in columns] for e in events],
    )
    con.execute(
        """CREATE TABLE incidents (partition_date DATE, incident_id VARCHAR, start_ts TIMESTAMP,
           end_ts TIMESTAMP, event_count BIGINT, services VARCHAR[], users VARCHAR[], ips VARCHAR[],
           user_count BIGINT, ip_count BIGINT, max_score DOUBLE, mean_score DOUBLE, severity VARCHAR,
           reported BOOLEAN, origin_service VARCHAR, origin_entity VARCHAR, scenario_id VARCHAR,
           scenario_name VARCHAR, scenario_confidence DOUBLE, scenario_alternatives VARCHAR,
           top_features VARCHAR, summary VARCHAR, status VARCHAR)"""
    )
    for inc in incidents:
        con.execute(
            "INSERT INTO incidents VALUES (?, ?, ?, ?, 2, ['auth-service'], ['USR-0'], ['10.0.0.1'], 1, 1, "
            "0.9, 0.9, ?, true, 'auth-service', 'user USR-0', NULL, NULL, NULL, '[]', '[]', 'batch', 'open')",
            [inc["day"], inc["id"], inc["start"], inc["start"] + dt.timedelta(minutes=1), inc["severity"]],
        )
    con.execute(
        """CREATE TABLE incident_events AS SELECT partition_date, 'x' AS incident_id, event_id, ts,
           source_service, user_id, ip_address, ensemble_score FROM scored_events WHERE false"""
    )
    rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("scored_events", "incidents")}
    rows["incident_events"] = 0
    pointer = {"file": name, "published_at": "2026-03-02T00:00:00+00:00", "rows": rows}
    return Snapshot(pointer, con, time.time())


def live_row(seq: int, e: dict) -> tuple:
    values = {
        "seq": seq,
        "source": "mock",
        "source_offset": f"1:{seq}",
        "event_id": e["event_id"],
        "ts": us(e["ts"]),
        "partition_date": e["partition_date"],
        "source_service": e["source_service"],
        "log_level": "INFO",
        "message": "m",
        "correlation_id": None,
        "user_id": e["user_id"],
        "ip_address": e["ip_address"],
        "geo_location": None,
        "metrics": None,
        "status": "ingested",
        "isolation_forest": e["if_score"],
        "local_outlier_factor": e["lof_score"],
        "ensemble_score": e["ensemble_score"],
        "if_flag": int(e["if_flag"]),
        "lof_flag": int(e["lof_flag"]),
        "is_anomaly": int(e["is_anomaly"]),
        "model_versions": orjson.dumps(
            {"isolation_forest": "if-1", "local_outlier_factor": "lof-1"}
        ).decode(),
        "unscored": None,
        "emitted_at": None,
        "scored_at": 0.0,
    }
    return tuple(values[c] for c in EVENT_COLUMNS)


def live_incident(cur, incident_id: str, first: dict, severity: str = "High", merged_into: str | None = None):
    start = us(first["ts"])
    cur.execute(
        """INSERT INTO incidents (incident_id, partition_date, start_ts, end_ts, event_count, services, users,
           ips, user_count, ip_count, max_score, mean_score, severity, reported, origin_service, origin_entity,
           scenario_id, scenario_name, scenario_confidence, scenario_alternatives, top_features, summary,
           status, first_event_id, merged_into, opened_at, updated_at)
           VALUES (?, ?, ?, ?, 1, '["auth-service"]', '["USR-0"]', '["10.0.0.1"]', 1, 1, 0.9, 0.9, ?, 1,
                   'auth-service', 'user USR-0', NULL, NULL, NULL, '[]', '[]', 'live', 'open', ?, ?, 0, 0)""",
        [
            incident_id,
            first["partition_date"],
            start,
            start + 60_000_000,
            severity,
            first["event_id"],
            merged_into,
        ],
    )
    cur.execute("INSERT INTO incident_events VALUES (?, ?)", [incident_id, first["event_id"]])


def write_live(path, events: list[dict], start_seq: int = 1, incidents=None, status: dict | None = None):
    with LiveStore(path, extra_schema=LiveIncidents.SCHEMA) as store:
        store.commit(
            [live_row(start_seq + i, e) for i, e in enumerate(events)],
            offsets={"mock": f"1:{start_seq + len(events) - 1}"},
            meta={"status": status} if status else None,
            extra=incidents,
        )


def by_newest(rows: list[dict]) -> list[str]:
    return [e["event_id"] for e in sorted(rows, key=lambda e: (-us(e["ts"]), e["event_id"]))]


BATCH_INCIDENTS = [
    {"id": "INC-B1", "day": DAY, "start": T0 + dt.timedelta(minutes=6), "severity": "High"},
    {"id": "INC-B2", "day": DAY, "start": T0 + dt.timedelta(minutes=1), "severity": "Low"},
]


def _live_incidents(cur):
    live_incident(cur, "INC-B1", BATCH[6])  # the batch confirmed it: the batch row is served
    live_incident(cur, "INC-L0", BATCH[9])  # its first event is the batch's: hidden (batch says)
    live_incident(cur, "INC-L1", LIVE[6])  # E100, a line the batch never read: shown
    live_incident(cur, "INC-L2", LIVE[8], severity="Critical")  # E201 on NEXT: shown
    live_incident(cur, "INC-L3", LIVE[9], merged_into="INC-L2")  # merged away: never listed


@pytest.fixture
def served(tmp_path):
    write_live(tmp_path / "live" / "live.sqlite", LIVE, incidents=_live_incidents)
    with api_client(tmp_path, KEY, rate_limit="100000/second") as app:
        app.app.state.serving.snapshot = snapshot(BATCH, BATCH_INCIDENTS)
        yield app


def all_pages(app, path: str, limit: int, **params) -> tuple[list[dict], set[int]]:
    items, totals, offset = [], set(), 0
    while True:
        page = app.get(path, params={**params, "limit": limit, "offset": offset}, headers=H)
        assert page.status_code == 200, page.text
        body = page.json()
        totals.add(body["total"])
        items += body["items"]
        offset += limit
        if offset >= body["total"]:
            return items, totals


# -- scores --------------------------------------------------------------------------------------------


def test_scores_merge_batch_and_live_newest_first_with_exact_paging(served):
    visible_live = [e for e in LIVE if e["event_id"] not in {b["event_id"] for b in BATCH}]
    expected = by_newest(BATCH + visible_live)
    for limit in (1, 3, 7, 100):
        items, totals = all_pages(served, "/scores/latest", limit)
        assert totals == {len(expected)}
        assert [i["event_id"] for i in items] == expected
    items, _ = all_pages(served, "/scores/latest", 100)
    live = {i["event_id"] for i in items if i["live"]}
    assert live == {e["event_id"] for e in visible_live}  # E100 and NEXT's; never a batch-held event
    e100 = next(i for i in items if i["event_id"] == "E100")
    assert e100["ts"] == "2026-03-01T10:05:30Z" and e100["partition_date"] == DAY
    assert e100["if_version"] == "if-1" and e100["is_anomaly"] is False
    # a page past the end: the total still counts both
    past = served.get("/scores/latest", params={"offset": 500}, headers=H).json()
    assert past["items"] == [] and past["total"] == len(expected)


@pytest.mark.parametrize(
    "params",
    [
        {"service": "auth-service"},
        {"user": "USR-1", "min_score": 0.6},
        {"anomalies_only": "true"},
        {"since": "2026-03-01T10:05:00Z", "until": "2026-03-02T13:24:00Z"},
        {"since": "2026-03-01T10:06:00Z"},  # the live rows all newer than the batch's: cut in turn
    ],
)
def test_filters_apply_to_both_sides_of_the_merge(served, params):
    since = dt.datetime.fromisoformat(params["since"]).replace(tzinfo=None) if "since" in params else None
    until = dt.datetime.fromisoformat(params["until"]).replace(tzinfo=None) if "until" in params else None

    def kept(e: dict) -> bool:
        return (
            e["source_service"] == params.get("service", e["source_service"])
            and e["user_id"] == params.get("user", e["user_id"])
            and e["ensemble_score"] >= params.get("min_score", 0)
            and (e["is_anomaly"] or "anomalies_only" not in params)
            and (since is None or e["ts"] >= since)
            and (until is None or e["ts"] < until)
        )

    batch_ids = {b["event_id"] for b in BATCH}
    expected = by_newest([e for e in BATCH + [e for e in LIVE if e["event_id"] not in batch_ids] if kept(e)])
    assert expected  # each filter leaves something on both sides
    items, totals = all_pages(served, "/scores/latest", 2, **params)
    assert totals == {len(expected)} and [i["event_id"] for i in items] == expected


def test_new_live_rows_show_at_once_and_a_newer_snapshot_takes_them_over(served, tmp_path):
    before = served.get("/scores/latest", headers=H).json()["total"]
    late = [event(300 + i, day_offset=1) for i in range(3)]
    write_live(tmp_path / "live" / "live.sqlite", late, start_seq=len(LIVE) + 1)
    page = served.get("/scores/latest", params={"limit": 3}, headers=H).json()
    assert page["total"] == before + 3 and [i["event_id"] for i in page["items"]] == ["E302", "E301", "E300"]
    assert all(i["live"] for i in page["items"])
    # the batch run for NEXT publishes: it holds every live event now, which are no longer live
    nxt = [e for e in LIVE if e["partition_date"] == NEXT] + late
    served.app.state.serving.snapshot = snapshot(BATCH + nxt, BATCH_INCIDENTS, name="snapshot-b.duckdb")
    # the previous snapshot serves (with the live rows it lacks) until the new one's shadow is built in
    # the background: the same rows either way, the newest of them live until the switch
    deadline = time.monotonic() + 30
    while served.get("/scores/latest", params={"limit": 1}, headers=H).json()["items"][0]["live"]:
        assert time.monotonic() < deadline, "the new snapshot never took over"
        time.sleep(0.05)
    items, totals = all_pages(served, "/scores/latest", 5)
    assert totals == {len(BATCH) + len(nxt) + 1}  # + E100, the line no batch read
    assert [i["event_id"] for i in items if i["live"]] == ["E100"]


def test_live_results_alone_before_any_snapshot_and_503_with_neither(tmp_path):
    write_live(tmp_path / "live" / "live.sqlite", LIVE[:3])
    with api_client(tmp_path, KEY) as app:
        page = app.get("/scores/latest", headers=H).json()
        assert [i["event_id"] for i in page["items"]] == ["E008", "E007", "E006"]
        assert all(i["live"] for i in page["items"])
        assert app.get("/incidents", headers=H).json()["total"] == 0  # a store without incidents yet
    with api_client(tmp_path / "nothing", KEY) as app:
        for path in ("/scores/latest", "/incidents"):
            response = app.get(path, headers=H)
            assert response.status_code == 503 and "no snapshot published yet" in response.json()["detail"]


# -- incidents -----------------------------------------------------------------------------------------


def test_incidents_merge_batch_and_live_and_hide_what_the_batch_holds_or_was_merged(served):
    items, totals = all_pages(served, "/incidents", 1)
    assert totals == {4}
    assert [(i["incident_id"], i["live"]) for i in items] == [
        ("INC-L2", True),  # NEXT 13:21
        ("INC-B1", False),  # DAY 10:06 (the live copy of the same id is not served)
        ("INC-L1", True),  # DAY 10:05:30
        ("INC-B2", False),  # DAY 10:01
    ]
    critical = served.get("/incidents", params={"severity": "Critical"}, headers=H).json()
    assert [i["incident_id"] for i in critical["items"]] == ["INC-L2"] and critical["total"] == 1
    since = served.get("/incidents", params={"since": "2026-03-01T10:06:31Z"}, headers=H).json()
    assert [i["incident_id"] for i in since["items"]] == ["INC-L2", "INC-B1"]


def test_which_live_incidents_a_snapshot_hides_is_worked_out_again_for_a_new_one(served, tmp_path):
    """Whether the snapshot hides a live incident is kept per snapshot and incident: a new live incident
    is looked up when it appears, and a newer snapshot holding a shown one's first event hides it."""

    def live_ids() -> list[str]:
        return [i["incident_id"] for i in all_pages(served, "/incidents", 2)[0] if i["live"]]

    assert live_ids() == ["INC-L2", "INC-L1"]
    late = event(400, day_offset=1, minutes=30)  # NEXT 10:30
    write_live(
        tmp_path / "live" / "live.sqlite",
        [late],
        start_seq=len(LIVE) + 1,
        incidents=lambda cur: live_incident(cur, "INC-L4", late),
    )
    assert live_ids() == ["INC-L2", "INC-L4", "INC-L1"]
    # the batch run for NEXT publishes with E201 (INC-L2's first event) and without E400
    nxt = [e for e in LIVE if e["partition_date"] == NEXT]
    served.app.state.serving.snapshot = snapshot(BATCH + nxt, BATCH_INCIDENTS, name="snapshot-b.duckdb")
    assert live_ids() == ["INC-L4", "INC-L1"]


def test_one_incident_batch_or_live_and_a_merged_one_points_to_its_survivor(served):
    batch = served.get("/incidents/INC-B1", headers=H).json()
    assert batch["live"] is False and batch["summary"] == "batch"
    live = served.get("/incidents/INC-L2", headers=H).json()
    assert live["live"] is True and live["services"] == ["auth-service"] and live["reported"] is True
    assert [e["event_id"] for e in live["events"]] == ["E201"]
    assert (
        live["start_ts"] == "2026-03-02T13:21:00Z" and live["root_cause"]["origin_service"] == "auth-service"
    )
    moved = served.get("/incidents/INC-L3", headers=H, follow_redirects=False)
    assert moved.status_code == 301 and moved.headers["location"] == "/incidents/INC-L2"
    assert moved.json()["merged_into"] == "INC-L2"
    assert served.get("/incidents/INC-L3", headers=H).json()["incident_id"] == "INC-L2"  # followed
    assert served.get("/incidents/INC-NONE", headers=H).status_code == 404


# -- metrics -------------------------------------------------------------------------------------------


def metric(text: str, name: str, **labels) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$" if labels else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else None


def test_metrics_export_the_streams_status_from_the_live_store(tmp_path):
    with api_client(tmp_path, KEY) as app:
        assert metric(app.get("/metrics", headers=H).text, "bankanom_stream_up") == 0  # no store yet
        status = {
            "lag_events": 42,
            "lag_seconds": 1.5,
            "events": 1234,
            "refused": {"duplicate": 3, "invalid": 2},
            "open_incidents": 1,
            "waiting_template_events": 7,
            "at": time.time() - 2,
        }
        write_live(tmp_path / "live" / "live.sqlite", LIVE[:2], incidents=_live_incidents, status=status)
        text = app.get("/metrics", headers=H).text
    assert metric(text, "bankanom_stream_up") == 1
    assert metric(text, "bankanom_stream_lag_events") == 42
    assert metric(text, "bankanom_stream_lag_seconds") == 1.5
    assert metric(text, "bankanom_stream_events") == 1234
    assert metric(text, "bankanom_stream_refused_events", reason="duplicate") == 3
    assert metric(text, "bankanom_stream_refused_events", reason="invalid") == 2
    assert metric(text, "bankanom_stream_open_incidents") == 1
    assert metric(text, "bankanom_stream_waiting_template_events") == 7
    assert metric(text, "bankanom_stream_incidents") == 4  # INC-L3 was merged away
    assert 2 <= metric(text, "bankanom_stream_status_age_seconds") < 60


def test_metrics_export_the_streams_batch_timings(tmp_path):
    from bankanom_pipeline.live.timings import STAGES, Timings

    timings = Timings()
    for wall in (0.03, 0.3, 0.3, 7.0):  # a 7 s stall: in the histogram's last bucket, its stage's max
        stages = dict.fromkeys(STAGES, 0.0) | {"engine": wall / 2, "commit": wall / 4}
        timings.record(1000, stages, 10.0, 10.0 + wall)
    timings.gc["seconds"], timings.gc["max_s"] = [0.5, 0.1, 2.0], [0.01, 0.02, 0.3]
    summary = timings.summary() | {"rca_in_background": {"passes": 3, "seconds": 4.5, "max_s": 2.0}}
    with api_client(tmp_path, KEY) as app:
        status = {"events": 4000, "at": time.time(), "timings": summary}
        write_live(tmp_path / "live" / "live.sqlite", LIVE[:2], incidents=_live_incidents, status=status)
        text = app.get("/metrics", headers=H).text
    assert metric(text, "bankanom_stream_batches_total") == 4
    assert metric(text, "bankanom_stream_stage_seconds_total", stage="engine") == pytest.approx(3.815)
    assert metric(text, "bankanom_stream_stage_max_seconds", stage="commit") == 1.75
    assert metric(text, "bankanom_stream_stage_seconds_total", stage="rca") == 0
    assert metric(text, "bankanom_stream_batch_seconds_bucket", le="0.05") == 1
    assert metric(text, "bankanom_stream_batch_seconds_bucket", le="0.5") == 3
    assert metric(text, "bankanom_stream_batch_seconds_bucket", le="5.0") == 3
    assert metric(text, "bankanom_stream_batch_seconds_bucket", le="+Inf") == 4
    assert metric(text, "bankanom_stream_batch_seconds_count") == 4
    assert metric(text, "bankanom_stream_batch_seconds_sum") == pytest.approx(7.63)
    assert metric(text, "bankanom_stream_gc_seconds_total", generation="2") == 2.0
    assert metric(text, "bankanom_stream_gc_max_seconds", generation="2") == 0.3
    assert metric(text, "bankanom_stream_background_rca_seconds_total") == 4.5
    assert metric(text, "bankanom_stream_background_rca_passes_total") == 3


# -- the console ---------------------------------------------------------------------------------------


def console_login(app) -> str:
    """Log in with the reading key; the session's CSRF token."""
    csrf = re.search(r'name="csrf" value="([^"]+)"', app.get("/console/login").text).group(1)
    login = app.post("/console/login", data={"csrf": csrf, "api_key": KEY}, follow_redirects=False)
    assert login.status_code == 303
    return re.search(r'name="csrf" value="([^"]+)"', app.get("/console/predict").text).group(1)


def test_the_console_lists_live_incidents_marked_and_opens_them(served):
    console_login(served)
    page = served.get("/console/incidents").text
    live = page[page.index('id="live-incidents"') : page.index('id="incident-total"')]
    assert "2 open live incidents" in live
    assert live.index("INC-L2") < live.index("INC-L1")  # newest first
    assert not any(i in live for i in ("INC-L0", "INC-L3", "INC-B1", "INC-B2"))
    critical = served.get("/console/incidents", params={"severity": "Critical"}).text
    assert "1 open live incident " in critical and "INC-L1" not in critical
    one = served.get("/console/incidents/INC-L2")
    assert one.status_code == 200 and 'id="live"' in one.text and "E201" in one.text
    assert 'id="live"' not in served.get("/console/incidents/INC-B1").text
    moved = served.get("/console/incidents/INC-L3", follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == "/console/incidents/INC-L2"
    event = served.get("/console/events/E201")
    assert event.status_code == 200 and 'id="live"' in event.text and "INC-L2" in event.text
    assert 'id="live"' not in served.get("/console/events/E001").text
    assert served.get("/console/events/E999").status_code == 404


def test_feedback_on_a_live_incident_stays_with_its_id(served):
    csrf = console_login(served)
    saved = served.post(
        "/console/feedback",
        data={
            "csrf": csrf,
            "kind": "incident",
            "target_id": "INC-L2",
            "label": "true_positive",
            "comment": "seen",
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    # the batch confirms the incident under the same id: the feedback is still there
    confirmed = [
        *BATCH_INCIDENTS,
        {"id": "INC-L2", "day": NEXT, "start": LIVE[8]["ts"], "severity": "Critical"},
    ]
    served.app.state.serving.snapshot = snapshot(BATCH + LIVE[7:], confirmed, name="snapshot-c.duckdb")
    page = served.get("/console/incidents/INC-L2").text
    assert 'id="live"' not in page and "seen" in page
    refused = served.post(
        "/console/feedback",
        data={"csrf": csrf, "kind": "incident", "target_id": "INC-L3", "label": "true_positive"},
    )
    assert refused.status_code == 404  # merged away: feedback goes to the survivor


def test_the_models_page_shows_the_days_reconciliation(tmp_path):
    write_live(tmp_path / "live" / "live.sqlite", LIVE, incidents=_live_incidents)
    snap = snapshot(BATCH, BATCH_INCIDENTS)
    snap.con.execute(
        "CREATE TABLE evaluation_metrics AS SELECT DATE '2026-03-01' AS partition_date, "
        "'isolation_forest' AS model, 'precision' AS metric, 0.9::DOUBLE AS value"
    )
    snap.pointer["rows"]["evaluation_metrics"] = 1
    with api_client(tmp_path, KEY, rate_limit="100000/second") as app:
        app.app.state.serving.snapshot = snap
        console_login(app)
        page = app.get("/console/models").text
    assert 'id="reconciliation"' in page and "2026-03-01" in page
    # DAY: E006..E011 in both, E100 live only, E000..E005 batch only
    assert "6 scored by both; 1 live only, 6 batch only" in page
