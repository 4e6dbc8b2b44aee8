"""The pattern a transaction incident is named by (transaction_incidents.sql): its transactions' ECOD
evidence votes, several transactions voting for an amount spike are a balance drain, and a lone debit
voting for a drain with no other debit in its hour is an amount spike."""

from __future__ import annotations

import duckdb

from bankanom_pipeline.sqlmodels.runner import Project

DAY = "2026-02-01"


def _scored(
    con: duckdb.DuckDBPyConnection, rows: list[tuple[str, str, float, str, float]], unflagged: int = 0
) -> None:
    """scored_transactions of DAY, debits: (transaction_id, account_id, hour, evidence feature, its
    rarity), flagged but for the last ``unflagged`` rows."""
    con.execute(
        """CREATE TABLE scored_transactions (partition_date DATE, transaction_id VARCHAR, account_id VARCHAR,
           ts TIMESTAMP, amount DOUBLE, transaction_type VARCHAR, location VARCHAR, device_id VARCHAR,
           channel VARCHAR, ensemble_score DOUBLE, is_anomaly BOOLEAN, ensemble_flag BOOLEAN,
           rerank_score DOUBLE, top_features STRUCT(feature VARCHAR, z DOUBLE)[],
           evidence STRUCT(feature VARCHAR, rarity DOUBLE, "value" DOUBLE)[])"""
    )
    for i, (tx, account, hour, feature, rarity) in enumerate(rows):
        flagged = i < len(rows) - unflagged
        con.execute(
            """INSERT INTO scored_transactions VALUES (DATE '2026-02-01', ?, ?,
               TIMESTAMP '2026-01-20 00:00:00' + to_seconds(round(? * 3600)::BIGINT), 900.0, 'Debit',
               'Austin', 'D1', 'Online', 0.999, ?, ?, NULL, [{'feature': ?, 'z': 5.0}],
               [{'feature': ?, 'rarity': ?, 'value': 4.0}, {'feature': 'drain_share_1h', 'rarity': 2.0, 'value': 0.5}])""",
            [tx, account, hour, flagged, flagged, feature, feature, rarity],
        )


def test_one_outsized_debit_is_a_spike_and_several_are_a_drain():
    con = duckdb.connect()
    _scored(
        con,
        [
            ("S1", "A-spike", 1, "debit_amount_z", 12.0),  # alone: an amount spike
            ("D1", "A-drain", 1, "debit_amount_z", 12.0),  # three large debits within hours:
            ("D2", "A-drain", 2, "debit_amount_z", 11.0),  # the account is being emptied
            ("D3", "A-drain", 3, "drain_share_1h", 6.0),
            ("N1", "A-night", 1, "hour_near_count", 9.0),  # two night transactions: odd hours,
            ("N2", "A-night", 2, "hour_near_count", 9.0),  # however many there are
            ("L1", "A-login", 1, "login_attempts", 8.0),
        ],
    )
    Project().materialize(con, "transaction_incidents", DAY)
    named = dict(con.execute("SELECT account_id, likely_pattern FROM transaction_incidents").fetchall())
    assert named == {
        "A-spike": "amount_spike",
        "A-drain": "balance_drain",
        "A-night": "odd_hours",
        "A-login": "login_attempts",
    }


def test_a_lone_debit_that_empties_the_account_is_a_spike_unless_another_debit_came_within_the_hour():
    con = duckdb.connect()
    _scored(
        con,
        [
            ("S1", "A-spike", 1, "drain_share_1h", 9.0),  # alone in its hour: one outsized debit
            ("D2", "A-drain", 5.2, "drain_share_1h", 9.0),  # the second debit of the hour: a drain
            ("D1", "A-drain", 5, "drain_share_1h", 1.0),  # (not flagged itself)
        ],
        unflagged=1,
    )
    Project().materialize(con, "transaction_incidents", DAY)
    named = dict(con.execute("SELECT account_id, likely_pattern FROM transaction_incidents").fetchall())
    assert named == {"A-spike": "amount_spike", "A-drain": "balance_drain"}


def test_a_fast_trip_from_a_new_device_and_ip_is_a_taken_over_account_not_impossible_travel():
    con = duckdb.connect()
    _scored(con, [])
    for tx, account, novelty in [("T1", "A-travel", 1.0), ("T2", "A-takeover", 3.0)]:
        con.execute(
            """INSERT INTO scored_transactions VALUES (DATE '2026-02-01', ?, ?, TIMESTAMP '2026-01-20 03:00:00',
               900.0, 'Debit', 'Austin', 'D1', 'Online', 0.999, true, true, NULL, [{'feature': 'travel_speed_kmh', 'z': 5.0}],
               [{'feature': 'travel_speed_kmh', 'rarity': 12.0, 'value': 2500.0},
                {'feature': 'novelty', 'rarity': 7.0, 'value': ?}])""",
            [tx, account, novelty],
        )
    Project().materialize(con, "transaction_incidents", DAY)
    named = dict(con.execute("SELECT account_id, likely_pattern FROM transaction_incidents").fetchall())
    # only the city is new: the account's own device, 2,500 km/h away; device, IP and city all new at once
    assert named == {"A-travel": "impossible_travel", "A-takeover": "new_device_location"}
