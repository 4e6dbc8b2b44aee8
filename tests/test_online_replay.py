"""``bankanom replay`` on the tiny platform's day: the online engine equals features_events on every feature
of every event, and its vectors scored by the day's models equal scored_events; a changed stored value is
found, named and fails the command. The engine's template, network and session follow DuckDB's regexes
on the day's real messages."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest

from bankanom_pipeline.online.events import network, session, template
from tests import tiny_platform


@pytest.fixture(scope="module")
def scored_day(tiny_world, tmp_path_factory):
    """A copy of the tiny platform with its training day scored by the promoted models, by the body of the
    scored_events asset (partition_scoring.score_partition)."""
    from bankanom_pipeline.detection.partition_scoring import score_partition
    from bankanom_pipeline.detection.sources import LOGS

    root = tmp_path_factory.mktemp("replay")
    data = root / "data"
    shutil.copytree(tiny_world / "base", data)
    detectors = LOGS.registry(data / "models").load_current()
    con = duckdb.connect(str(data / "warehouse.duckdb"))
    try:
        score_partition(con, LOGS, tiny_platform.TRAIN_DAY, detectors)
    finally:
        con.close()
    return tiny_platform.cli_env(data, tiny_world / "landing", root / "home"), data


def _replay(env) -> tuple[int, dict]:
    code, printed = tiny_platform.bankanom(env, "replay", "--date", tiny_platform.TRAIN_DAY, "--json")
    return code, json.loads(printed[printed.index("{") :])


def test_replay_agrees_on_every_feature_and_score(scored_day):
    env, data = scored_day
    code, report = _replay(env)
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT count(*) FROM features_events WHERE partition_date = ?", [tiny_platform.TRAIN_DAY]
    ).fetchone()[0]
    con.close()
    assert code == 0, report
    assert report["agrees"] and report["feature_equal_share"] == 1.0 and report["score_equal_share"] == 1.0
    assert report["compared"] == report["day_events"] == report["scored_compared"] == rows > 4000
    assert not any(report["feature_mismatches"].values()) and not any(report["score_mismatches"].values())
    assert report["events_per_second"] > 0


def test_replay_finds_a_changed_feature(scored_day, tmp_path):
    env, data = scored_day
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    con = duckdb.connect(str(copy / "warehouse.duckdb"))
    victim = con.execute(
        "SELECT event_id FROM features_events WHERE partition_date = ? AND user_id IS NOT NULL ORDER BY event_id LIMIT 1",
        [tiny_platform.TRAIN_DAY],
    ).fetchone()[0]
    con.execute(
        # 1e-8 apart: ten times the tolerance
        "UPDATE features_events SET user_country_share = user_country_share + 1e-8 WHERE event_id = ?",
        [victim],
    )
    con.close()
    code, report = _replay(env | {"BANKANOM_DATA_DIR": str(copy)})
    assert code == 1 and not report["agrees"]
    assert report["feature_mismatches"]["user_country_share"] == 1
    assert sum(report["feature_mismatches"].values()) == 1
    assert report["compared"] - report["feature_equal_events"] == 1
    assert report["worst_feature_mismatches"][0]["event_id"] == victim


def test_derived_keys_equal_duckdbs_on_the_days_events(scored_day):
    _, data = scored_day
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        """SELECT message, template, ip_address, regexp_extract(ip_address, '^(.*)[.:][^.:]*$', 1),
                  nullif(regexp_extract(message, 'SES-[0-9A-Za-z]+'), '')
           FROM stg_logs WHERE partition_date = ?""",
        [tiny_platform.TRAIN_DAY],
    ).fetchall()
    con.close()
    assert len(rows) > 4000
    assert sum("SES-" in r[0] for r in rows) > 50 and sum(r[2] is not None for r in rows) > 1000
    for message, sql_template, ip, sql_network, sql_session in rows:
        assert template(message) == sql_template, message
        assert session(message) == sql_session, message
        if ip is not None:
            assert network(ip) == sql_network, ip
