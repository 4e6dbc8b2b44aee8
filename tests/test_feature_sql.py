"""Hand-made events through the feature SQL (dbt_like_sql/, run in memory): features whose values can be
worked out on paper."""

from __future__ import annotations

import datetime as dt
import json
import math

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


def test_rare_quiet_country_is_how_far_under_one_percent_of_quiet_lines_the_country_is():
    # 201 quiet lines with a country: 190 GB, 8 US, 2 RU (one of them DEBUG), 1 FR (0.5%)
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
    rows += [event(230, 20, "User session SES-5 validated", geo="")]  # no country
    got = {k: r["rare_quiet_country"] for k, r in features(rows).items()}
    quiet = 201
    assert got["e000"] == 0  # 95%: the bank's own country
    assert got["e200"] == 0  # 4%
    assert got["e210"] == got["e211"] == pytest.approx(max(math.log(0.01 / (2 / quiet)), 0))
    assert got["e212"] == pytest.approx(math.log(0.01 / (1 / quiet)))  # 0.5%: ln 2
    assert got["e212"] > 0.69
    # where it does not apply, the unremarkable end: as common as the commonest country
    assert all(got[f"e{220 + i:03d}"] == 0 for i in range(5))
    assert got["e230"] == 0


def test_rare_quiet_country_takes_the_commonest_countrys_value_when_none_reaches_one_percent():
    rows = [event(i, i / 10, "User session SES-1 validated", geo=f"C{i}-X") for i in range(300)]
    rows += [event(400, 1, "User session SES-1 validated", geo="C0-X")]  # C0: 2 of 301
    rows += [event(401, 2, "Login failed for user USR-00009 from 198.51.100.7", level="ERROR", geo="C1-X")]
    got = {k: r["rare_quiet_country"] for k, r in features(rows).items()}
    commonest = math.log(0.01 / (2 / 301))
    assert commonest > 0
    assert got["e000"] == pytest.approx(commonest)
    assert got["e001"] == pytest.approx(math.log(0.01 / (1 / 301)))
    assert got["e401"] == pytest.approx(commonest)
