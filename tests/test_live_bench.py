"""The live bench's own arithmetic (bench/live_bench.py): the flat mock configuration it gives the server
(the rate asked is the rate emitted), the per-minute rate, and how an anomaly instance's incident is
timed (the earlier of its two sightings) and the slow tail broken down; an instance's detection time
(first line -> first flagged event, ``detection_delay``); and its reconciliation of a kept run folder
against the day's batch run (``batch_reconcile``)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from live_bench import (
    TAIL_S,
    batch_reconcile,
    flat_config,
    incident_latency,
    kept_detection_delay,
    per_minute,
)

from bankanom_pipeline.generator.config import load_config
from bankanom_pipeline.generator.engine import Generator
from bankanom_pipeline.generator.sampling import traffic


def _epoch(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp())


def test_the_flat_configuration_emits_the_rate_asked_at_any_time_of_day(tmp_path, monkeypatch):
    monkeypatch.delenv("BANKANOM_MOCK_CONFIG", raising=False)
    default = load_config()
    path = flat_config(tmp_path / "flat.yaml", 100.0)
    flat = load_config(path)  # what mock-server --config reads
    # at the default configuration's trough (a Saturday night), its peak and in a burst: 4.9x apart
    moments = np.array([_epoch("2026-01-10T02:00:00"), _epoch("2026-01-07T14:00:05")])
    assert traffic(default, moments).max() / traffic(default, moments).min() > 4
    assert traffic(flat, moments).tolist() == [100.0, 100.0]
    # everything else is the configuration's own
    assert flat.anomaly_scenarios == default.anomaly_scenarios
    assert flat.global_anomaly_rate == default.global_anomaly_rate and flat.seed == default.seed
    # what the server emits: the generator's stream (anomaly instances carried across its chunks), 10
    # minutes from a Saturday night and from the peak hour's first burst, anomalies included
    for start in moments:
        emitted = sum(
            frame.filter(frame["ts"] < (start + 600) * 1000).height
            for _, frame in Generator(flat).stream(int(start), int(start) + 600, 10)
        )
        assert emitted / 600 == pytest.approx(100, rel=0.05)


def test_events_per_second_in_each_whole_minute():
    times = [100.0 + i * 0.5 for i in range(300)]  # 2/s for 150 s from 100
    assert per_minute(times, 100.0) == [2.0, 2.0]  # the last 30 s: a partial minute, left out
    assert per_minute([], 0.0) == []


def _instance_case():
    """Two instances: A's first flagged event listed by a detail read 60 s late but visible (so in its
    incident) at 1.5 s; B's first flagged event (its second event) in an incident only by a detail read."""
    emitted = {"a1": 0.0, "a2": 5.0, "b1": 10.0, "b2": 11.0, "c1": 20.0}
    instance = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C"}
    scenario = {
        "A": "BANK-013 DDoS Attack",
        "B": "BANK-001 Login Failure Spike",
        "C": "BANK-001 Login Failure Spike",
    }
    flagged = {"a1", "a2", "b2", "c1"}
    seen = {"a1": 1.5, "a2": 6.0, "b1": 10.4, "b2": 11.3, "c1": 20.2}
    incident_seen = {"a1": 61.0, "a2": 61.0, "b2": 30.0}
    in_incident = {"a1", "a2", "c1"}  # b2's membership is not in the store (its incident timed by the read)
    scored_at = {"a1": 1.2, "a2": 5.5, "b2": 11.1, "c1": 20.1}
    return emitted, instance, scenario, flagged, seen, incident_seen, in_incident, scored_at


def test_an_instance_is_timed_by_its_earliest_sighting_and_the_slow_ones_explained():
    got = incident_latency(*_instance_case())
    assert got["in_incidents"] == 3 and got["by_membership"] == 2
    assert sorted(round(v, 3) for v in got["from_flagged"]) == [0.2, 1.5, 19.0]
    assert sorted(round(v, 3) for v in got["from_first"]) == [0.2, 1.5, 20.0]
    tail = got["tail"]
    assert tail["over_s"] == TAIL_S and tail["instances"] == 1  # B: 19 s, timed by its detail read
    assert tail["first_flagged_not_in_incident"] == 1  # B's first flagged event has no stored membership
    login = tail["by_scenario"]["BANK-001 Login Failure Spike"]
    assert login["slow"] == 1 and login["of"] == 2 and login["timed_by"] == {"detail": 1}
    assert list(tail["by_scenario"]) == ["BANK-001 Login Failure Spike"]
    (slowest,) = tail["slowest"]
    assert slowest["instance"] == "B" and slowest["flagged"] == 1 and slowest["events"] == 2
    assert slowest["first_event_to_first_flagged_s"] == 1.0 and slowest["stream_s"] == pytest.approx(0.1)
    # A's events were listed by a detail read 55-59.5 s after their membership was visible
    late = tail["detail_read_later_than_membership"]
    assert late["events"] == 2 and late["max"] == 59.5
    assert tail["stream_s"]["n"] == 3 and tail["stream_s"]["max"] == 1.2


def test_an_instance_without_an_incident_is_not_timed():
    emitted, instance, scenario, flagged, seen, _, _, scored_at = _instance_case()
    got = incident_latency(emitted, instance, scenario, flagged, seen, {}, set(), scored_at)
    assert got["in_incidents"] == 0 and got["from_flagged"] == [] and got["tail"]["instances"] == 0


def _line(event_id: str, second: int, instance: str | None, name: str = "") -> dict:
    ts = dt.datetime(2026, 2, 2, 10, 0, second, tzinfo=dt.UTC).isoformat(timespec="milliseconds")
    details = {"is_anomaly": instance is not None, "instance_id": instance}
    if instance is not None:
        details.update(anomaly_id=name.split()[0], anomaly_name=f"{name.split(maxsplit=1)[1]} (#7)")
    return {"timestamp": ts.replace("+00:00", "Z"), "event_id": event_id, "anomaly_details": details}


def test_detection_delay_runs_from_an_instances_first_line_to_its_first_flagged_event(tmp_path):
    """On a made-up kept run: the delay is in event time, from the instance's first line (flagged or not,
    whatever the file order) to its first event the store flagged (not the truth's is_anomaly, not its
    last flagged one); an instance the store never flagged is undetected, not timed."""
    import json

    lines = [
        _line(
            "a2", 12, "A", "BANK-001 Login Failure Spike"
        ),  # A: first flagged at 12 s, its first line at 0 s
        _line("a1", 0, "A", "BANK-001 Login Failure Spike"),
        _line("n1", 1, None),  # normal traffic, flagged: no instance's
        _line("a3", 40, "A", "BANK-001 Login Failure Spike"),
        _line("d1", 5, "D", "BANK-001 Login Failure Spike"),  # D: 3 s
        _line("d2", 8, "D", "BANK-001 Login Failure Spike"),
        _line("b1", 20, "B", "BANK-013 DDoS Attack"),  # B: its first line flagged, 0 s
        _line("b2", 21, "B", "BANK-013 DDoS Attack"),
        _line("c1", 30, "C", "BANK-013 DDoS Attack"),  # C: never flagged
    ]
    folder = tmp_path / "landing" / "logs" / "2026-02-02"
    folder.mkdir(parents=True)
    (folder / "mock.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "live").mkdir()
    with sqlite3.connect(tmp_path / "live" / "live.sqlite") as store:
        store.execute("CREATE TABLE events (event_id TEXT, ts INTEGER, is_anomaly INTEGER)")
        flagged = {"a2", "a3", "n1", "d2", "b1", "b2"}
        store.executemany(
            "INSERT INTO events VALUES (?, 0, ?)",
            [(line["event_id"], line["event_id"] in flagged) for line in lines],
        )
    store.close()

    got = kept_detection_delay(tmp_path)

    assert got["over_s"] == TAIL_S
    login, ddos = (
        got["by_scenario"]["BANK-001 Login Failure Spike"],
        got["by_scenario"]["BANK-013 DDoS Attack"],
    )
    assert (login["n"], login["p50"], login["max"], login["over_s_share"], login["undetected"]) == (
        2,
        12.0,
        12.0,
        0.5,
        0,
    )
    assert (ddos["n"], ddos["max"], ddos["over_s_share"], ddos["undetected"]) == (1, 0.0, 0.0, 1)
    assert list(got["by_scenario"]) == [
        "BANK-001 Login Failure Spike",
        "BANK-013 DDoS Attack",
    ]  # slowest first
    assert (got["all"]["n"], got["all"]["max"], got["all"]["undetected"]) == (3, 12.0, 1)


def _kept_run(tiny_world, folder: Path, data: Path) -> Path:
    """A live run's folder as the bench keeps it: the mock server's landing files of the day and the
    stream's store, here the tiny platform's two days streamed in order through the stream scorer with the
    promoted pair (as the mock server would deliver them); only the second day's files landed in it."""
    import shutil

    from bankanom_pipeline.live.incidents import LiveIncidents
    from bankanom_pipeline.live.scorer import LiveScorer
    from tests import tiny_platform

    landing = tiny_world / "landing" / "logs"
    shutil.copytree(landing / tiny_platform.DAY, folder / "landing" / "logs" / tiny_platform.DAY)
    scorer = LiveScorer(folder / "live", data / "models", data / "snapshots", incidents=LiveIncidents())
    try:
        tiny_platform.stream_days(scorer, landing, batch=500)
    finally:
        scorer.close()
    return folder


def test_a_kept_run_is_reconciled_against_the_days_batch_run(tiny_world, tmp_path):
    """``--reconcile-only``'s work on a tiny kept run: the day's pipeline_job on a copy of the models' data
    folder, fed the run's landing files, then reconcile_day: every landed line scored by both sides with
    equal scores and flags, no incident missed or extra; the run's folder and the data folder untouched,
    the warehouse copy removed."""
    import shutil

    from tests import tiny_platform

    data = tmp_path / "data"
    shutil.copytree(tiny_world / "base", data)
    run = _kept_run(tiny_world, tmp_path / "rate-x", data)
    store = run / "live" / "live.sqlite"
    before = (store.stat().st_mtime_ns, (data / "warehouse.duckdb").stat().st_mtime_ns)

    got = batch_reconcile(run, data, tmp_path / "scratch", cli=tiny_platform.bankanom)

    assert list(got["days"]) == [tiny_platform.DAY]
    day = got["days"][tiny_platform.DAY]
    r = day["reconciliation"]
    assert day["landing_lines"] == r["live_events"] == r["batch_events"] == r["both"] > 4000
    assert day["batch_rows"]["scored_events"] == r["batch_events"]
    assert (r["only_live"], r["only_batch"], r["late"], r["other_models"]) == (0, 0, 0, 0)
    assert r["scores_equal"] == r["compared"] == r["both"] and r["flags_agree"] == r["both"], r["examples"]
    assert r["missed"] == 0 and r["extra"] == 0 and r["batch_incidents"] > 0, r["examples"]
    assert day["agrees"] is True
    # how live incidents nest over batch's (reconcile_day's figures, formerly the bench's own): every
    # flagged event in a live incident; the largest live incident and the batch incidents it holds
    assert r["batch_partly_outside_live"] == 0
    assert r["batch_whole_in_one_live"] + r["batch_split_over_live"] == r["batch_incidents"]
    assert r["largest_live_events"] > 0 and r["largest_live_batch_incidents"] >= 1
    # the previous day (the training day) was in the copy, as in the live state; the same pair on both sides
    assert day["previous_day"] == tiny_platform.TRAIN_DAY and day["previous_day_raw_rows_before"] > 4000
    (pair,) = day["batch_model_versions"]
    promoted = got["promoted_models"]
    assert pair == f"{promoted['isolation_forest']} {promoted['local_outlier_factor']}"
    assert len(got["live_model_versions"]) == 1
    # the evaluation asset reconciled the same store in the run
    assert day["evaluation_log"] and f"{r['both']} events in both" in day["evaluation_log"][0]
    assert before == (store.stat().st_mtime_ns, (data / "warehouse.duckdb").stat().st_mtime_ns)
    assert not (tmp_path / "scratch" / "data").exists()
    assert (tmp_path / "scratch" / f"batch-{tiny_platform.DAY}.log").is_file()

    # an event the stream lost: the batch run finds it, and the day no longer agrees
    shutil.copytree(run, tmp_path / "lossy")
    with sqlite3.connect(tmp_path / "lossy" / "live" / "live.sqlite") as live:
        (lost,) = live.execute(
            "SELECT event_id FROM events WHERE partition_date = ? AND is_anomaly = 0 LIMIT 1",
            (tiny_platform.DAY,),
        ).fetchone()
        live.execute("DELETE FROM events WHERE event_id = ?", (lost,))
    lossy = batch_reconcile(tmp_path / "lossy", data, tmp_path / "scratch", cli=tiny_platform.bankanom)
    r = lossy["days"][tiny_platform.DAY]["reconciliation"]
    assert (r["only_batch"], r["only_live"], r["both"]) == (1, 0, day["reconciliation"]["both"] - 1)
    assert (
        r["examples"]["only_batch_events"] == [lost] and lossy["days"][tiny_platform.DAY]["agrees"] is False
    )


def test_a_folder_without_a_live_run_is_refused(tmp_path):
    (tmp_path / "run" / "landing" / "logs" / "2026-02-02").mkdir(parents=True)
    with pytest.raises(ValueError, match="no live store"):
        batch_reconcile(tmp_path / "run", tmp_path / "data", tmp_path / "scratch")
