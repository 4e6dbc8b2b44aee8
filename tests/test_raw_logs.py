import json

import dagster as dg
import pytest

from bankanom_pipeline.defs.ingest.assets import raw_logs
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.writer import write_range
from bankanom_pipeline.ingest import raw_logs as raw_logs_module
from bankanom_pipeline.ingest.raw_logs import load_partition
from bankanom_pipeline.warehouse.store import EmbeddedWarehouse
from tests.conftest import DAY, DAY_START, small

GOOD = {
    "timestamp": f"{DAY}T10:00:00.000Z",
    "source_service": "auth-service",
    "log_level": "INFO",
    "event_id": "e-1",
    "message": "User USR-00001 logged in successfully from 1.2.3.4",
}
# exactly as the predecessor server printed them: no correlation_id/geo/metrics on normal logs,
# follow-up events marked with correlation_event
PREDECESSOR_LINES = [
    '{"timestamp": "2026-01-05T14:23:45.123Z", "source_service": "auth-service", "log_level": "INFO", '
    '"event_id": "p-1", "user_id": "USR-12345", "ip_address": "203.0.113.42", '
    '"message": "User session abc validated", "anomaly_details": {"is_anomaly": false}}',
    '{"timestamp": "2026-01-05T14:23:46.000Z", "source_service": "auth-service", "log_level": "WARN", '
    '"event_id": "p-2", "correlation_id": "c-1", "user_id": "USR-12345", "ip_address": "203.0.113.42", '
    '"geo_location": "US-CA", "message": "Multiple failed login attempts detected", "anomaly_details": '
    '{"is_anomaly": true, "anomaly_id": "BANK-001", "anomaly_name": "Login Failure Spike (#61)"}, '
    '"metrics": {"failed_attempts": 12, "unique_ips": 3, "success_rate": 0.02}}',
    '{"timestamp": "2026-01-05T14:23:50.000Z", "source_service": "auth-service", "log_level": "WARN", '
    '"event_id": "p-3", "correlation_id": "c-1", "message": "account-lock", '
    '"anomaly_details": {"is_anomaly": false, "correlation_event": "account-lock"}}',
]


def _line(**changes) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...})


@pytest.fixture
def landing(tmp_path):
    root = tmp_path / "landing" / "logs"
    (root / DAY).mkdir(parents=True)
    return root


def _write(landing, name: str, content: bytes) -> None:
    (landing / DAY / name).write_bytes(content)


def test_broken_input_is_rejected_with_reasons_and_counts_reconcile(tmp_path, landing):
    lines = [
        _line(event_id="ok-1"),
        "{not json",
        "[1, 2, 3]",
        "",
        _line(event_id="ok-2", message=...),  # missing field
        _line(event_id="ok-3", timestamp=None),  # null counts as missing
        _line(event_id="ok-1"),  # duplicate event id: kept in raw, counted
        _line(event_id="ok-4", shard="eu-1", trace={"span": 7}),  # unknown fields are kept
    ]
    content = ("\n".join(lines) + "\n").encode() + b'{"bad": "\xff\xfe"}\n' + _line(event_id="ok-5").encode()
    _write(landing, "a.jsonl", content)
    _write(landing, "b.jsonl", ("\n".join(PREDECESSOR_LINES) + "\n").encode())
    _write(landing, ".c.jsonl.part", _line(event_id="half").encode())  # still being written: ignored
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    counts = load_partition(con, landing, DAY)
    assert counts.files == 2
    assert counts.lines_read == 13
    assert counts.loaded == 7  # ok-1 twice, ok-4, ok-5 and the three predecessor lines
    assert counts.rejected == 6
    assert counts.duplicate_event_ids == 1
    assert counts.rejected_by_reason == {
        "malformed JSON": 1,
        "not a JSON object": 1,
        "empty line": 1,
        "invalid UTF-8": 1,
        "missing required field(s): message": 1,
        "missing required field(s): timestamp": 1,
    }
    rejected = con.execute(
        "SELECT source_file, line_no, reason, raw_text FROM raw_logs_rejected ORDER BY line_no"
    ).fetchall()
    assert (f"{DAY}/a.jsonl", 2, "malformed JSON", "{not json") in rejected
    assert any(r[2] == "invalid UTF-8" and "\\xff" in r[3] for r in rejected)
    extra = con.execute("SELECT extra FROM raw_logs WHERE event_id = 'ok-4'").fetchone()[0]
    assert json.loads(extra) == {"shard": "eu-1", "trace": {"span": 7}}
    follow_up = con.execute(
        "SELECT anomaly_details, metrics, geo_location FROM raw_logs WHERE event_id = 'p-3'"
    ).fetchone()
    assert json.loads(follow_up[0]) == {"is_anomaly": False, "correlation_event": "account-lock"}
    assert follow_up[1] is None and follow_up[2] is None


def test_unknown_fields_are_found_in_any_key_order(tmp_path, landing):
    # the generator's key order takes a fast path; any other order or set takes the exact test
    usual = {name: f"v-{name}" for name in raw_logs_module._USUAL_KEYS}
    usual |= {"timestamp": f"{DAY}T10:00:00.000Z", "anomaly_details": None, "metrics": {"amount": 1}}
    shuffled = dict(reversed(usual.items()))
    lines = [
        json.dumps(usual | {"event_id": "usual"}),
        json.dumps(shuffled | {"event_id": "shuffled"}),
        json.dumps(usual | {"event_id": "usual+1", "shard": "eu-1"}),
        json.dumps({"shard": "eu-2"} | shuffled | {"event_id": "shuffled+1"}),
        json.dumps({k: v for k, v in usual.items() if k != "user_id"} | {"event_id": "fewer"}),
        "null",
        '  {"spaced": true}',
    ]
    _write(landing, "a.jsonl", ("\n".join(lines) + "\n").encode())
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    counts = load_partition(con, landing, DAY)
    extras = dict(con.execute("SELECT event_id, extra FROM raw_logs").fetchall())
    assert extras == {
        "usual": None,
        "shuffled": None,
        "usual+1": '{"shard":"eu-1"}',
        "shuffled+1": '{"shard":"eu-2"}',
        "fewer": None,
    }
    assert counts.rejected_by_reason == {
        "not a JSON object": 1,
        "missing required field(s): timestamp, source_service, log_level, event_id, message": 1,
    }


def test_rerun_is_idempotent_and_picks_up_late_files(tmp_path, landing):
    _write(landing, "a.jsonl", (_line(event_id="1") + "\n" + _line(event_id="2") + "\n").encode())
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect()
    assert load_partition(con, landing, DAY).loaded == 2
    assert load_partition(con, landing, DAY).loaded == 2
    _write(landing, "late.jsonl", (_line(event_id="3") + "\n").encode())
    assert load_partition(con, landing, DAY).loaded == 3
    assert con.execute("SELECT count(*) FROM raw_logs").fetchone()[0] == 3


def test_materialize_generated_partition(tmp_path, config, monkeypatch):
    generator = Generator(small(config, rate=2.0))
    summary = write_range(generator, tmp_path / "landing" / "logs", DAY_START, end_s=DAY_START + 6 * 3600)
    # a real day's 6-hour file is scanned for newlines in several slices; this one's ~15 MB too, in 1 MB slices
    monkeypatch.setattr(raw_logs_module, "_SCAN_BYTES", 1 << 20)
    warehouse = WarehouseResource(database=str(tmp_path / "w.duckdb"), landing_dir=str(tmp_path / "landing"))
    result = dg.materialize([raw_logs], partition_key=DAY, resources={"warehouse": warehouse})
    assert result.success
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("raw_logs")[0].metadata.items()}
    assert metadata["lines_read"] == summary.events
    assert metadata["loaded"] == summary.events and metadata["rejected"] == 0
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"counts_reconcile": True, "rejected_share": True}
    again = dg.materialize([raw_logs], partition_key=DAY, resources={"warehouse": warehouse})
    assert again.success
    con = EmbeddedWarehouse(tmp_path / "w.duckdb").connect_read_only()
    assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw_logs").fetchone() == (
        summary.events,
        summary.events,
    )
    labelled = con.execute(
        "SELECT count(*) FROM raw_logs WHERE json_extract(anomaly_details, '$.is_anomaly')::BOOLEAN"
    ).fetchone()[0]
    assert labelled == summary.anomalous


@pytest.mark.parametrize(
    "content", [b"", b"\n", b"{}", b'{"a": 1}\n\n{"b": 2}', b"x\n" * 40, b"\xff\xfe\nok\n" * 9]
)
def test_lines_are_the_same_whatever_slices_the_newline_scan_takes(tmp_path, monkeypatch, content):
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    whole = raw_logs_module.file_lines(path, "a")
    monkeypatch.setattr(raw_logs_module, "_SCAN_BYTES", 3)  # slices that cut lines and newlines
    sliced = raw_logs_module.file_lines(path, "a")
    assert sliced.equals(whole)
    expected = content.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    assert whole.num_rows == len(expected)
    texts = [line.decode("utf-8", "backslashreplace") + "\n" for line in expected]
    assert whole["line"].to_pylist() == texts
