"""The CLI's own behaviour (help, arguments, exit codes, what it writes), invoked in process with typer's
CliRunner: none of it depends on being a separate process. The end-to-end tests run the real entry point
(`python -m bankanom_pipeline.cli`) for backfill, the daemon scenario and `bankanom up`."""

import pytest
from typer.testing import CliRunner

from bankanom_pipeline.cli import app

COMMANDS = [
    "generate",
    "generate-transactions",
    "ingest-transactions",
    "ingest",
    "demo",
    "demo-feedback",
    "mock-server",
    "validate-config",
    "scenarios",
    "sql",
    "runs",
]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_explains_itself(command):
    result = invoke(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if command is None:
        assert all(c in result.output for c in COMMANDS)


def test_generate_writes_landing_files(tmp_path):
    result = invoke("generate", "--start", "2026-01-05", "--events", "5000", "--landing", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "wrote 5,000 events" in result.output
    files = list((tmp_path / "logs" / "2026-01-05").glob("*.jsonl"))
    assert sum(len(f.read_bytes().splitlines()) for f in files) == 5000


def test_demo_feedback_refuses_bad_arguments_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("BANKANOM_DATA_DIR", str(tmp_path))
    result = invoke("demo-feedback", "--date", "2026-13-01")
    assert result.exit_code == 2
    assert "not an ISO date" in result.output
    for option in ("--labels", "--transaction-rows"):
        result = invoke("demo-feedback", "--date", "2026-01-06", option, "0")
        assert result.exit_code == 2, result.output
        assert option in result.output
    assert not any(tmp_path.iterdir())


def test_validate_config_reports_the_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("global_anomaly_rate: 0.08\nlog_generation: {logs_per_second: 0}\n")
    result = invoke("validate-config", str(bad))
    assert result.exit_code == 2
    assert "log_generation.logs_per_second" in result.output


def test_scenario_docs_match_the_code(config):
    from pathlib import Path

    from bankanom_pipeline.generator.scenarios import catalogue_markdown

    docs = Path(__file__).parent.parent / "docs" / "scenarios.md"
    assert docs.read_text().strip() == catalogue_markdown(config).strip(), (
        "run: bankanom scenarios > docs/scenarios.md"
    )


@pytest.mark.parametrize(
    ("day", "why"),
    [
        ("2999-01-01", "after the last partition"),
        ("2024-12-31", "before the first partition"),
        ("2026-02-30", "not an ISO date"),
        ("20260105", "not an ISO date"),
    ],
)
def test_ingest_transactions_checks_the_day_before_touching_anything(tmp_path, monkeypatch, day, why):
    csv_file = tmp_path / "t.csv"
    csv_file.write_text("TransactionID\nTX1\n")
    monkeypatch.setenv("BANKANOM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    for name in ("BANKANOM_LANDING_DIR", "BANKANOM_WAREHOUSE", "BANKANOM_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    result = invoke("ingest-transactions", str(csv_file), "--date", day)
    assert result.exit_code == 2, result.output
    said = result.output.strip()
    assert why in said and len(said.splitlines()) == 1, said
    assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
    assert not (tmp_path / "data").exists()  # no landing folder, no copied file
    assert not (tmp_path / "dh").exists()  # no Dagster instance either: no run was started
