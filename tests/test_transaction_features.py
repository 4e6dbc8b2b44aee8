"""Issue 26's transaction features against a plain count of the same history: a debit against the
account's earlier debits only, the account's share of earlier transactions on the channel, and the hour
of the day; each reads only earlier transactions (time, then id), never a later one."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from bankanom_pipeline.sqlmodels.runner import Project
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse
from tests.conftest import DAY
from tests.test_transactions import CSV_COLUMNS, _ingest, _write, csv_line, row

CHANNELS = ("ATM", "Online", "Branch")


def _rows(seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(180):
        hour, minute = rng.randrange(24), rng.choice([0, 0, 15, 45])  # repeated seconds: ties by id
        rows.append(
            {
                "tid": f"TXF{i:03d}",
                "account": f"AC0020{i % 4}",
                "time": f"{DAY} {hour:02d}:{minute:02d}:00",
                "amount": round(math.exp(rng.uniform(1, 7)), 2),
                "type": rng.choice(["Debit", "Debit", "Debit", "Credit"]),
                "channel": rng.choice(CHANNELS[: 1 + (i % 4) % 3]),  # AC00200 uses ATM only
                "balance": round(50 * (1 + i % 7), 2),  # some debits take most of it
            }
        )
    return rows


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[list[dict], dict[str, dict]]:
    root: Path = tmp_path_factory.mktemp("tx-features")
    rows = _rows(26)
    lines = [
        row(
            r["tid"],
            AccountID=r["account"],
            TransactionDate=r["time"],
            TransactionAmount=f"{r['amount']:.2f}",
            TransactionType=r["type"],
            Channel=r["channel"],
            AccountBalance=f"{r['balance']:.2f}",
        )
        for r in rows
    ]
    _write(root / "landing" / DAY, "f.csv", [csv_line(CSV_COLUMNS), *lines])
    con = EmbeddedWarehouse(root / "w.duckdb").connect()
    try:
        _ingest(con, root / "landing", DAY)
        Project().materialize(con, "features_transactions", DAY)
        frame = con.execute("SELECT * FROM features_transactions").pl()
    finally:
        con.close()
    return rows, {r["transaction_id"]: r for r in frame.iter_rows(named=True)}


def _earlier(rows: list[dict], r: dict) -> list[dict]:
    return [e for e in rows if e["account"] == r["account"] and (e["time"], e["tid"]) < (r["time"], r["tid"])]


def test_a_debit_is_measured_against_the_accounts_earlier_debits_only(built):
    rows, got = built
    checked = 0
    for r in rows:
        debits = [math.log1p(e["amount"]) for e in _earlier(rows, r) if e["type"] == "Debit"]
        expected = 0.0
        if r["type"] == "Debit" and len(debits) >= 3:
            mean = sum(debits) / len(debits)
            sd = math.sqrt(sum((d - mean) ** 2 for d in debits) / (len(debits) - 1))
            expected = (math.log1p(r["amount"]) - mean) / max(sd, 0.5)
            checked += 1
        assert got[r["tid"]]["debit_amount_z"] == pytest.approx(expected, abs=1e-9), r["tid"]
        assert got[r["tid"]]["debit_history_count"] == len(debits), r["tid"]
    assert checked > 50


def test_channel_share_counts_the_accounts_earlier_transactions_on_the_channel(built):
    rows, got = built
    for r in rows:
        earlier = _earlier(rows, r)
        same = sum(e["channel"] == r["channel"] for e in earlier)
        expected = (same + 1 / 30) / (len(earlier) + 0.1)
        assert got[r["tid"]]["channel_share"] == pytest.approx(expected), r["tid"]
    # the one-channel account's first use of nothing else: its share climbs towards 1
    last = max((r for r in rows if r["account"] == "AC00200"), key=lambda r: (r["time"], r["tid"]))
    assert got[last["tid"]]["channel_share"] > 0.9


def test_hour_of_day_is_the_clock_time_in_hours(built):
    rows, got = built
    for r in rows:
        hour, minute = int(r["time"][11:13]), int(r["time"][14:16])
        assert got[r["tid"]]["hour_of_day"] == pytest.approx(hour + minute / 60)


def test_hour_near_count_counts_the_accounts_earlier_transactions_within_two_hours_of_the_clock(built):
    rows, got = built
    for r in rows:
        hour = int(r["time"][11:13])
        near = sum(
            min((int(e["time"][11:13]) - hour) % 24, (hour - int(e["time"][11:13])) % 24) <= 2
            for e in _earlier(rows, r)
        )
        assert got[r["tid"]]["hour_near_count"] == near, r["tid"]
        assert (
            got[r["tid"]]["novelty"]
            == got[r["tid"]]["new_device"] + got[r["tid"]]["new_ip"] + got[r["tid"]]["new_location"]
        )


def test_the_last_hours_drain_is_measured_beyond_the_accounts_usual_share(built):
    rows, got = built
    for r in rows:
        expected = r["amount"] / max(r["balance"] + r["amount"], 1) if r["type"] == "Debit" else 0.0
        assert got[r["tid"]]["drain_share"] == pytest.approx(expected, abs=1e-12), r["tid"]
    for r in rows:
        earlier = [got[e["tid"]]["drain_share"] for e in _earlier(rows, r)]
        usual = sum(earlier) / len(earlier) if earlier else 0.0
        value = got[r["tid"]]
        expected = value["drain_share_1h"] - usual
        assert value["drain_1h_over_usual"] == pytest.approx(expected, abs=1e-12), r["tid"]
