"""Default paths follow BANKANOM_HOME or the working directory, never the package's location; what the
package only reads (SQL models, seeds) is found inside it."""

from pathlib import Path

import pytest

from bankanom_pipeline import settings

PLACES = ("BANKANOM_HOME", "BANKANOM_DATA_DIR", "BANKANOM_WAREHOUSE", "BANKANOM_MODELS_DIR", "DAGSTER_HOME")


@pytest.fixture
def clean(monkeypatch):
    for name in PLACES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults_are_under_the_working_directory(clean, tmp_path):
    clean.chdir(tmp_path)
    assert settings.data_dir() == tmp_path / "data"
    assert settings.warehouse_path() == tmp_path / "data" / "warehouse.duckdb"
    assert settings.models_dir() == tmp_path / "data" / "models"
    assert settings.dagster_home() == tmp_path / "dagster_home"


def test_bankanom_home_moves_every_default_and_each_variable_still_wins(clean, tmp_path):
    clean.chdir(tmp_path)
    clean.setenv("BANKANOM_HOME", str(tmp_path / "home"))
    assert settings.data_dir() == tmp_path / "home" / "data"
    assert settings.dagster_home() == tmp_path / "home" / "dagster_home"
    clean.setenv("BANKANOM_DATA_DIR", str(tmp_path / "elsewhere"))
    clean.setenv("DAGSTER_HOME", str(tmp_path / "instance"))
    assert settings.snapshots_dir() == tmp_path / "elsewhere" / "snapshots"
    assert settings.dagster_home() == tmp_path / "instance"


def test_the_sql_models_and_seeds_come_from_the_package():
    root = settings.sql_root()
    assert (root / "features" / "features_events.sql").is_file()
    assert (root / "seeds" / "transaction_cities.csv").is_file()
    assert root.parent == Path(settings.__file__).parent


def test_a_new_instance_folder_gets_the_one_writer_pool(clean, tmp_path):
    import yaml

    from bankanom_pipeline.cli import _dagster_home

    clean.setenv("DAGSTER_HOME", str(tmp_path / "instance"))
    home = _dagster_home()
    checkout = Path(__file__).resolve().parent.parent / "dagster_home" / "dagster.yaml"
    assert (home / "dagster.yaml").read_text() == checkout.read_text()
    assert yaml.safe_load((home / "dagster.yaml").read_text())["concurrency"]["pools"]["default_limit"] == 1
    # an instance's own settings are never overwritten
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    _dagster_home()
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\n"
