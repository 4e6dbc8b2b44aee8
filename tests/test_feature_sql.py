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


def test_quiet_country_rarity_is_the_countrys_rarity_among_quiet_lines():
    rows = [event(i, i, "User session SES-1 validated", ip=f"10.0.0.{i}", geo="GB-LND") for i in range(6)]
    rows += [event(10, 10, "User session SES-2 validated", geo="US-CA", level="DEBUG")]
    rows += [event(11, 11, "User session SES-3 validated", geo="RU-MOW")]
    # failed logins from the same country: attack traffic neither counts nor is scored here
    rows += [
        event(
            20 + i, 12 + i, "Login failed for user USR-00009 from 198.51.100.7", level="ERROR", geo="RU-MOW"
        )
        for i in range(5)
    ]
    rows += [event(30, 20, "User session SES-4 validated", geo="")]  # no country
    got = {k: r["quiet_country_rarity"] for k, r in features(rows).items()}
    quiet = 8  # DEBUG/INFO lines with a country: 6 GB, 1 US, 1 RU
    commonest = -math.log(6 / quiet)
    assert got["e000"] == pytest.approx(commonest)
    assert got["e010"] == pytest.approx(-math.log(1 / quiet))
    assert got["e011"] == pytest.approx(-math.log(1 / quiet))
    # where it does not apply, the unremarkable end: as common as the commonest country
    assert all(got[f"e{20 + i:03d}"] == pytest.approx(commonest) for i in range(5))
    assert got["e030"] == pytest.approx(commonest)
