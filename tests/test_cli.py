import subprocess
import sys

import pytest

COMMANDS = [
    "generate",
    "generate-transactions",
    "ingest-transactions",
    "ingest",
    "demo",
    "mock-server",
    "validate-config",
    "scenarios",
    "sql",
    "runs",
]


@pytest.mark.e2e
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_explains_itself(command):
    args = [sys.executable, "-m", "bankanom_pipeline.cli", *([command] if command else []), "--help"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    if command is None:
        assert all(c in result.stdout for c in COMMANDS)


@pytest.mark.e2e
def test_generate_writes_landing_files(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bankanom_pipeline.cli",
            "generate",
            "--start",
            "2026-01-05",
            "--events",
            "5000",
            "--landing",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 5,000 events" in result.stdout
    files = list((tmp_path / "logs" / "2026-01-05").glob("*.jsonl"))
    assert sum(len(f.read_bytes().splitlines()) for f in files) == 5000


@pytest.mark.e2e
def test_validate_config_reports_the_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("global_anomaly_rate: 0.08\nlog_generation: {logs_per_second: 0}\n")
    result = subprocess.run(
        [sys.executable, "-m", "bankanom_pipeline.cli", "validate-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "log_generation.logs_per_second" in result.stdout


def test_scenario_docs_match_the_code(config):
    from pathlib import Path

    from bankanom_pipeline.generator.scenarios import catalogue_markdown

    docs = Path(__file__).parent.parent / "docs" / "scenarios.md"
    assert docs.read_text().strip() == catalogue_markdown(config).strip(), (
        "run: bankanom scenarios > docs/scenarios.md"
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("day", "why"),
    [
        ("2999-01-01", "after the last partition"),
        ("2024-12-31", "before the first partition"),
        ("2026-02-30", "not an ISO date"),
        ("20260105", "not an ISO date"),
    ],
)
def test_ingest_transactions_checks_the_day_before_touching_anything(tmp_path, day, why):
    import os

    csv_file = tmp_path / "t.csv"
    csv_file.write_text("TransactionID\nTX1\n")
    env = {**os.environ, "BANKANOM_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "dh")}
    result = subprocess.run(
        [sys.executable, "-m", "bankanom_pipeline.cli", "ingest-transactions", str(csv_file), "--date", day],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    said = (result.stdout + result.stderr).strip()
    assert why in said and len(said.splitlines()) == 1, said
    assert "Traceback" not in said
    assert not (tmp_path / "data").exists()  # no landing folder, no copied file
