"""The bank-transaction pipeline: CSV ingest with rejects, validation with quarantine, history features,
and the Dagster jobs end to end (train, score, incidents, evaluation, snapshot) on real DuckDB files."""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bankanom_pipeline.definitions import defs
from bankanom_pipeline.defs.detection.jobs import train_run_config
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.defs.validation.gx import GX, run_checks
from bankanom_pipeline.detection.sources import TRANSACTIONS
from bankanom_pipeline.sqlmodels.runner import Project
from bankanom_pipeline.transactions.generator import CSV_COLUMNS, PATTERNS, write
from bankanom_pipeline.transactions.raw import load_partition
from bankanom_pipeline.transactions.validation import (
    _PRESENCE_ONLY,
    _REQUIRED,
    RULES_PATH,
    TEXT_COLUMNS,
    TYPED_SQL,
    _frame,
    load_labels,
    validate_partition,
)
from bankanom_pipeline.validation.rules import build_checks, load_rules
from bankanom_pipeline.warehouse import lake
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse
from tests.conftest import DAY

DAY2 = "2026-01-06"
BASE = {
    "TransactionID": "",
    "AccountID": "AC00001",
    "TransactionAmount": "120.50",
    "TransactionDate": f"{DAY} 10:00:00",
    "TransactionType": "Debit",
    "Location": "Houston",
    "DeviceID": "D000001",
    "IP Address": "23.1.2.3",
    "MerchantID": "M001",
    "Channel": "Online",
    "CustomerAge": "40",
    "CustomerOccupation": "Engineer",
    "TransactionDuration": "60",
    "LoginAttempts": "1",
    "AccountBalance": "5000.00",
    "PreviousTransactionDate": "2026-01-04 09:00:00",
}


def csv_line(values: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue()


def row(tid: str, header: list[str] = CSV_COLUMNS, **changes: str) -> str:
    """One CSV line of ``header``; ``changes`` by column name (``IP`` for "IP Address")."""
    if "IP" in changes:
        changes["IP Address"] = changes.pop("IP")
    values = {**BASE, "TransactionID": tid, **changes}
    return csv_line([values.get("IP Address" if c == "IPAddress" else c, "") for c in header])


# TransactionID -> (changes, the rules the row must break; empty: it must be validated)
CASES: dict[str, tuple[dict[str, str], list[str]]] = {
    "TX-GOOD-1": ({}, []),
    "TX-QUOTED": ({"Location": "Houston, TX"}, []),
    "TX-ISO-DATE": ({"TransactionDate": f"{DAY}T10:00:00"}, []),
    "TX-IPV6": ({"IP": "2001:db8::1"}, []),
    "TX-AGE-18": ({"CustomerAge": "18"}, []),
    "TX-AGE-120": ({"CustomerAge": "120"}, []),
    "TX-NO-PREVIOUS": ({"PreviousTransactionDate": ""}, []),
    "TX-DATE-FEB30": ({"TransactionDate": "2026-02-30 10:00:00"}, ["transaction_date_parseable"]),
    "TX-DATE-TEXT": ({"TransactionDate": "yesterday"}, ["transaction_date_parseable"]),
    "TX-PREV-DATE": ({"PreviousTransactionDate": "last week"}, ["previous_date_parseable"]),
    "TX-NEG-AMOUNT": ({"TransactionAmount": "-5.00"}, ["amount_non_negative"]),
    "TX-TEXT-AMOUNT": ({"TransactionAmount": "lots"}, ["numbers_parseable:amount"]),
    "TX-NEG-BALANCE": ({"AccountBalance": "-0.01"}, ["balance_non_negative"]),
    "TX-TYPE": ({"TransactionType": "Refund"}, ["known_transaction_type"]),
    "TX-CHANNEL": ({"Channel": "Fax"}, ["known_channel"]),
    "TX-OCCUPATION": ({"CustomerOccupation": "Astronaut"}, ["known_occupation"]),
    "TX-AGE-17": ({"CustomerAge": "17"}, ["customer_age_in_range"]),
    "TX-AGE-121": ({"CustomerAge": "121"}, ["customer_age_in_range"]),
    "TX-AGE-FRACTION": ({"CustomerAge": "40.5"}, ["numbers_parseable:customer_age_n"]),
    "TX-LOGINS": ({"LoginAttempts": "101"}, ["login_attempts_in_range"]),
    "TX-DURATION": ({"TransactionDuration": "86401"}, ["duration_in_range"]),
    "TX-IP-OCTET": ({"IP": "999.1.2.3"}, ["ip_address_well_formed"]),
    "TX-IP-TEXT": ({"IP": "localhost"}, ["ip_address_well_formed"]),
    "TX-NO-DEVICE": ({"DeviceID": ""}, ["required_fields_present:device_id"]),
    "TX-TWO-RULES": (
        {"TransactionType": "Refund", "Channel": "Fax"},
        ["known_channel", "known_transaction_type"],
    ),
}
MISSING_HEADER = [c for c in CSV_COLUMNS if c not in ("DeviceID", "Channel")]
ALIAS_HEADER = [("IPAddress" if c == "IP Address" else c) for c in CSV_COLUMNS] + ["Note"]
SHORT_LINE = "TX-SHORT,AC00001,5.00"


def _write(folder: Path, name: str, lines: list[str] | bytes, newline: str = "\n") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = lines if isinstance(lines, bytes) else "".join(line + newline for line in lines).encode()
    (folder / name).write_bytes(data)


def _ingest(con, landing: Path, day: str):
    raw = load_partition(con, landing, day)
    validated, _ = validate_partition(con, day, GX)
    return raw, validated


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """Two delivery days of hand-broken files in a fresh warehouse, loaded and validated in order. Built once
    for the module: the tests read it, and the one that writes (test_rerunning_a_partition_is_idempotent
    re-ingests both days) asserts that every table is left as it was."""
    tmp_path = tmp_path_factory.mktemp("dirty")
    landing = tmp_path / "landing" / "transactions"
    first = landing / DAY
    a_lines = [csv_line(CSV_COLUMNS), *(row(tid, **changes) for tid, (changes, _) in CASES.items())]
    a_lines += [
        row("TX-GOOD-1", TransactionAmount="999.00"),  # same id later in the partition
        SHORT_LINE,
        "",
        "   ",
        row("", AccountID="AC00002"),  # no id: invalid, not a duplicate of the next one
        row("", AccountID="AC00003"),
    ]
    data = "".join(line + "\n" for line in a_lines).encode()
    data += row("TX-UTF8").replace("Houston", "Houst\udcffn").encode("utf-8", "surrogateescape") + b"\n"
    _write(first, "a.csv", data)
    # a Windows export with a BOM, the IPAddress spelling and a column the layout does not know
    _write(
        first,
        "b.csv",
        ["\ufeff" + csv_line(ALIAS_HEADER)]
        + [row(tid, ALIAS_HEADER, Note=note) for tid, note in (("TX-B1", "vip"), ("TX-B2", ""))],
        newline="\r\n",
    )
    _write(first, "c.csv", [csv_line(MISSING_HEADER)] + [row(f"TX-C{i}", MISSING_HEADER) for i in range(3)])
    _write(first, "empty.csv", b"")
    _write(first, "header_only.csv", [csv_line(CSV_COLUMNS)])
    _write(first, ".partial.csv", [csv_line(CSV_COLUMNS), row("TX-PARTIAL")])  # still being written
    _write(first, "a.labels.csv", ["TransactionID,is_fraud,pattern,instance_id", "TX-GOOD-1,false,,"])
    # the next delivery: a repeat of a validated transaction, a corrected resend of a quarantined one
    second = landing / DAY2
    _write(
        second,
        "a.csv",
        [
            csv_line(CSV_COLUMNS),
            row("TX-GOOD-1", TransactionDate=f"{DAY2} 09:00:00"),
            row("TX-NEG-AMOUNT", TransactionDate=f"{DAY2} 09:30:00"),
            row("TX-DAY2", TransactionDate=f"{DAY2} 10:00:00"),
            row("", TransactionDate=f"{DAY2} 11:00:00"),
        ],
    )
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    counts = {day: _ingest(con, landing, day) for day in (DAY, DAY2)}
    yield con, landing, counts
    con.close()


def _raw_counts(con, day: str) -> dict:
    return {
        table: con.execute(f"SELECT count(*) FROM {table} WHERE partition_date = ?", [day]).fetchone()[0]
        for table in (
            "raw_transactions",
            "raw_transactions_rejected",
            "validated_transactions",
            "quarantine_transactions",
        )
    }


def test_dirty_lines_are_rejected_with_their_reason_and_counts_reconcile(dirty):
    con, _, counts = dirty
    raw, _ = counts[DAY]
    loaded_a = len(CASES) + 1 + 2  # cases, the repeated id, the two rows without an id
    assert raw.files == 5  # a, b, c, empty, header_only: not the hidden file nor the labels
    assert raw.lines_read == (loaded_a + 4) + 2 + 3
    assert raw.loaded == loaded_a + 2
    assert raw.rejected == 4 + 3
    assert raw.lines_read == raw.loaded + raw.rejected
    assert raw.rejected_by_reason == {
        "missing column(s): DeviceID, Channel": 3,
        "empty line": 2,
        "expected 16 fields, found 3": 1,
        "invalid UTF-8": 1,
    }
    rejected = con.execute(
        "SELECT source_file, line_no, reason, raw_text FROM raw_transactions_rejected "
        "WHERE partition_date = ? ORDER BY source_file, line_no",
        [DAY],
    ).fetchall()
    assert [(f, r) for f, _, r, _ in rejected if f.endswith("c.csv")] == [
        (f"{DAY}/c.csv", "missing column(s): DeviceID, Channel")
    ] * 3
    assert [n for f, n, _, _ in rejected if f.endswith("c.csv")] == [2, 3, 4]  # line 1 is the header
    assert (f"{DAY}/a.csv", len(CASES) + 3, "expected 16 fields, found 3", SHORT_LINE) in rejected
    assert not con.execute(
        "SELECT count(*) FROM raw_transactions WHERE transaction_id IN ('TX-PARTIAL', 'TX-UTF8')"
    ).fetchone()[0]


def test_quoted_commas_alias_header_and_extra_columns_survive(dirty):
    con, _, _ = dirty
    validated = {
        r[0]: r[1:]
        for r in con.execute(
            "SELECT transaction_id, location, ip_address, extra, source_file FROM validated_transactions "
            "WHERE partition_date = ?",
            [DAY],
        ).fetchall()
    }
    assert validated["TX-QUOTED"][0] == "Houston, TX"
    assert validated["TX-IPV6"][1] == "2001:db8::1"
    # b.csv: IPAddress read as "IP Address", the unknown column kept in extra, CRLF and BOM stripped
    assert validated["TX-B1"][1] == "23.1.2.3"
    assert json.loads(validated["TX-B1"][2]) == {"Note": "vip"}
    assert json.loads(validated["TX-B2"][2]) == {"Note": ""}
    assert validated["TX-B1"][3] == f"{DAY}/b.csv"
    assert validated["TX-GOOD-1"][2] is None
    assert con.execute(
        "SELECT count(*) FROM validated_transactions WHERE location LIKE '%\r%' OR extra::VARCHAR LIKE '%\\r%'"
    ).fetchone() == (0,)


def test_invalid_rows_are_quarantined_with_every_rule_they_broke(dirty):
    con, _, counts = dirty
    _, validated = counts[DAY]
    good = [tid for tid, (_, rules) in CASES.items() if not rules]
    bad = {tid: rules for tid, (_, rules) in CASES.items() if rules}
    assert validated.raw == len(CASES) + 3 + 2
    assert validated.validated == len(good) + 2
    assert validated.quarantined == len(bad) + 2  # + the two rows without an id
    assert validated.duplicates == 1
    assert validated.raw == validated.validated + validated.quarantined + validated.duplicates
    ids = {
        r[0]
        for r in con.execute(
            "SELECT transaction_id FROM validated_transactions WHERE partition_date = ?", [DAY]
        ).fetchall()
    }
    assert ids == {*good, "TX-B1", "TX-B2"}
    quarantined = con.execute(
        "SELECT transaction_id, list_sort(rules), kind, record FROM quarantine_transactions "
        "WHERE partition_date = ? ORDER BY source_file, line_no",
        [DAY],
    ).fetchall()
    invalid = {tid: rules for tid, rules, kind, _ in quarantined if kind == "invalid" and tid}
    assert invalid == {tid: sorted(rules) for tid, rules in bad.items()}
    no_id = [(rules, kind) for tid, rules, kind, _ in quarantined if tid is None]
    assert no_id == [(["required_fields_present:transaction_id"], "invalid")] * 2
    duplicates = [
        (tid, rules, json.loads(record)) for tid, rules, kind, record in quarantined if kind == "duplicate"
    ]
    assert [(tid, rules, r["transaction_amount"]) for tid, rules, r in duplicates] == [
        ("TX-GOOD-1", ["duplicate_transaction_id"], "999.00")
    ]
    # the validated copy is the first one of the file
    assert con.execute(
        "SELECT amount FROM validated_transactions WHERE transaction_id = 'TX-GOOD-1'"
    ).fetchall() == [(120.5,)]
    assert validated.quarantined_by_rule["customer_age_in_range"] == 2
    assert validated.quarantined_by_rule["ip_address_well_formed"] == 2
    assert validated.quarantined_by_rule["known_transaction_type"] == 2


def test_text_checked_only_for_presence_reaches_gx_as_that_fact_with_the_same_outcomes(dirty):
    # the rules check these columns for nulls only, so GX may get each as present-or-not (gx._gx_view)
    # instead of hashing every value; a rule of another kind on one of them would need its values
    checks = build_checks(load_rules(RULES_PATH), {}, "transactions")
    only_nulls = {
        c.kwargs["column"]
        for c in checks
        if all(
            d.expectation == "expect_column_values_to_not_be_null"
            for d in checks
            if d.kwargs.get("column") == c.kwargs["column"]
        )
    }
    text = set(TEXT_COLUMNS)
    assert only_nulls & text == _PRESENCE_ONLY
    con, _, _ = dirty
    con.execute(TYPED_SQL, {"day": DAY})
    frame = _frame(con)
    assert all(isinstance(frame[c].dtype, pd.ArrowDtype) for c in _PRESENCE_ONLY)
    # the same rows as pandas' own string columns (what every column but the ids was before)
    plain = frame.assign(**{c: frame[c].astype("str") for c in _PRESENCE_ONLY})
    assert not any(isinstance(plain[c].dtype, pd.ArrowDtype) for c in _PRESENCE_ONLY)

    def seen(outcomes):
        # a null example reads <NA> or nan depending on the column's type: the same null
        return [
            (
                o.check.label,
                o.unexpected_count,
                o.unexpected_percent,
                [None if pd.isna(v) else v for v in o.examples],
                o.failing_rows.tolist(),
            )
            for o in outcomes
        ]

    outcomes = seen(run_checks({"transactions": frame}, checks))
    assert outcomes == seen(run_checks({"transactions": plain}, checks))
    assert any(count for _, count, *_ in outcomes)  # the broken rows of the fixture are found
    con.execute("DROP TABLE _typed_tx")


def test_rows_written_before_gx_runs_leave_out_only_rows_the_rules_break():
    # validated rows are written while GX runs, then those it finds broken deleted: a row missing a
    # NOT NULL column is left out up front, which is right only if a rule requires that column too
    checks = build_checks(load_rules(RULES_PATH), {}, "transactions")
    required = {c.kwargs["column"] for c in checks if c.expectation == "expect_column_values_to_not_be_null"}
    assert set(_REQUIRED) <= required


def test_duplicates_across_delivery_days(dirty):
    con, _, counts = dirty
    raw, validated = counts[DAY2]
    assert (raw.lines_read, raw.loaded, raw.rejected) == (4, 4, 0)
    assert validated.as_dict() == {
        "raw": 4,
        "validated": 2,
        "quarantined": 1,
        "duplicates": 1,
        "quarantined_by_rule": {"required_fields_present:transaction_id": 1},
    }
    assert con.execute(
        "SELECT transaction_id, rules, kind FROM quarantine_transactions WHERE partition_date = ? "
        "AND transaction_id IS NOT NULL",
        [DAY2],
    ).fetchall() == [("TX-GOOD-1", ["duplicate_transaction_id"], "duplicate")]
    # a transaction quarantined on day 1 and sent again corrected is validated on day 2
    assert con.execute(
        "SELECT transaction_id FROM validated_transactions WHERE partition_date = ? ORDER BY line_no", [DAY2]
    ).fetchall() == [("TX-NEG-AMOUNT",), ("TX-DAY2",)]
    assert con.execute(
        "SELECT count(*) - count(DISTINCT transaction_id) FROM validated_transactions"
    ).fetchone() == (0,)


def test_rerunning_a_partition_is_idempotent(dirty):
    con, landing, counts = dirty
    before = {day: _raw_counts(con, day) for day in (DAY, DAY2)}
    for day in (DAY, DAY2):
        raw, validated = _ingest(con, landing, day)
        assert raw.as_dict() == counts[day][0].as_dict()
        assert validated.as_dict() == counts[day][1].as_dict()
    # day 1 again after day 2 exists: day 2 is not "earlier", nothing of day 1 becomes a duplicate
    raw, validated = _ingest(con, landing, DAY)
    assert validated.as_dict() == counts[DAY][1].as_dict()
    assert {day: _raw_counts(con, day) for day in (DAY, DAY2)} == before
    assert con.execute(
        "SELECT count(*) FROM (SELECT source_file, line_no FROM raw_transactions GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone() == (0,)


# ---------------------------------------------------------------- features on a hand-made history

HISTORY = [
    # id, account, time, amount, city, device
    ("TXA1", "AC00001", "08:00:00", "50.00", "New York", "D000001"),
    ("TXA2", "AC00001", "10:00:00", "55.00", "New York", "D000001"),
    ("TXA3", "AC00001", "12:00:00", "45.00", "New York", "D000001"),
    ("TXA4", "AC00001", "14:00:00", "1000.00", "New York", "D000002"),  # 20x, new device
    ("TXA5", "AC00001", "14:30:00", "60.00", "Los Angeles", "D000001"),  # 30 min after New York
    ("TXA6", "AC00001", "14:50:00", "40.00", "Los Angeles", "D000001"),
    ("TXA7", "AC00001", "15:40:00", "30.00", "Los Angeles", "D000001"),
    ("TXB1", "AC00002", "14:10:00", "20.00", "New York", "D000009"),  # another account, same hour
    ("TXB2", "AC00002", "14:20:00", "25.00", "New York", "D000009"),
]
FEATURES_SQL = "SELECT * EXCLUDE (partition_date) FROM features_transactions ORDER BY transaction_id"


def _history_line(tid, account, time, amount, city, device, day=DAY) -> str:
    return row(
        tid,
        AccountID=account,
        TransactionDate=f"{day} {time}",
        TransactionAmount=amount,
        Location=city,
        DeviceID=device,
    )


def _features(root: Path, rows: list[tuple]) -> pl.DataFrame:
    landing = root / "landing"
    _write(landing / DAY, "h.csv", [csv_line(CSV_COLUMNS), *(_history_line(*r) for r in rows)])
    con = EmbeddedWarehouse(root / "w.duckdb").connect()
    try:
        raw, validated = _ingest(con, landing, DAY)
        assert validated.validated == raw.loaded == len(rows)
        assert Project().materialize(con, "features_transactions", DAY) == len(rows)
        return con.execute(FEATURES_SQL).pl()
    finally:
        con.close()


@pytest.fixture(scope="module")
def history_features(tmp_path_factory):
    frame = _features(tmp_path_factory.mktemp("history"), HISTORY)
    return {r["transaction_id"]: r for r in frame.iter_rows(named=True)}, frame


def test_novel_device_is_flagged_only_once_there_is_history(history_features):
    f, _ = history_features
    assert [f[t]["new_device"] for t in ("TXA1", "TXA2", "TXA3", "TXA4", "TXA5", "TXA7")] == [
        0,
        0,
        0,
        1,
        0,
        0,
    ]
    assert [f[t]["history_count"] for t in ("TXA1", "TXA4", "TXA7", "TXB1", "TXB2")] == [0, 3, 6, 0, 1]
    assert f["TXA5"]["new_location"] == 1 and f["TXA6"]["new_location"] == 0


def test_tx_1h_counts_the_accounts_earlier_transactions_within_the_hour(history_features):
    f, _ = history_features
    # TXA6 at 14:50 follows 14:00 and 14:30; TXA7 at 15:40 only 14:50; other accounts never count
    assert {t: f[t]["tx_1h"] for t in ("TXA1", "TXA4", "TXA5", "TXA6", "TXA7", "TXB1", "TXB2")} == {
        "TXA1": 0,
        "TXA4": 0,
        "TXA5": 1,
        "TXA6": 2,
        "TXA7": 1,
        "TXB1": 0,
        "TXB2": 1,
    }
    assert f["TXA6"]["tx_24h"] == 5


def test_travel_speed_and_amount_z(history_features):
    f, _ = history_features
    print(
        {
            t: (round(f[t]["travel_km"]), round(f[t]["travel_speed_kmh"]), round(f[t]["amount_z"], 2))
            for t in f
        }
    )
    # New York -> Los Angeles is about 3,940 km: 30 minutes apart is about 7,900 km/h
    assert 3_900 < f["TXA5"]["travel_km"] < 4_000
    assert 7_500 < f["TXA5"]["travel_speed_kmh"] < 8_100
    assert f["TXA4"]["travel_km"] == f["TXA6"]["travel_km"] == 0
    assert f["TXA6"]["travel_speed_kmh"] == 0
    # 0 until 3 earlier transactions; a 20x amount after three of ~50 stands far out, later ones do not
    assert f["TXA1"]["amount_z"] == f["TXA3"]["amount_z"] == 0
    assert f["TXA4"]["amount_z"] > 5
    assert f["TXA4"]["amount_over_max"] > 2.5
    assert abs(f["TXA5"]["amount_z"]) < 2


def test_features_never_read_later_transactions(history_features, tmp_path):
    _, before = history_features
    later = [
        ("TXA8", "AC00001", "16:00:00", "9000.00", "Miami", "D000003"),
        ("TXA9", "AC00001", "23:59:59", "1.00", "Houston", "D000004"),
        ("TXB3", "AC00002", "14:30:00", "5000.00", "Chicago", "D000008"),
    ]
    after = _features(tmp_path, HISTORY + later)
    kept = after.filter(pl.col("transaction_id").is_in(before["transaction_id"].to_list()))
    assert_frame_equal(kept, before, check_exact=False, rel_tol=1e-12, abs_tol=1e-12)


def test_a_later_transaction_in_the_same_second_does_not_change_features(history_features, tmp_path):
    _, before = history_features
    tie = ("TXA9", "AC00001", "15:40:00", "30.00", "Los Angeles", "D000001")  # same second as TXA7, after it
    after = _features(tmp_path, [*HISTORY, tie])
    kept = after.filter(pl.col("transaction_id").is_in(before["transaction_id"].to_list()))
    assert_frame_equal(kept, before, check_exact=False, rel_tol=1e-12, abs_tol=1e-12)


def test_hour_share_counts_earlier_transactions_within_two_hours_of_the_time_of_day(tmp_path):
    """The packed hour counts against a plain count: hours wrapping past midnight, many transactions in
    one hour, ties within a second (ordered by id), several accounts."""
    rng = random.Random(11)
    days = [DAY, "2026-01-06", "2026-01-07"]
    rows = []
    for i in range(240):
        hour = rng.choice([22, 23, 23, 23, 0, 1, 2, 12, rng.randrange(24)])
        minute = rng.choice([0, 0, 30])  # repeated seconds: ties broken by the id
        time = f"{hour:02d}:{minute:02d}:00"
        rows.append((f"TXH{i:03d}", f"AC0010{i % 3}", time, "10.00", "Miami", "D000001", rng.choice(days)))
    got = dict(_features(tmp_path, rows).select("transaction_id", "hour_share").iter_rows())
    stamp = {tid: (f"{day} {time}", tid) for tid, _, time, *_, day in rows}
    for tid, account, time, *_ in rows:
        earlier = [r for r in rows if r[1] == account and stamp[r[0]] < stamp[tid]]
        near = [
            r
            for r in earlier
            if min((int(r[2][:2]) - int(time[:2])) % 24, (int(time[:2]) - int(r[2][:2])) % 24) <= 2
        ]
        assert got[tid] == (len(near) / len(earlier) if len(earlier) >= 5 else 1), tid


def test_rows_are_stored_in_file_order_beyond_one_row_group(tmp_path):
    """raw and validated keep the lines' order without sorting them: more lines than DuckDB's row group
    (122,880), so that its parallel insert sees several batches."""
    landing = tmp_path / "landing"
    assert CSV_COLUMNS[:2] == ["TransactionID", "AccountID"]
    rest = row("TX", AccountID="AC").split(",", 2)[2]  # the other columns, the same in every line
    lines = [f"TX{i:07d},AC{i % 997:05d},{rest}" for i in range(130_000)]
    _write(landing / DAY, "a.csv", [csv_line(CSV_COLUMNS), *lines[:70_000]])
    _write(landing / DAY, "b.csv", [csv_line(CSV_COLUMNS), *lines[70_000:]])
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    try:
        _ingest(con, landing, DAY)
        for table in ("raw_transactions", "validated_transactions"):
            stored = con.execute(f"SELECT source_file, line_no FROM {table}").fetchall()
            assert len(stored) == 130_000
            assert stored == sorted(stored), table
    finally:
        con.close()


# ---------------------------------------------------------------- Dagster, end to end on generated data

ROWS = 25_000
E2E_DAY = "2026-02-01"
LOG_REGISTRY_POINTER = b'{"isolation_forest": "logs-sentinel", "local_outlier_factor": "logs-sentinel"}'


def _run(job: str, warehouse: WarehouseResource, **kwargs) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def(job).execute_in_process(resources={"warehouse": warehouse}, **kwargs)
    assert result.success, job
    checks = result.get_asset_check_evaluations()
    failed = [(c.asset_key.to_user_string(), c.check_name, c.metadata) for c in checks if not c.passed]
    assert not failed, failed
    return result


def _warehouse(data: Path) -> WarehouseResource:
    return WarehouseResource(database=str(data / "warehouse.duckdb"), landing_dir=str(data / "landing"))


def _end_to_end(data: Path, warehouse: WarehouseResource) -> dict:
    """One generated delivery day (30 days of history for ~600 accounts) through the three jobs."""
    folder = data / "landing" / "transactions" / E2E_DAY
    assert write(folder / "tx.csv", folder / "tx.labels.csv", rows=ROWS, seed=3)[0] == ROWS
    (data / "models").mkdir(parents=True)
    (data / "models" / "current.json").write_bytes(LOG_REGISTRY_POINTER)  # the logs' registry
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BANKANOM_DATA_DIR", str(data))
        for name in (
            "BANKANOM_MODELS_DIR",
            "BANKANOM_SNAPSHOTS_DIR",
            "BANKANOM_WAREHOUSE",
            "BANKANOM_LANDING_DIR",
        ):
            env.delenv(name, raising=False)
        return {
            "features": _run("transaction_features_job", warehouse, partition_key=E2E_DAY),
            "train": _run(
                "transaction_train_job", warehouse, run_config=train_run_config(E2E_DAY, TRANSACTIONS)
            ),
            "transactions": _run("transactions_job", warehouse, partition_key=E2E_DAY),
        }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    data = tmp_path_factory.mktemp("tx_e2e") / "data"
    results = _end_to_end(data, _warehouse(data))
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    yield data, con, results
    con.close()


@pytest.fixture(scope="module")
def lake_pipeline(tmp_path_factory):
    """The same day in lake mode (BANKANOM_STORAGE=lake): Parquet per table and partition."""
    data = tmp_path_factory.mktemp("tx_lake") / "data"
    landing = str(data / "landing")
    _end_to_end(data, WarehouseResource(storage="lake", lake_root=str(data / "lake"), landing_dir=landing))
    con = lake.connect(str(data / "lake"))
    yield con
    con.close()


@pytest.mark.e2e
def test_lake_mode_gives_the_same_transactions_scores_incidents_and_metrics(pipeline, lake_pipeline):
    _, embedded, _ = pipeline
    for query in (
        "SELECT count(*), count(DISTINCT transaction_id) FROM validated_transactions",
        "SELECT count(*) FROM quarantine_transactions",
        "SELECT count(*), sum(is_anomaly::INT), round(sum(ensemble_score), 6), round(sum(if_score), 6), "
        "round(sum(lof_score), 6) FROM scored_transactions",
        "SELECT count(*), sum(transaction_count) FROM transaction_incidents",
        "SELECT model, metric, round(value, 9) FROM transaction_evaluation_metrics WHERE NOT isnan(value) "
        "ORDER BY 1, 2",
    ):
        expected = embedded.execute(query).fetchall()
        assert expected and expected == lake_pipeline.execute(query).fetchall(), query


def _materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.mark.e2e
def test_jobs_materialize_their_assets(pipeline):
    _, _, results = pipeline
    assert {"raw_transactions", "validated_transactions", "transaction_labels", "features_transactions"} <= (
        _materialized(results["features"])
    )
    assert _materialized(results["train"]) == {
        "transaction_isolation_forest_model",
        "transaction_local_outlier_factor_model",
        "transaction_ecod_model",
        "promoted_transaction_models",
    }
    assert {
        "scored_transactions",
        "transaction_incidents",
        "transaction_evaluation",
        "transaction_snapshot",
    } <= _materialized(results["transactions"])


@pytest.mark.e2e
def test_every_validated_transaction_is_scored_once(pipeline):
    _, con, _ = pipeline
    validated = con.execute("SELECT count(*) FROM validated_transactions").fetchone()[0]
    assert validated == ROWS  # the generator's rows are clean; raw and validated ran twice
    assert con.execute("SELECT count(*) FROM raw_transactions").fetchone()[0] == ROWS
    assert con.execute(
        "SELECT count(*), count(DISTINCT transaction_id) FROM features_transactions"
    ).fetchone() == (
        ROWS,
        ROWS,
    )
    assert con.execute(
        "SELECT count(*), count(DISTINCT s.transaction_id) FROM scored_transactions s "
        "JOIN validated_transactions v USING (partition_date, transaction_id)"
    ).fetchone() == (ROWS, ROWS)
    scores = con.execute(
        "SELECT min(ensemble_score), max(ensemble_score), count(*) FILTER (WHERE is_anomaly), "
        "count(*) FILTER (WHERE is_anomaly AND top_features IS NULL) FROM scored_transactions"
    ).fetchone()
    print("scored_transactions: min, max ensemble score, anomalous, anomalous without features:", scores)
    assert 0 <= scores[0] < scores[1] <= 1
    assert 0 < scores[2] < 0.05 * ROWS
    assert scores[3] == 0


@pytest.mark.e2e
def test_transaction_models_have_their_own_registry(pipeline):
    data, _, _ = pipeline
    pointer = json.loads((data / "models" / "transactions" / "current.json").read_text())
    assert set(pointer) == {"isolation_forest", "local_outlier_factor", "ecod"}
    for version in pointer.values():
        assert (data / "models" / "transactions" / version).is_dir()
    assert (data / "models" / "current.json").read_bytes() == LOG_REGISTRY_POINTER


@pytest.mark.e2e
def test_incidents_have_account_severity_and_pattern(pipeline):
    _, con, _ = pipeline
    incidents = con.execute("SELECT * FROM transaction_incidents").pl()
    print(incidents.group_by("severity", "likely_pattern").len().sort("severity", "likely_pattern"))
    assert incidents.height > 0
    assert incidents["account_id"].null_count() == 0
    assert set(incidents["severity"]) <= {"Low", "Medium", "High", "Critical"}
    assert incidents["likely_pattern"].null_count() == 0
    assert set(incidents["likely_pattern"]) <= set(PATTERNS)
    assert incidents["incident_id"].n_unique() == incidents.height
    # each incident's transactions are anomalous transactions of its account
    members = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE s.is_anomaly AND s.account_id = i.account_id) "
        "FROM (SELECT account_id, unnest(transaction_ids) AS transaction_id FROM transaction_incidents) i "
        "LEFT JOIN scored_transactions s USING (transaction_id)"
    ).fetchone()
    assert members[0] == members[1] == incidents["transaction_count"].sum()


@pytest.mark.e2e
def test_evaluation_beats_the_baseline_and_covers_every_pattern(pipeline):
    _, con, _ = pipeline
    metrics = con.execute("SELECT model, metric, value FROM transaction_evaluation_metrics").pl()
    wide = {(m, k): v for m, k, v in metrics.iter_rows()}
    patterns = con.execute("SELECT * EXCLUDE (partition_date) FROM transaction_evaluation_patterns").pl()
    with pl.Config(tbl_rows=40, tbl_cols=10):
        print(
            metrics.filter(pl.col("metric").is_in(["pr_auc", "roc_auc", "precision", "recall"])).sort(
                "model", "metric"
            )
        )
        print(metrics.filter(pl.col("model") == "incidents"))
        print(patterns)
    assert wide[("ensemble", "pr_auc")] > wide[("baseline_isolation_forest", "pr_auc")]
    assert wide[("ensemble", "roc_auc")] > 0.8
    assert wide[("isolation_forest", "roc_auc")] > 0.8
    assert sorted(patterns["pattern"]) == sorted(PATTERNS)
    assert (patterns["instances"] > 0).all()
    assert wide[("incidents", "instances")] == patterns["instances"].sum()
    assert wide[("incidents", "instance_recall")] > 0.2


@pytest.mark.e2e
def test_snapshot_serves_the_scored_transactions(pipeline):
    data, _, _ = pipeline
    pointer = json.loads((data / "snapshots" / "current.json").read_text())
    assert pointer["file"].endswith(".duckdb")
    assert pointer["rows"]["transactions"] == ROWS
    snap = duckdb.connect(str(data / "snapshots" / pointer["file"]), read_only=True)
    try:
        scored = snap.execute(
            "SELECT count(*), count(ensemble_score), count(*) FILTER (WHERE is_anomaly) FROM transactions"
        ).fetchone()
        assert scored[0] == scored[1] == ROWS
        assert scored[2] > 0
        tables = {r[0] for r in snap.execute("SHOW TABLES").fetchall()}
        assert {"transactions", "transaction_incidents", "transaction_evaluation_metrics"} <= tables
    finally:
        snap.close()


@pytest.mark.e2e
def test_labels_never_reach_the_features(pipeline, tmp_path):
    """Same features_transactions with or without the labels file beside the CSV."""
    data, con, _ = pipeline
    blind = tmp_path / "data"
    folder = blind / "landing" / "transactions" / E2E_DAY
    folder.mkdir(parents=True)
    shutil.copy(data / "landing" / "transactions" / E2E_DAY / "tx.csv", folder / "tx.csv")
    header = (folder / "tx.csv").open().readline().strip().split(",")
    assert header == CSV_COLUMNS  # no label column in the CSV itself
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BANKANOM_DATA_DIR", str(blind))
        _run("transaction_features_job", _warehouse(blind), partition_key=E2E_DAY)
    blind_con = duckdb.connect(str(blind / "warehouse.duckdb"), read_only=True)
    try:
        assert blind_con.execute("SELECT count(*) FROM transaction_labels").fetchone() == (0,)
        labelled = con.execute(FEATURES_SQL).pl()
        unlabelled = blind_con.execute(FEATURES_SQL).pl()
    finally:
        blind_con.close()
    assert con.execute("SELECT count(*) FILTER (WHERE is_fraud) FROM transaction_labels").fetchone()[0] > 0
    assert labelled.height == ROWS
    # exact but for the last bits of floating sums, whose order DuckDB's parallel windows may vary
    assert_frame_equal(labelled, unlabelled, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    leaky = [c for c in labelled.columns if any(w in c.lower() for w in ("fraud", "pattern", "label"))]
    assert not leaky


def test_a_transaction_labelled_twice_keeps_its_first_label_and_is_counted(tmp_path):
    header = "TransactionID,is_fraud,pattern,instance_id\n"
    (tmp_path / "a.labels.csv").write_text(header + "T1,true,rapid_fire,rapid_fire-0001\nT2,false,,\n")
    (tmp_path / "b.labels.csv").write_text(header + "T1,false,,\n")
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    files = [tmp_path / "b.labels.csv", tmp_path / "a.labels.csv"]
    assert load_labels(con, files, DAY) == (2, 1)
    assert con.execute("SELECT transaction_id, is_fraud FROM transaction_labels ORDER BY 1").fetchall() == [
        ("T1", True),
        ("T2", False),
    ]
    assert load_labels(con, [], DAY) == (0, 0)  # a real delivery has no labels: the day is emptied
