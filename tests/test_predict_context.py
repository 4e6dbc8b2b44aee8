"""POST /predict with context: an event is scored against its entities' state as POST /events built it,
the state the live stream owns (the API forwards to the real stream service: tests/online_world.py).

The equality with the pipeline (the tiny platform's day run through pipeline_job, its stored scores; an
end-to-end test) and, fast, on generated days: a lone event from the middle of an attack carries the
attack's context, and predicting never changes the state."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil

import duckdb
import numpy as np
import pytest

from bankanom_api.posted import wire
from bankanom_api.schemas import LogEvent
from bankanom_pipeline.online.events import to_micros
from tests import online_world
from tests.api_server import accepted_lines
from tests.online_world import HI, KEY, H, client
from tests.tiny_platform import DAY, TRAIN_DAY

BATCH = 1000


def ingest(app, events: list[dict]) -> list[dict]:
    results = []
    for start in range(0, len(events), BATCH):
        response = app.post("/events", json={"events": events[start : start + BATCH]}, headers=HI)
        assert response.status_code == 200, response.text
        results += response.json()["results"]
    return results


def predict(app, events: list[dict], **params) -> list[dict]:
    response = app.post("/predict", json={"events": events}, headers=H, params=params)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def in_order(events: list[dict]) -> list[dict]:
    return sorted(events, key=lambda e: (to_micros(e["timestamp"].replace("Z", "+00:00")), e["event_id"]))


# -- fast: generated days, models on the engine's features ---------------------------------------------


@pytest.fixture(scope="module")
def world():
    """The two days' accepted lines, in order, and models trained on the first (online_world.built)."""
    return online_world.built()


def _attack(events: list[dict], scenario: str) -> list[int]:
    return [i for i, e in enumerate(events) if (e.get("anomaly_details") or {}).get("anomaly_id") == scenario]


def _network(event: dict) -> str:
    return event["ip_address"].rsplit(".", 1)[0]


def _failed_login(event: dict) -> bool:
    return event["message"].startswith("Login failed")


def test_a_lone_event_from_the_middle_of_an_attack_carries_the_attacks_context(tmp_path, world):
    first, second, *_ = world
    attack = [i for i in _attack(second, "BANK-002") if _failed_login(second[i])]
    assert len(attack) > 20

    def attack_before(i: int) -> int:  # the attack's failed logins from the event's network in 10 minutes
        ts = to_micros(second[i]["timestamp"])
        return sum(
            1
            for j in attack
            if j < i
            and _network(second[j]) == _network(second[i])
            and ts - to_micros(second[j]["timestamp"]) <= 600e6
        )

    middle = max(attack, key=attack_before)  # the attack in full swing
    lone, before = second[middle], attack_before(middle)
    assert before >= 5
    with client(tmp_path, models=True) as app:
        ingest(app, first + second[:middle])
        (alone,) = predict(app, [lone], explain="true")
        (batch_only,) = predict(app, [lone], explain="true", context="false")
    context, without = alone["features"], batch_only["features"]
    # the network's failed logins and users of the last ten minutes are the attack's, not the event's alone
    assert context["network_failed_logins_10m"] >= before + 1, context
    assert context["network_distinct_users_10m"] >= 3, context
    assert without["network_failed_logins_10m"] == 1 and without["network_distinct_users_10m"] == 1, without
    assert alone["top_features"] and batch_only["top_features"]  # explain=true lists them for every event


def test_top_features_are_listed_for_anomalous_events_or_on_request(tmp_path, world):
    first, second, *_ = world
    with client(tmp_path, models=True) as app:
        ingest(app, first)
        predictions = predict(app, second[:300])
        explained = predict(app, second[:5], explain="true")
    flagged = [p for p in predictions if p["is_anomaly"]]
    assert flagged and len(flagged) < len(predictions)
    assert all(len(p["top_features"]) == 5 for p in flagged)
    assert all(p["top_features"] == [] and "features" not in p for p in predictions if not p["is_anomaly"])
    assert all(len(p["top_features"]) == 5 and len(p["features"]) > 50 for p in explained)


def test_predicting_never_changes_the_state(tmp_path, world):
    first, second, *_ = world
    attack = [second[i] for i in _attack(second, "BANK-002")]
    split = _attack(second, "BANK-002")[-1] + 1
    normal = [e for e in second[split:] if not (e.get("anomaly_details") or {}).get("is_anomaly")][:500]
    probes = [wire(LogEvent.model_validate(e)) for e in second[split + 500 : split + 700]]
    outcomes = {}
    for kind in ("control", "predicted"):
        with client(tmp_path / kind, models=True) as app:
            ingest(app, first + second[: split // 2])
            if kind == "predicted":  # 1,000 predictions of the attack's events, 50 a request
                cycled = [attack[i % len(attack)] for i in range(1000)]
                for start in range(0, 1000, 50):
                    batch = [
                        {**e, "event_id": f"{e['event_id']}-{start + i}"}
                        for i, e in enumerate(cycled[start : start + 50])
                    ]
                    predict(app, batch)
            results = ingest(app, normal)
            scorer = app.stream_scorer
            outcomes[kind] = (results, scorer.peek(probes), scorer.status()["engine_counters"])
    (control, control_peek, control_counts), (after, after_peek, after_counts) = outcomes.values()
    assert after == control
    np.testing.assert_array_equal(after_peek, control_peek)
    assert after_counts == control_counts


# -- end to end: the pipeline's stored scores ---------------------------------------------------------


@pytest.fixture(scope="module")
def scored_day(tiny_day_run):
    """The tiny platform with pipeline_job run on DAY (scores stored, a snapshot and its checkpoint
    published: the ``tiny_day_run`` fixture, read-only); both days' accepted lines in order, and DAY's
    stored scores by event id."""
    con = duckdb.connect(str(tiny_day_run / "warehouse.duckdb"), read_only=True)
    try:
        train, day = in_order(accepted_lines(con, TRAIN_DAY)), in_order(accepted_lines(con, DAY))
        stored = {
            row[0]: row[1:]
            for row in con.execute(
                "SELECT event_id, if_score, lof_score, ensemble_score, is_anomaly FROM scored_events "
                "WHERE partition_date = ?",
                [DAY],
            ).fetchall()
        }
    finally:
        con.close()
    return tiny_day_run, train, day, stored


def _equal_scores(got: dict, stored: tuple) -> bool:
    if_score, lof_score, ensemble_score, is_anomaly = stored
    close = all(
        abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
        for a, b in (
            (got["isolation_forest"], if_score),
            (got["local_outlier_factor"], lof_score),
            (got["ensemble"], ensemble_score),
        )
    )
    return close and got["is_anomaly"] == is_anomaly


@pytest.mark.e2e
def test_predicting_then_ingesting_a_day_gives_the_pipelines_stored_scores(tmp_path, scored_day):
    data, train, day, stored = scored_day
    assert len(day) == len(stored) > 1000
    shutil.copytree(data / "models", tmp_path / "models")  # no snapshot: the state starts empty
    half = len(day) // 2
    with client(tmp_path) as app:
        ingest(app, train)  # the day before: what the pipeline's windows read back into
        ingested = ingest(app, day[:half])
        predicted = []
        for event in day[half:]:
            predicted += predict(app, [event])
            ingest(app, [event])
    assert [r["outcome"] for r in ingested] == ["ingested"] * half
    wrong = [r["event_id"] for r in ingested + predicted if not _equal_scores(r, stored[r["event_id"]])]
    assert wrong == [], f"{len(wrong)} of {len(day)} events scored unlike the pipeline, e.g. {wrong[:5]}"


@pytest.mark.e2e
def test_the_published_checkpoint_holds_the_days_state(tmp_path, scored_day):
    """pipeline_job's api_snapshot published the engine's state at the end of DAY: a stream starting from
    it has the state of one that ingested both days."""
    data, train, day, _ = scored_day
    # events after the day's last (a late one would need more of the day before than the state keeps)
    after = (dt.datetime.fromisoformat(day[-1]["timestamp"]) + dt.timedelta(minutes=1)).isoformat()
    probes = [
        wire(LogEvent.model_validate({**e, "event_id": f"probe-{i}", "timestamp": after}))
        for i, e in enumerate(day[-300:])
    ]
    with client(tmp_path / "fed") as fed:
        ingest(fed, train + day)
        expected = fed.stream_scorer.peek(probes)
    shutil.copytree(data / "snapshots", tmp_path / "served" / "snapshots")
    with client(tmp_path / "served") as served:
        assert "checkpoint" in served.stream_scorer.restored_from
        np.testing.assert_array_equal(served.stream_scorer.peek(probes), expected)


def test_the_consoles_event_form_scores_in_context_too(tmp_path, world):
    first, second, *_ = world
    with client(tmp_path, models=True) as app:
        ingest(app, first + second[:100])
        flagged = [p for p in predict(app, second[100:400]) if p["is_anomaly"]]
        expected = flagged[0]
        event = next(e for e in second if e["event_id"] == expected["event_id"])
        form = app.get("/console/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        login = app.post("/console/login", data={"csrf": csrf, "api_key": KEY}, follow_redirects=False)
        assert login.status_code == 303
        csrf = re.search(r'name="csrf" value="([^"]+)"', app.get("/console/predict").text).group(1)
        page = app.post("/console/predict/event", data={"csrf": csrf, "event": json.dumps(event)})
    assert page.status_code == 200 and 'id="event-result"' in page.text, page.text[-3000:]
    assert "Decision: anomalous" in page.text
    assert all(f["feature"] in page.text for f in expected["top_features"])
