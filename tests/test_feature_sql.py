"""Hand-made events through the feature SQL (dbt_like_sql/, run in memory): features whose values can be
worked out on paper."""

from __future__ import annotations

import datetime as dt
import json
import math

import duckdb
import polars as pl
import pytest

from bankanom_pipeline.sqlmodels.inmemory import SOURCE_SCHEMA, FeatureBuilder

START = dt.datetime(2026, 1, 7, 9, 0)


def event(i: int, minute: float, message: str, level="INFO", user="USR-00001", ip="10.0.0.1", geo="GB-LND"):
    return {
        "event_id": f"e{i:03d}",
        "ts": START + dt.timedelta(minutes=minute),
        "source_service": "auth-service",
        "log_level": level,
        "message": message,
        "correlation_id": None,
        "user_id": user,
        "ip_address": ip,
        "geo_location": geo,
        "metrics": json.dumps({}),
    }


def features(rows: list[dict]) -> dict[str, dict]:
    schema = {k: v for k, v in SOURCE_SCHEMA.items() if k != "partition_date"}
    frame = FeatureBuilder().features(pl.DataFrame(rows, schema=schema))
    return {r["event_id"]: r for r in frame.iter_rows(named=True)}


@pytest.fixture(scope="module")
def session_rows():
    return features(
        [
            event(1, 0, "User session SES-111 validated", ip="10.0.0.1"),
            event(2, 1, "User session SES-111 validated", ip="10.0.0.1"),  # same client again
            event(3, 2, "User session SES-111 validated", ip="203.0.113.9", level="ERROR"),  # stolen
            event(4, 3, "User session SES-111 validated", ip="10.0.0.1"),
            event(5, 4, "User session SES-222 validated", ip="203.0.113.9", user="USR-00002"),
            event(6, 5, "User USR-00001 logged in successfully from 10.0.0.1"),  # names no session
            # "SES-" without an id names no session: two such lines are not one session from two places
            event(7, 6, "User session SES- validated", ip="10.0.0.7", user="USR-00003"),
            event(8, 7, "User session SES-? validated", ip="10.0.0.8", user="USR-00004"),
        ]
    )


def test_session_distinct_ips_counts_the_addresses_a_session_id_was_used_from_so_far(session_rows):
    got = {k: r["session_distinct_ips"] for k, r in session_rows.items()}
    assert got == {"e001": 1, "e002": 1, "e003": 2, "e004": 2, "e005": 1, "e006": 0, "e007": 0, "e008": 0}


def test_rare_quiet_country_is_how_far_under_one_percent_of_the_quiet_lines_so_far_the_country_is():
    # 190 GB lines, then 8 US lines of one timestamp, 2 RU (one of them DEBUG), 1 FR, later 1 FR more
    rows = [
        event(i, i / 100, "User session SES-1 validated", ip=f"10.0.{i // 250}.{i % 250}") for i in range(190)
    ]
    rows += [event(200 + i, 2, "User session SES-2 validated", geo="US-CA") for i in range(8)]
    rows += [event(210, 3, "User session SES-3 validated", geo="RU-MOW", level="DEBUG")]
    rows += [event(211, 3, "User session SES-3 validated", geo="RU-MOW")]
    rows += [event(212, 4, "User session SES-4 validated", geo="FR-PAR")]
    # failed logins from a rare country: attack traffic neither counts nor is scored here
    rows += [
        event(
            220 + i, 5 + i, "Login failed for user USR-00009 from 198.51.100.7", level="ERROR", geo="FR-PAR"
        )
        for i in range(5)
    ]
    rows += [event(230, 20, "User session SES-5 validated", geo="")]  # no country: neither counts nor scored
    rows += [event(240, 30, "User session SES-6 validated", geo="FR-PAR")]
    got = {k: r["rare_quiet_country"] for k, r in features(rows).items()}
    assert got["e000"] == 0  # the first line is all there is: 100%
    assert got["e189"] == 0
    # the first US line counts itself among 191, not the seven of its timestamp with larger ids
    assert got["e200"] == pytest.approx(math.log(0.01 / (1 / 191)))
    assert got["e207"] == 0  # 8 of 198: 4%
    assert got["e210"] == pytest.approx(math.log(0.01 / (1 / 199)))
    assert got["e211"] == pytest.approx(0, abs=1e-12)  # 2 of 200: exactly 1%
    assert got["e212"] == pytest.approx(math.log(0.01 / (1 / 201)))
    assert all(got[f"e{220 + i:03d}"] == 0 for i in range(5))
    assert got["e230"] == 0
    assert got["e240"] == pytest.approx(math.log(0.01 / (2 / 202)))  # the failed logins did not count


def test_template_rarity_is_the_templates_share_of_the_events_so_far():
    rows = [event(i, i, "User session SES-1 validated", level="DEBUG") for i in range(3)]
    rows += [event(10, 5, "Login failed for user USR-00001 from 10.0.0.1", level="WARN")]
    rows += [event(11, 6, "User session SES-9 validated", level="DEBUG")]
    got = {k: r["template_rarity"] for k, r in features(rows).items()}
    assert got["e000"] == got["e001"] == got["e002"] == 0  # the only template so far
    assert got["e010"] == pytest.approx(-math.log(1 / 4))
    assert got["e011"] == pytest.approx(-math.log(4 / 5))


def test_service_activity_is_the_minute_up_to_the_event_against_the_average_minute_of_the_day():
    metrics = [{"response_time_ms": 100.0}, {"response_time_ms": 300.0}, {"response_time_ms": 50.0}]
    rows = [event(1, 0, "a"), event(2, 0.5, "b", level="ERROR"), event(3, 5, "c", level="WARN")]
    for row, values in zip(rows, metrics, strict=True):
        row["metrics"] = json.dumps(values)
    got = features(rows)
    assert [got[e]["service_events_vs_day"] for e in ("e001", "e002", "e003")] == pytest.approx(
        [1 / (1 / 1), 2 / (2 / 1), 1 / (3 / 5)]  # at least one minute; then 5 minutes since the first
    )
    assert [got[e]["service_error_share"] for e in ("e001", "e002", "e003")] == [0, 0.5, 0]
    assert got["e003"]["service_warn_share"] == 1
    assert got["e002"]["service_p95_response_time_ms"] == pytest.approx(100 + 0.95 * 200)
    assert got["e003"]["service_p95_response_time_ms"] == 50


# Point in time: every feature of an event depends only on it and the events before it in the order
# (ts, event_id) (docs/features.md).

WIDE = [
    # (minute, user, ip, geo, message, level, amount): several users, addresses, countries, ties
    (0, "USR-00001", "10.0.0.1", "GB-LND", "User session SES-A validated", "INFO", None),
    (0, "USR-00002", "10.0.0.2", "US-CA", "Login failed for user USR-00002 from 10.0.0.2", "WARN", None),
    (0, "USR-00001", "10.0.0.3", "FR-PAR", "Payment processed", "INFO", 120.0),
    (1, "USR-00001", "10.0.0.1", "GB-LND", "Payment processed", "INFO", 80.0),
    (1, None, "10.0.0.9", None, "Health check ok", "DEBUG", None),
    (2, "USR-00001", "10.0.0.1", "GB-LND", "Payment processed", "INFO", 95.0),
    (2, "USR-00002", "10.0.0.2", "US-CA", "Login failed for user USR-00002 from 10.0.0.2", "ERROR", None),
    (2, "USR-00001", "10.0.0.4", "RU-MOW", "User session SES-A validated", "INFO", None),
    (3.5, "USR-00001", "10.0.0.1", "GB-LND", "Payment processed", "INFO", 5000.0),
    (3.5, "USR-00003", "10.0.0.5", "GB-LND", "VPN connection established", "INFO", None),
    (9, "USR-00001", "10.0.0.1", "GB-LND", "Payment processed", "INFO", 90.0),
    (11, "USR-00002", "10.0.0.6", "US-CA", "User session SES-B validated", "INFO", 10.0),
    (40, "USR-00001", "10.0.0.1", "GB-LND", "Payment processed", "INFO", 100.0),
    (70, "USR-00001", "10.0.0.7", "DE-BER", "User session SES-A validated", "ERROR", None),
]


def wide_rows() -> list[dict]:
    rows = []
    for i, (minute, user, ip, geo, message, level, amount) in enumerate(WIDE):
        row = event(i, minute, message, level=level, user=user, ip=ip, geo=geo)
        # ids against the order of arrival within a timestamp: the order must come from the ids
        row["event_id"] = f"e{(i * 7) % 100:03d}"
        row["metrics"] = json.dumps(
            {"response_time_ms": 10.0 * (i + 1), "error_rate": i / 100}
            | ({"amount": amount} if amount is not None else {})
        )
        rows.append(row)
    return rows


def numeric(row: dict) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def test_a_later_event_never_changes_an_earlier_events_features():
    rows = sorted(wide_rows(), key=lambda r: (r["ts"], r["event_id"]))
    everything = features(rows)
    for end in range(1, len(rows)):
        prefix = features(rows[:end])
        for row in rows[:end]:
            expected, got = numeric(everything[row["event_id"]]), numeric(prefix[row["event_id"]])
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-12), (end, row["event_id"])


def test_an_event_does_not_count_a_later_event_of_its_own_timestamp():
    same = START + dt.timedelta(minutes=1)
    rows = []
    for event_id in ("e3", "e1", "e2"):  # arrival order differs from the id order
        row = event(0, 0, "Login failed for user USR-00001 from 10.0.0.1")
        rows.append(row | {"event_id": event_id, "ts": same})
    got = features(rows)
    assert [got[e]["user_events_10m"] for e in ("e1", "e2", "e3")] == [1, 2, 3]
    assert [got[e]["ip_failed_logins_10m"] for e in ("e1", "e2", "e3")] == [1, 2, 3]
    assert [got[e]["service_events_vs_day"] for e in ("e1", "e2", "e3")] == [1, 1, 1]  # k / (k / 1 min)


def test_a_window_holds_the_event_exactly_its_length_before_and_not_one_microsecond_more():
    ten = dt.timedelta(minutes=10)
    us = dt.timedelta(microseconds=1)
    rows = []

    def add(event_id, at, user):
        rows.append(event(0, 0, "User session SES-1 validated", user=user) | {"event_id": event_id, "ts": at})

    # the earlier events rank second in their microsecond (a0 first): the window starts at the first
    # event of the microsecond W before, whatever the ranks
    add("a0", START, "USR-00009")
    add("a1", START, "USR-00001")
    add("a2", START + ten, "USR-00001")  # exactly 10 minutes after a1
    add("b0", START + us, "USR-00009")
    add("b1", START + us, "USR-00002")
    add("b2", START + us + ten + us, "USR-00002")  # 10 minutes and 1 microsecond after b1
    got = features(rows)
    assert got["a2"]["user_events_10m"] == 2
    assert got["b2"]["user_events_10m"] == 1
    assert got["a2"]["service_events_vs_day"] == pytest.approx(1 / (5 / 10))  # a2 sees a0..b1 and itself
    # the service's minute: 10 minutes later only the event itself
    assert got["b2"]["service_error_share"] == 0


def test_nothing_older_than_24_hours_counts():
    day = dt.timedelta(hours=24)
    us = dt.timedelta(microseconds=1)
    rows = [
        event(1, 0, "User session SES-1 validated", user="USR-00001", geo="US-CA", ip="10.0.0.1"),
        event(2, 0, "User session SES-2 validated", user="USR-00002", geo="US-CA", ip="10.0.0.1"),
    ]
    rows.append(
        event(3, 0, "User session SES-1 validated", user="USR-00001", ip="10.0.0.2") | {"ts": START + day}
    )
    rows.append(
        event(4, 0, "User session SES-2 validated", user="USR-00002", ip="10.0.0.2")
        | {"ts": START + day + us}
    )
    got = features(rows)
    assert got["e003"]["user_country_share"] == 0.5  # e001, exactly 24 h before, still counts
    assert got["e004"]["user_country_share"] == 1  # e002 is 24 h and 1 microsecond before
    assert got["e003"]["user_ip_share"] == 0.5
    assert got["e004"]["user_ip_share"] == 1
    assert got["e003"]["session_distinct_ips"] == 2
    assert got["e004"]["session_distinct_ips"] == 1
    assert got["e003"]["travel_km"] > 5000  # from US-CA to GB-LND
    assert got["e004"]["travel_km"] == 0  # no located event of the user in the 24 h before


def test_more_events_in_one_microsecond_than_the_order_holds_fail_with_a_clear_error():
    many = [event(0, 0, "User session SES-1 validated") | {"event_id": f"x{i:05d}"} for i in range(4095)]
    assert len(features(many)) == 4095  # ranks 0 to 4094 fit
    with pytest.raises(duckdb.Error, match="more than 4095 events share the timestamp"):
        features([*many, event(0, 0, "User session SES-1 validated") | {"event_id": "x99999"}])


def test_an_event_before_its_partition_day_fails_with_a_clear_error():
    # the lookback models read the previous day only from their longest window before the day's start
    schema = {k: v for k, v in SOURCE_SCHEMA.items() if k != "partition_date"}
    rows = pl.DataFrame([event(1, 0, "Health check OK"), event(2, -600, "Health check OK")], schema=schema)
    day = START.date()
    on_its_day = rows.with_columns(pl.col("ts").dt.date().alias("partition_date"))  # e002: history
    assert FeatureBuilder().build(on_its_day, day)["event_id"].to_list() == ["e001"]
    with pytest.raises(
        duckdb.Error, match=r"event e002 at 2026-01-06 23:00:00 is before its partition day 2026-01-07"
    ):
        FeatureBuilder().build(rows.with_columns(pl.lit(day).alias("partition_date")), day)
