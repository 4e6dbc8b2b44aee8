"""Incident grouping, reporting, severity and explanations on crafted flagged events."""

import datetime as dt
import hashlib
import json

import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.incident_ids import check_unique, incident_id
from bankanom_pipeline.detection.incidents import (
    INCIDENT_COLUMNS,
    build_incidents,
    default_incident_config,
)

FEATURES = default_detection_config().feature_names
DAY = dt.date(2026, 1, 5)
T0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
LOGIN_FAILED = "Login failed for user <id> from <id>: invalid credentials"


def event(
    eid, minute, service="auth-service", user=None, ip=None, corr=None, template=LOGIN_FAILED, score=0.99, **f
):
    row = {
        "partition_date": DAY,
        "event_id": eid,
        "ts": T0 + dt.timedelta(minutes=minute),
        "source_service": service,
        "user_id": user,
        "ip_address": ip,
        "correlation_id": corr,
        "template": template,
        "if_score": score,
        "lof_score": score,
        "ensemble_score": score,
    }
    row.update({name: 0.0 for name in FEATURES})
    row["template_rarity"] = 2.0  # a common template unless a test says otherwise
    row.update(f)
    return row


def to_us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def frame(rows):
    return pl.DataFrame(rows).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def no_explain(rows):
    raise AssertionError("explain must not be called")


def build(rows, deviations=None, explain=None, **kw):
    flagged = frame(rows)
    dev = np.zeros((len(rows), len(FEATURES))) if deviations is None else deviations
    return build_incidents(
        flagged, dev, FEATURES, explain or (lambda r: np.zeros((len(r), len(FEATURES)))), **kw
    )


def members(incidents, incident_events):
    got = incident_events.group_by("incident_id").agg(pl.col("event_id").sort())
    return sorted(tuple(x) for x in got["event_id"].to_list())


def test_links_need_a_shared_key_and_time_proximity():
    rows = [
        # one victim, failures 2 minutes apart: one incident
        event("a1", 0, user="USR-1", ip="1.2.3.4"),
        event("a2", 2, user="USR-1", ip="1.2.3.4"),
        # another user and IP at the same time: its own incident
        event("b1", 1, user="USR-2", ip="9.9.9.9"),
        # the first victim again, but an hour later: past the 15-minute user gap
        event("a3", 62, user="USR-1", ip="5.5.5.5"),
        # shares only the IP with b1, 8 minutes on: within the 10-minute IP gap (chains into b)
        event("b2", 9, user="USR-3", ip="9.9.9.9"),
    ]
    incidents, ie = build(rows)
    assert members(incidents, ie) == [("a1", "a2"), ("a3",), ("b1", "b2")]
    assert len(incidents) == 3


def test_chains_are_transitive_and_ids_follow_time_order():
    # c1 - c2 share the user, c2 - c3 share the IP: one incident of three though c1 and c3 share nothing
    rows = [
        event("c3", 6, user="USR-8", ip="7.7.7.7"),
        event("c1", 0, user="USR-5", ip="6.6.6.6"),
        event("c2", 3, user="USR-5", ip="7.7.7.7"),
        event("z", -30, user="USR-9", ip="8.8.8.8"),
    ]
    incidents, ie = build(rows)
    assert members(incidents, ie) == [("c1", "c2", "c3"), ("z",)]
    # rows follow time order; each id names the incident's first event
    first = incidents.row(0, named=True)
    assert first["incident_id"] == incident_id("z", to_us(T0 - dt.timedelta(minutes=30)))
    assert first["event_count"] == 1  # z is earliest
    second = incidents.row(1, named=True)
    assert second["incident_id"] == incident_id("c1", to_us(T0))
    assert second["incident_id"].startswith("INC-20260105-") and len(second["incident_id"]) == 23
    assert second["start_ts"] == T0 and second["end_ts"] == T0 + dt.timedelta(minutes=6)
    assert second["users"] == ["USR-5", "USR-8"] and second["user_count"] == 2
    assert second["ip_count"] == 2


def test_network_correlation_and_placeholder_users():
    rows = [
        # an attacker pool in one /24: different hosts and victims, linked by the network
        event("n1", 0, user="USR-1", ip="45.1.2.10"),
        event("n2", 1, user="USR-2", ip="45.1.2.77"),
        event("n3", 2, user="USR-3", ip="45.1.3.77"),  # another /24: not linked
        # a follow-up step 20 minutes after its line: linked only by the correlation id
        event("f0", 30, user=None, ip="10.0.0.1", corr="C-1", service="api-gateway"),
        event(
            "f1",
            50,
            user=None,
            ip="10.0.0.2",
            corr="C-1",
            service="api-gateway",
            template="Follow-up action rate-limiting started",
        ),
        # "unknown" is not an account: no link though the same value
        event("u1", 80, user="unknown", ip="3.3.3.1"),
        event("u2", 81, user="unknown", ip="4.4.4.1"),
    ]
    incidents, ie = build(rows)
    assert members(incidents, ie) == [("f0", "f1"), ("n1", "n2"), ("n3",), ("u1",), ("u2",)]


def test_service_wide_links_rare_templates_and_infrastructure_only():
    timeout = "Upstream timeout calling /v#/payments after #ms"
    rows = [
        # a timeout storm: different users and IPs, a rare template (endpoints differ): one incident
        event(
            "t1", 0, service="api-gateway", user="USR-1", ip="1.1.1.1", template=timeout, template_rarity=6.0
        ),
        event(
            "t2",
            1,
            service="api-gateway",
            user="USR-2",
            ip="2.2.2.2",
            template=timeout.replace("payments", "cards"),
            template_rarity=6.0,
        ),
        # the same rare template on another service is another problem
        event(
            "t3",
            1.5,
            service="transaction-service",
            user="USR-3",
            ip="3.3.3.3",
            template=timeout,
            template_rarity=6.0,
        ),
        # a common template on one service links nothing by itself
        event("l1", 0, user="USR-4", ip="4.4.4.4"),
        event("l2", 1, user="USR-5", ip="4.4.5.4"),
        # infrastructure lines without a user link by service; their host IP does not
        event("p1", 0, service="postgres-db", ip="10.1.0.1", template="Replica is #s behind primary"),
        event("p2", 2, service="postgres-db", ip="10.1.0.2", template="Replica is #s behind primary"),
        event("m1", 0.5, service="monitoring-agent", ip="10.1.0.3", template="Replica is #s behind primary"),
        event("p3", 9, service="postgres-db", ip="10.1.0.1", template="Replica is #s behind primary"),
    ]
    incidents, ie = build(rows)
    assert members(incidents, ie) == [("l1",), ("l2",), ("m1",), ("p1", "p2"), ("p3",), ("t1", "t2"), ("t3",)]


def test_a_rare_template_does_not_bridge_groups_that_have_their_own_source():
    alert = "Login velocity alert for <id>: # attempts in # minutes"
    rows = []
    # two concurrent brute forces, each held together by its attacker /24, both logging the same rare
    # alert: two incidents, not one bridged by the alert
    for pool, net in (("a", "45.1.2"), ("b", "77.8.9")):
        rows += [
            event(f"{pool}{i}", i * 0.5, user=f"USR-{pool}{i}", ip=f"{net}.{i + 1}", ip_distinct_users_10m=9)
            for i in range(3)
        ]
        rows.append(
            event(
                f"{pool}-alert",
                1.6,
                service="fraud-detection-service",
                user=f"USR-{pool}0",
                ip=f"{net}.1",
                template=alert,
                template_rarity=6.0,
                ip_distinct_users_10m=9,
            )
        )
    # a lone alert with no source in common with anything: small, so the template still gathers it with
    # another small group's alert (a service-wide problem's lines share no source)
    rows += [
        event(
            "s1",
            1.0,
            service="fraud-detection-service",
            user="USR-s1",
            ip="9.9.9.1",
            template=alert,
            template_rarity=6.0,
        ),
        event(
            "s2",
            2.0,
            service="fraud-detection-service",
            user="USR-s2",
            ip="8.8.8.1",
            template=alert,
            template_rarity=6.0,
        ),
    ]
    incidents, ie = build(rows)
    assert members(incidents, ie) == [
        ("a-alert", "a0", "a1", "a2"),
        ("b-alert", "b0", "b1", "b2"),
        ("s1", "s2"),
    ]


def test_reporting_severity_and_origin():
    rows = [event(f"bf{i}", i * 0.1, user=f"USR-{i}", ip=f"45.1.2.{i + 1}", score=0.9995) for i in range(60)]
    rows += [event("lone", 200, user="USR-900", ip="8.8.8.8", score=0.935)]
    rows += [event("loud", 300, user="USR-901", ip="8.8.4.4", score=0.997)]
    rows += [
        event("pair1", 400, user="USR-902", ip="7.1.1.1", score=0.971, service="api-gateway"),
        event("pair2", 401, user="USR-902", ip="7.1.1.1", score=0.972),
    ]
    incidents, _ = build(rows)
    by = {
        r["event_count"] if r["event_count"] > 1 else r["max_score"]: r
        for r in incidents.iter_rows(named=True)
    }
    attack, lone, loud, pair = by[60], by[0.935], by[0.997], by[2]
    # score points 3 (>= 0.999) + blast radius 3 (60 users, 60 IPs) = 6
    assert attack["severity"] == "Critical" and attack["reported"]
    assert attack["origin_entity"] == "network 45.1.2.0/24"
    # a lone line just over the flag threshold is kept but not reported; an extreme one is reported
    assert lone["severity"] == "Low" and not lone["reported"]
    assert loud["reported"] and loud["severity"] == "Medium"  # 2 score points, no blast radius
    assert pair["reported"] and pair["origin_service"] == "api-gateway"
    assert pair["origin_entity"] == "user USR-902"
    assert pair["mean_score"] == pytest.approx(0.9715)


def test_explanations_use_attribution_of_the_top_line_only_for_reported_incidents():
    i_fail = FEATURES.index("user_failed_logins_10m")
    i_rate = FEATURES.index("success_rate")
    i_hour = FEATURES.index("hour_sin")
    rows = [
        event("a1", 0, user="USR-1", ip="1.2.3.4", score=0.98, user_failed_logins_10m=4.0),
        event("a2", 1, user="USR-1", ip="1.2.3.4", score=0.99, user_failed_logins_10m=9.0, success_rate=0.1),
        event("x", 100, user="USR-7", ip="7.7.7.7", score=0.935),  # lone and unreported
    ]
    dev = np.zeros((3, len(FEATURES)))
    dev[0, i_fail], dev[1, i_fail], dev[1, i_rate] = 4.0, 9.0, -6.0
    dev[:2, i_hour] = 2.0
    dev[2, i_hour] = -3.0
    calls = []

    def explain(rows_):
        calls.append(list(rows_))
        out = np.zeros((len(rows_), len(FEATURES)))
        out[:, i_rate], out[:, i_fail], out[:, i_hour] = 0.02, 0.05, 0.01
        return out

    normals = [0.5] * len(FEATURES)
    incidents, _ = build(rows, dev, explain, normals=normals)
    assert calls == [[1]]  # the top line (a2) of the one reported incident
    reported = incidents.filter(pl.col("reported")).row(0, named=True)
    top = json.loads(reported["top_features"])
    assert [t["feature"] for t in top] == ["user_failed_logins_10m", "success_rate", "hour_sin"]
    assert top[0] == {
        "feature": "user_failed_logins_10m",
        "value": 9.0,
        "normal": 0.5,
        "deviation": 9.0,
        "attribution": 0.05,
    }
    lone = json.loads(incidents.filter(~pl.col("reported"))["top_features"][0])
    assert lone[0]["feature"] == "hour_sin" and lone[0]["attribution"] is None
    summary = reported["summary"]
    for part in (
        incident_id("a1", to_us(T0)),
        "auth-service",
        "user USR-1",
        "user_failed_logins_10m",
        "confidence",
    ):
        assert part in summary


def test_output_schema_and_empty_input():
    incidents, ie = build([event("a", 0, user="USR-1")])
    assert incidents.columns == INCIDENT_COLUMNS
    assert ie.columns == ["partition_date", "incident_id", "event_id"]
    assert incidents["status"].to_list() == ["open"]
    empty_flagged = frame([event("a", 0, user="USR-1")]).clear()
    incidents, ie = build_incidents(empty_flagged, np.zeros((0, len(FEATURES))), FEATURES, no_explain)
    assert incidents.columns == INCIDENT_COLUMNS and len(incidents) == 0 and len(ie) == 0


def test_partitions_never_share_an_incident():
    rows = [event("d1", 0, user="USR-1"), event("d2", 1, user="USR-1")]
    rows[1]["partition_date"] = dt.date(2026, 1, 6)
    incidents, _ = build(rows)
    assert incidents["incident_id"].to_list() == [
        incident_id("d1", to_us(T0)),
        incident_id("d2", to_us(T0 + dt.timedelta(minutes=1))),
    ]


def test_ids_name_the_first_event_whatever_else_the_day_holds():
    """A rerun with more (or fewer) incidents around it gives an incident the same id: no per-day
    sequence to renumber. The first event is the earliest by (ts, event_id)."""
    alone, _ = build([event("b", 5, user="USR-1"), event("a", 5, user="USR-1")])
    crowded, _ = build(
        [event("x", 1, user="USR-2"), event("b", 5, user="USR-1"), event("a", 5, user="USR-1")]
    )
    expected = incident_id("a", to_us(T0 + dt.timedelta(minutes=5)))
    assert alone["incident_id"].to_list() == [expected]
    assert crowded["incident_id"].to_list()[1] == expected


def test_ids_given_by_the_caller_keep_the_events_together():
    """``groups`` (live incidents): the caller's grouping and ids are kept, even where the rules would
    split the events."""
    rows = [event("g1", 0, user="USR-1"), event("g2", 90, user="USR-2"), event("h", 1, user="USR-3")]
    incidents, ie = build(rows, groups=["INC-A", "INC-A", "INC-B"])
    assert incidents["incident_id"].to_list() == ["INC-A", "INC-B"]
    assert members(incidents, ie) == [("g1", "g2"), ("h",)]
    assert incidents["summary"][0].startswith("[") and "INC-A:" in incidents["summary"][0]
    with pytest.raises(ValueError, match="one incident id per flagged row"):
        build(rows, groups=["INC-A"])


def test_incident_ids():
    assert incident_id("e1", 0) == "INC-19700101-" + hashlib.sha256(b"e1").hexdigest()[:10]
    assert incident_id("e1", to_us(T0)) != incident_id("e2", to_us(T0))
    assert incident_id("e1", to_us(T0)).startswith("INC-20260105-")
    with pytest.raises(ValueError, match="empty"):
        incident_id("", 0)
    check_unique(["INC-1", "INC-1"], ["a", "a"])
    with pytest.raises(ValueError, match="collision"):
        check_unique(["INC-1", "INC-1"], ["a", "b"])


def test_grouping_a_busy_day_puts_every_event_in_one_incident():
    """At a busy day's density: 20,000 flagged lines in the first 288 minutes, as many per minute as
    100,000 over the day, so as long chains, and more than 9,999 incidents, ids of five digits (the
    speed at 100,000 is measured by bench/detection_bench.py, not here)."""
    rng = np.random.default_rng(1)
    n = 20_000
    minutes = np.sort(rng.uniform(0, 288, n))
    flagged = pl.DataFrame(
        {
            "partition_date": [DAY] * n,
            "event_id": [f"e{i}" for i in range(n)],
            "ts": [T0.replace(hour=0) + dt.timedelta(minutes=float(m)) for m in minutes],
            "source_service": rng.choice(["auth-service", "api-gateway", "postgres-db"], n),
            # a few hundred busy subjects: incidents of a few to a few hundred lines, and lone lines
            "user_id": [f"USR-{u}" for u in rng.integers(0, 1000, n)],
            "ip_address": [f"{a}.{b}.1.{c}" for a, b, c in rng.integers(1, 250, (n, 3))],
            "correlation_id": [None] * n,
            "template": rng.choice([LOGIN_FAILED, "Replica is #s behind primary"], n),
            "if_score": rng.uniform(0.97, 1, n),
            "lof_score": rng.uniform(0.97, 1, n),
            "ensemble_score": rng.uniform(0.97, 1, n),
            **{f: rng.normal(size=n) for f in FEATURES},
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    config = default_incident_config().model_copy(
        update={"explain": default_incident_config().explain.model_copy(update={"rows_per_incident": 0})}
    )
    incidents, ie = build_incidents(
        flagged, rng.normal(size=(n, len(FEATURES))), FEATURES, no_explain, config
    )
    assert len(ie) == n and incidents["event_count"].sum() == n
    assert ie["event_id"].n_unique() == n
    assert incidents["incident_id"].n_unique() == len(incidents) > 9_999
    assert incidents["event_count"].max() >= 10
