"""The wheel, installed outside the checkout, computes features from any folder and writes nothing where
it is installed: the SQL models, seeds and configs ship as package data and default paths follow the
working directory (or BANKANOM_HOME), not the package."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
EVENTS = [
    {
        "event_id": f"wheel-{i}",
        "timestamp": f"2026-11-24T00:0{i}:00Z",
        "source_service": "auth-service",
        "log_level": "WARN" if i == 2 else "INFO",
        "message": f"Login failed for user USR-0000{i % 2} from 51.113.80.{i}: invalid credentials",
        "user_id": f"USR-0000{i % 2}",
        "ip_address": f"51.113.80.{i}",
        "geo_location": "GB-MAN",
        "metrics": {"response_time_ms": 60.0 + i, "failed_attempts": i},
    }
    for i in range(4)
]
# runs in the fresh venv; prints where things are and the features of EVENTS
PROBE = """
import json, os, sys
import bankanom_api, bankanom_pipeline
from bankanom_api.predict import events_frame
from bankanom_api.schemas import LogEvent
from bankanom_pipeline import settings
from bankanom_pipeline.sqlmodels.inmemory import FeatureBuilder
from bankanom_pipeline.sqlmodels.runner import Project
from bankanom_pipeline.transactions.generator import load_cities

events = [LogEvent.model_validate(e) for e in json.loads(sys.argv[1])]
features = FeatureBuilder().features(events_frame(events))
out = {
    "modules": [bankanom_pipeline.__file__, bankanom_api.__file__],
    "sql_root": str(settings.sql_root()),
    "models": sorted(Project().models),
    "cities": load_cities().height,
    "data_dir": str(settings.data_dir()),
    "dagster_home": str(settings.dagster_home()),
    "features": json.dumps(features.to_dicts(), default=str, sort_keys=True),
}
os.environ["BANKANOM_HOME"] = sys.argv[2]
out["home_data_dir"] = str(settings.data_dir())
print(json.dumps(out))
"""


def checkout_files() -> list[str]:
    """What a clone holds, with the work not committed yet: tracked and untracked, git-ignored left out."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    )
    return [name for name in listed.stdout.decode().split("\0") if name and os.path.lexists(ROOT / name)]


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_the_wheel_computes_features_outside_the_checkout_and_writes_nothing_where_installed(tmp_path):
    source = tmp_path / "src"
    files = checkout_files()
    for name in files:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", source], check=True)
    (wheel,) = (tmp_path / "dist").glob("bankanom-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "-q", wheel], check=True)
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # the dependencies come from this venv (after the wheel's own folder on sys.path); its editable
    # install of bankanom is not activated there, since .pth files of an added path are not run
    (site / "this_venvs_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # every file the packages read besides their Python, dbt_like_sql/ included (through its link)
    shipped = [
        name
        for name in files
        if name.startswith(("bankanom_pipeline/", "bankanom_api/"))
        and not name.endswith(".py")
        and not (ROOT / name).is_symlink()
    ]
    shipped += [
        f"bankanom_pipeline/{n}"
        for n in files
        if n.startswith("dbt_like_sql/") and n.endswith((".sql", ".csv"))
    ]
    missing = [name for name in shipped if not (site / name).is_file()]
    assert not missing, f"checkout files the wheel does not ship: {missing}"

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BANKANOM_") and k not in ("DAGSTER_HOME", "PYTHONPATH")
    }
    before = snapshot(site)
    probe = subprocess.run(
        [python, "-c", PROBE, json.dumps(EVENTS), str(home)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    out = json.loads(probe.stdout)
    assert snapshot(site) == before, "the installed package wrote into site-packages"

    assert all(Path(m).is_relative_to(site) for m in out["modules"]), out["modules"]
    assert Path(out["sql_root"]).is_relative_to(site)
    assert {"stg_logs", "features_events", "features_transactions", "geo_regions"} <= set(out["models"])
    assert out["cities"] > 0
    assert out["data_dir"] == str(work / "data")
    assert out["dagster_home"] == str(work / "dagster_home")
    assert out["home_data_dir"] == str(home / "data")
    assert not (site / "data").exists() and not (site / "dagster_home").exists()

    # the same features as the checkout computes
    from bankanom_api.predict import events_frame
    from bankanom_api.schemas import LogEvent
    from bankanom_pipeline.sqlmodels.inmemory import FeatureBuilder

    here = FeatureBuilder().features(events_frame([LogEvent.model_validate(e) for e in EVENTS]))
    assert here.height == len(EVENTS)
    assert out["features"] == json.dumps(here.to_dicts(), default=str, sort_keys=True)
