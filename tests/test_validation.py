import datetime as dt
import json

import dagster as dg
import pytest

from bankanom_pipeline.defs.features.assets import build_sql_assets
from bankanom_pipeline.defs.ingest.assets import raw_logs
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.defs.validation import gx as gx_rules
from bankanom_pipeline.defs.validation.assets import validated_logs
from bankanom_pipeline.defs.validation.gx import GX
from bankanom_pipeline.ingest.raw_logs import load_partition
from bankanom_pipeline.validation import rules
from bankanom_pipeline.validation.logs import validate_partition
from bankanom_pipeline.validation.quarantine import partition_counts
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse
from tests.conftest import DAY

SERVICES = ["auth-service", "api-gateway", "postgres-db"]


def record(event_id: str, **changes) -> dict:
    base = {
        "timestamp": f"{DAY}T10:00:00.000Z",
        "source_service": "auth-service",
        "log_level": "INFO",
        "event_id": event_id,
        "user_id": "USR-00001",
        "ip_address": "23.1.2.3",
        "geo_location": "US-CA",
        "message": "User USR-00001 logged in successfully from 23.1.2.3",
        "anomaly_details": {"is_anomaly": False},
        "metrics": {"response_time_ms": 120.5, "success_rate": 0.97},
    }
    base.update(changes)
    return base


# event id -> the rules it must break (empty: it must be validated)
CASES = {
    "good-1": (record("good-1"), []),
    "good-2": (record("good-2", ip_address=None, metrics=None), []),
    "good-ipv6": (record("good-ipv6", ip_address="2001:db8::1"), []),
    "ts-garbage": (record("ts-garbage", timestamp="yesterday-ish"), ["timestamp_parseable"]),
    "ts-number": (record("ts-number", timestamp=1767607200), ["timestamp_parseable"]),
    "ts-outside": (
        record("ts-outside", timestamp="2026-01-04T23:59:59.999Z"),
        ["timestamp_inside_partition"],
    ),
    "ts-next-day": (
        record("ts-next-day", timestamp="2026-01-06T00:00:00.000Z"),
        ["timestamp_inside_partition"],
    ),
    "bad-level": (record("bad-level", log_level="LOUD"), ["known_log_level"]),
    "level-number": (record("level-number", log_level=3), ["known_log_level"]),
    "bad-service": (record("bad-service", source_service="toaster"), ["known_source_service"]),
    "bad-ip": (record("bad-ip", ip_address="999.1.2.3"), ["ip_address_well_formed"]),
    "ip-text": (record("ip-text", ip_address="localhost"), ["ip_address_well_formed"]),
    "metric-string": (record("metric-string", metrics={"success_rate": "high"}), ["metrics_numeric"]),
    "metrics-list": (record("metrics-list", metrics=[1, 2]), ["metrics_numeric"]),
    "rate-high": (record("rate-high", metrics={"success_rate": 1.5}), ["metric_in_range"]),
    "count-negative": (record("count-negative", metrics={"failed_attempts": -1}), ["metric_in_range"]),
    "two-rules": (
        record("two-rules", log_level="LOUD", metrics={"cache_hit_rate": 7}),
        ["known_log_level", "metric_in_range"],
    ),
}


@pytest.fixture
def warehouse_with_broken_day(tmp_path):
    folder = tmp_path / "landing" / "logs" / DAY
    folder.mkdir(parents=True)
    lines = [json.dumps(r) for r, _ in CASES.values()]
    lines.append(json.dumps(record("good-1")))  # a duplicate event id
    lines += ["{not json", '{"event_id": "x"}']  # raw-level rejects
    (folder / "a.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + b'{"event_id": "\xff"}\n')
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    raw = load_partition(con, tmp_path / "landing" / "logs", DAY)
    return con, raw, tmp_path


def test_rows_are_quarantined_with_the_rules_they_broke(warehouse_with_broken_day):
    con, raw, _ = warehouse_with_broken_day
    assert (raw.lines_read, raw.loaded, raw.rejected) == (len(CASES) + 4, len(CASES) + 1, 3)
    counts, outcomes = validate_partition(con, DAY, SERVICES, GX)
    expected_bad = {k: sorted(v) for k, (_, v) in CASES.items() if v}
    assert counts.raw == raw.loaded
    assert counts.duplicates == 1
    assert counts.quarantined == len(expected_bad)
    assert counts.validated == len(CASES) - len(expected_bad)
    assert counts.raw == counts.validated + counts.quarantined + counts.duplicates
    quarantined = dict(
        con.execute(
            "SELECT event_id, list_sort(rules) FROM quarantine_logs WHERE kind = 'invalid'"
        ).fetchall()
    )
    assert quarantined == expected_bad
    validated = {r[0] for r in con.execute("SELECT event_id FROM validated_logs").fetchall()}
    assert validated == {k for k, (_, v) in CASES.items() if not v}
    duplicate = con.execute("SELECT event_id, rules FROM quarantine_logs WHERE kind = 'duplicate'").fetchall()
    assert duplicate == [("good-1", ["duplicate_event_id"])]
    by_rule = {o.check.label: o.unexpected_count for o in outcomes}
    assert by_rule["known_log_level"] == 3 and by_rule["timestamp_parseable"] == 2
    assert any(o.examples for o in outcomes if o.check.rule == "metric_in_range")
    assert "anomaly_details" not in {c[0] for c in con.execute("DESCRIBE validated_logs").fetchall()}


def test_a_rule_on_text_the_typed_rows_leave_in_raw_logs(warehouse_with_broken_day, monkeypatch):
    # the typed rows carry event_id, timestamp and message only as present-or-not; a rule that compares
    # their text reads it from raw_logs, and the quarantine record still holds the text as sent
    con, _, _ = warehouse_with_broken_day
    shouting = {
        "name": "message_not_shouting",
        "description": "a message in capitals is a sign of a broken formatter",
        "expectation": "expect_column_values_to_not_match_regex",
        "column": "message",
        "regex": "^[A-Z ]+$",
    }
    monkeypatch.setattr(rules, "failing_rows", _with_not_match(rules.failing_rows))
    from bankanom_pipeline.validation import logs

    monkeypatch.setattr(logs, "load_rules", lambda: [*rules.load_rules(), shouting])
    con.execute("UPDATE raw_logs SET message = 'USER LOGGED IN' WHERE event_id = 'good-2'")
    counts, outcomes = validate_partition(con, DAY, SERVICES, GX)
    by_rule = {o.check.label: (o.unexpected_count, o.examples) for o in outcomes}
    assert by_rule["message_not_shouting"] == (1, ["USER LOGGED IN"])
    rules_broken, record = con.execute(
        "SELECT rules, record FROM quarantine_logs WHERE event_id = 'good-2'"
    ).fetchone()
    assert rules_broken == ["message_not_shouting"]
    assert json.loads(record)["message"] == "USER LOGGED IN"
    assert counts.raw == counts.validated + counts.quarantined + counts.duplicates


def _with_not_match(failing_rows):
    """The cross-check's row evaluator, taught one more expectation for the test above."""
    import numpy as np

    def evaluate(frame, check):
        if check.expectation != "expect_column_values_to_not_match_regex":
            return failing_rows(frame, check)
        column = frame[check.kwargs["column"]].astype("string")
        bad = column.str.contains(check.kwargs["regex"], regex=True).fillna(False).to_numpy(dtype=bool)
        return frame.loc[bad, "idx"].to_numpy(dtype=np.int64)

    return evaluate


def _validated(con) -> int:
    return con.execute("SELECT count(*) FROM validated_logs").fetchone()[0]


def test_validated_logs_shows_a_day_only_while_its_raw_load_is_the_one_validated(warehouse_with_broken_day):
    # validated_logs is a view of the raw rows: a day's rows must not show before validation has
    # checked them, nor after the day is loaded again until validation checks the new load
    con, _, tmp_path = warehouse_with_broken_day
    assert _validated(con) == 0
    counts, _ = validate_partition(con, DAY, SERVICES, GX)
    assert _validated(con) == counts.validated > 0
    load_partition(con, tmp_path / "landing" / "logs", DAY)
    assert _validated(con) == 0
    assert validate_partition(con, DAY, SERVICES, GX)[0] == counts
    assert _validated(con) == counts.validated
    # validating the same load again (idempotent) changes nothing
    assert validate_partition(con, DAY, SERVICES, GX)[0] == counts
    assert _validated(con) == counts.validated


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_validated_times_do_not_depend_on_the_reading_session_time_zone(tmp_path, zone):
    # a timestamp sent without a zone is UTC; one with a zone is that instant
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    con.execute(f"SET TimeZone = '{zone}'")
    sent = [
        "2026-01-05T10:00:00.250Z",
        "2026-01-05T10:00:00+02:00",
        "2026-01-05T10:00:00-0530",
        "2026-01-05 10:00:00",
        "2026-01-05",
        "2026-01-05 10:00:00 Europe/Berlin",
        "yesterday",
    ]
    read = con.execute(
        "SELECT utc_time(s) AT TIME ZONE 'UTC' FROM unnest(?) WITH ORDINALITY AS t(s, i) ORDER BY i", [sent]
    ).fetchall()
    at = dt.datetime
    assert [r[0] for r in read] == [
        at(2026, 1, 5, 10, 0, 0, 250_000),
        at(2026, 1, 5, 8),
        at(2026, 1, 5, 15, 30),
        at(2026, 1, 5, 10),
        at(2026, 1, 5),
        at(2026, 1, 5, 9),
        None,
    ]


def test_a_failed_cross_check_leaves_the_previous_partition(warehouse_with_broken_day, monkeypatch):
    # a failure in the cross-check must roll back the quarantine and the validated mark alike
    con, _, _ = warehouse_with_broken_day
    before, _ = validate_partition(con, DAY, SERVICES, GX)
    stored = con.execute("SELECT * FROM validated_logs ORDER BY line_no").fetchall()
    real = rules.failing_rows

    def one_row_short(frame, check):
        found = real(frame, check)
        return found[1:] if check.label == "known_log_level" else found

    monkeypatch.setattr(rules, "failing_rows", one_row_short)
    with pytest.raises(
        RuntimeError, match="known_log_level: 2 failing rows found but Great Expectations reports 3"
    ):
        validate_partition(con, DAY, SERVICES, GX)
    assert con.execute("SELECT * FROM validated_logs ORDER BY line_no").fetchall() == stored
    assert (
        partition_counts(
            con,
            dt.date.fromisoformat(DAY),
            raw="raw_logs",
            validated="validated_logs",
            quarantine="quarantine_logs",
        )
        == before
    )


def test_blocking_check_stops_downstream_work(warehouse_with_broken_day):
    con, _, tmp_path = warehouse_with_broken_day
    con.close()
    warehouse = WarehouseResource(database=str(tmp_path / "w.duckdb"), landing_dir=str(tmp_path / "landing"))
    stg = [a for a in build_sql_assets() if a.key.to_user_string() == "stg_logs"]
    result = dg.materialize(
        [raw_logs, validated_logs, *stg],
        partition_key=DAY,
        resources={"warehouse": warehouse},
        raise_on_error=False,
    )
    checks = {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key.path == ["validated_logs"]
    }
    assert checks["counts_reconcile"].passed and checks["not_empty"].passed
    assert not checks["quarantine_share"].passed  # 14 of 18 rows broke a rule
    assert not checks["log_rules"].passed
    table = checks["log_rules"].metadata["results"].value
    assert "known_log_level" in table and "expect_column_values_to_be_in_set" in table
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "validated_logs" in materialized and "stg_logs" not in materialized


def test_gx_sees_only_what_its_checks_read_and_reports_the_same(monkeypatch):
    """GX is handed a narrowed frame (``gx._gx_view``); its results must equal those on the whole frame."""
    import pyarrow as pa

    from bankanom_pipeline.validation import rules
    from bankanom_pipeline.validation.logs import _to_pandas

    frame = _to_pandas(
        pa.table(
            {
                "idx": pa.array(range(6), pa.int64()),
                "event_id": pa.array(["a", None, "c", None, "e", "f"]),
                "message": pa.array(["m", "m", "m", "m", "m", None]),
                "log_level": pa.array(["INFO", "LOUD", None, "INFO", "3", "INFO"]),
                "ts": pa.array([1, None, 3, 4, 5, 6], pa.timestamp("us", "UTC")),
                "unused": pa.array(["x"] * 6),
            }
        )
    )
    checks = [
        rules.Check("present", f"present:{c}", "events", "expect_column_values_to_not_be_null", {"column": c})
        for c in ("event_id", "message", "ts")
    ] + [
        rules.Check(
            "level",
            "level",
            "events",
            "expect_column_values_to_be_in_set",
            {"column": "log_level", "value_set": ["INFO"]},
        )
    ]
    view = gx_rules._gx_view(frame, checks)
    assert list(view.columns) == ["event_id", "message", "log_level", "ts"]
    assert str(view["event_id"].dtype) == "boolean" and str(view["ts"].dtype).startswith("datetime64")

    def summary(outcomes):
        return [(o.check.label, o.unexpected_count, o.unexpected_percent, o.examples) for o in outcomes]

    narrowed = summary(gx_rules.run_checks({"events": frame}, checks))
    monkeypatch.setattr(gx_rules, "_gx_view", lambda whole, _checks: whole)
    assert narrowed == summary(gx_rules.run_checks({"events": frame}, checks))
    assert [n[1] for n in narrowed] == [2, 1, 1, 2]


def test_gx_is_loaded_without_its_batch_fingerprint():
    """``load_gx`` turns off GX's hash of every value of a batch (a marker nothing reads, 0.45 s a million
    events) through a module constant of GX's; should a GX release rename it, this fails."""
    import pandas as pd

    gx = gx_rules.load_gx()
    context = gx.get_context(mode="ephemeral")
    batch = (
        context.data_sources.add_pandas("fingerprint")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": pd.DataFrame({"x": [1, 2, 3]})})
    )
    assert "ge_load_time" in batch.batch_markers
    assert "pandas_data_fingerprint" not in batch.batch_markers


def test_gx_loads_without_the_modules_it_needs_only_for_unused_expectations_which_still_work():
    """``load_gx`` defers scipy.stats and altair (~1 s of GX's import); used later, they are whole."""
    import subprocess
    import sys

    script = """
import sys
from bankanom_pipeline.defs.validation.gx import load_gx
gx = load_gx()
assert "scipy.stats._stats_py" not in sys.modules and "altair.vegalite" not in sys.modules
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
assert abs(kl.stats.entropy([0.5, 0.5], [0.25, 0.75]) - 0.1438410362) < 1e-9
from scipy.stats import rankdata
from sklearn.ensemble import IsolationForest
assert list(rankdata([3, 1, 2])) == [3, 1, 2] and type(sys.modules["scipy.stats"]).__name__ == "module"
import altair
assert altair.Chart is kl.alt.Chart
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
