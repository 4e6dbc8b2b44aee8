"""POST /events, the online state's one writer, in process: its own key scope, each event's outcome
(ingested, duplicate, late, too_late) and the counters /metrics exports, refused events counted by
reason, scores from the promoted models, and durability (journal, checkpoints, restart, the snapshot's
checkpoint). Two generated days (tests/online_world.py), no pipeline run."""

from __future__ import annotations

import datetime as dt
import re
import shutil

import duckdb
import numpy as np
import orjson
import polars as pl
import pytest

from bankanom_api.online import STATE, as_event
from bankanom_api.schemas import LogEvent
from bankanom_pipeline.detection.config import MODEL_NAMES, default_detection_config
from bankanom_pipeline.detection.explain import furthest_from_normal, furthest_from_normal_of
from bankanom_pipeline.detection.scoring import score, score_values
from bankanom_pipeline.online.engine import FEATURES, OnlineEngine
from bankanom_pipeline.serving import online_checkpoint
from bankanom_pipeline.serving.snapshot import SnapshotPublisher
from tests import online_world
from tests.api_server import api_client
from tests.online_world import HI, KEY, H, client
from tests.tiny_platform import TRAIN_DAY


@pytest.fixture(scope="module")
def world():
    """The two days' accepted lines, in order, and models trained on the first (online_world.built)."""
    return online_world.built()


def post(app, events, **params):
    response = app.post("/events", json={"events": events}, headers=HI, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def peek(app, events) -> np.ndarray:
    return app.app.state.online.peek([as_event(LogEvent.model_validate(e)) for e in events])


def metric(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


# -- the key scope ------------------------------------------------------------------------------------


def test_only_ingest_keys_post_events_and_they_do_nothing_else(tmp_path, world):
    first, _, _ = world
    with client(tmp_path) as app:
        refused = app.post("/events", json={"events": first[:1]}, headers=H)
        assert refused.status_code == 403 and "BANKANOM_INGEST_KEYS" in refused.json()["detail"]
        assert app.post("/events", json={"events": first[:1]}).status_code == 401
        assert app.post("/events", json={"events": first[:1]}, headers=HI).status_code == 200
        for response in (
            app.get("/incidents", headers=HI),
            app.post("/predict", json={"events": first[:1]}, headers=HI),
        ):
            assert response.status_code == 403 and "may only ingest" in response.json()["detail"]
        assert app.get("/ready", headers=H).status_code in (200, 503)  # the reader's key still reads
    with api_client(tmp_path / "closed", KEY) as closed:  # no ingest keys: nobody ingests
        assert closed.post("/events", json={"events": first[:1]}, headers=H).status_code == 403
        assert closed.post("/events", json={"events": first[:1]}, headers=HI).status_code == 401


# -- outcomes and counters -----------------------------------------------------------------------------


def test_each_outcome_is_answered_and_counted_in_metrics(tmp_path, world):
    first, _, _ = world
    events = first[:200]
    with client(tmp_path) as app:
        body = post(app, events)
        assert [r["outcome"] for r in body["results"]] == ["ingested"] * 200
        assert body["versions"] is None and "no promoted models" in body["unscored"]
        assert post(app, events[:3])["results"][0]["outcome"] == "duplicate"
        newest = dt.datetime.fromisoformat(events[-1]["timestamp"])
        late = {
            **events[5],
            "event_id": "late-1",
            "timestamp": (newest - dt.timedelta(minutes=30)).isoformat(),
        }
        too_late = {
            **events[5],
            "event_id": "late-2",
            "timestamp": (newest - dt.timedelta(days=2)).isoformat(),
        }
        # a field the features do not read may hold any JSON value (here an integer no journal line holds)
        odd = {
            **events[6],
            "event_id": "odd-1",
            "timestamp": events[-1]["timestamp"],
            "metrics": {"x": 10**30},
        }
        results = post(app, [late, too_late, odd])["results"]
        assert [r["outcome"] for r in results] == ["late", "too_late", "ingested"]
        assert "older than the newest" in results[1]["reason"]
        text = app.get("/metrics", headers=H).text
        counted = {
            c: metric(text, "bankanom_online_events_total", counter=c)
            for c in ("ingested", "duplicate", "late", "too_late")
        }
        assert counted == {"ingested": 201, "duplicate": 3, "late": 1, "too_late": 1}
        users = {e["user_id"] for e in events if e.get("user_id")}
        services = {e["source_service"] for e in events}
        assert metric(text, "bankanom_online_events_total", counter="new_user") == len(users)
        assert metric(text, "bankanom_online_events_total", counter="new_service") == len(services)


def test_an_event_dated_in_the_future_is_refused_and_does_not_shut_out_the_present(tmp_path, world):
    first, _, _ = world
    events = first[:20]
    far = {**events[0], "event_id": "future-1", "timestamp": "2999-01-01T00:00:00Z"}
    with client(tmp_path, max_future_s=60) as app:
        results = post(app, [*events[:10], far])["results"]
        assert [r["outcome"] for r in results] == ["ingested"] * 10 + ["invalid"]
        assert results[-1]["reason"].startswith("future: dated more than 60 s ahead")
        # the state's newest time did not move to 2999: the day's next events are still in time
        assert {r["outcome"] for r in post(app, events[10:])["results"]} == {"ingested"}
        assert app.app.state.online.counters()["future"] == 1
        assert (
            metric(app.get("/metrics", headers=H).text, "bankanom_online_events_total", counter="future") == 1
        )
        journaled = b"".join(p.read_bytes() for p in (tmp_path / "online").glob("journal-*.jsonl"))
        assert b"future-1" not in journaled and journaled.count(b"\n") == 20


def test_predicting_an_event_older_than_the_state_keeps_is_a_409_naming_context_false(tmp_path, world):
    first, _, models = world
    with client(tmp_path, models) as app:
        post(app, first[:50])
        old = dt.datetime.fromisoformat(first[49]["timestamp"]) - dt.timedelta(days=2)
        event = {**first[10], "event_id": "old-1", "timestamp": old.isoformat()}
        response = app.post("/predict", json={"events": [event]}, headers=H)
        assert response.status_code == 409, response.text
        (detail,) = response.json()["detail"]
        assert detail["type"] == "too_late" and "context=false" in detail["msg"]
        assert app.post(
            "/predict", params={"context": "false"}, json={"events": [event]}, headers=H
        ).is_success


def test_refused_events_are_counted_by_reason(tmp_path, world):
    first, _, _ = world
    good = first[0]
    missing = {k: v for k, v in good.items() if k != "message"}
    with client(tmp_path) as app:
        for route, headers in (("/events", HI), ("/predict", H)):
            assert app.post(route, json={"events": [missing, missing]}, headers=headers).status_code == 422
            non_finite = b'{"events": [{"event_id": "n1", "timestamp": "2026-02-01T00:00:00Z", "source_service": "auth-service", "log_level": "INFO", "message": "m", "metrics": {"response_time_ms": NaN}}]}'
            response = app.post(
                route, content=non_finite, headers={**headers, "content-type": "application/json"}
            )
            assert response.status_code == 422 and response.json()["detail"][0]["type"] == "finite_number"
        text = app.get("/metrics", headers=H).text
        for route in ("/events", "/predict"):
            assert metric(text, "bankanom_api_refused_events_total", reason="missing_field", route=route) == 2
            assert metric(text, "bankanom_api_refused_events_total", reason="non_finite", route=route) == 1
        # nothing refused reached the state
        assert app.app.state.online.counters()["ingested"] == 0


# -- scores ------------------------------------------------------------------------------------------


def test_the_numpy_path_scores_exactly_as_scoring_score(world):
    first, second, models = world
    config = default_detection_config()
    values = online_world.engine_features(first + second)
    frame = pl.DataFrame(values, schema=list(FEATURES), orient="row")
    expected = score(frame, models.detectors, config)
    for rows in (slice(None), slice(4000, 4001)):  # a day in one call, and one event alone
        got = score_values(values[rows], list(FEATURES), models.detectors, config)
        for field in ("isolation_forest", "local_outlier_factor", "ensemble", "is_anomaly"):
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field)[rows], err_msg=field)
    assert expected.is_anomaly.any() and not expected.is_anomaly.all()
    # and the top features of the flagged, as the frame path ranks them (a missing value is a null there)
    flagged = np.flatnonzero(expected.is_anomaly)
    names = list(MODEL_NAMES)
    by_frame = furthest_from_normal(frame[flagged].fill_nan(None), models.detectors, names, 5, values=True)
    by_values = furthest_from_normal_of(values[flagged], list(FEATURES), models.detectors, names, 5)
    assert by_values.records() == by_frame.records()


def test_ingested_events_get_the_scores_of_their_point_in_time_features(tmp_path, world):
    first, _, models = world
    config = default_detection_config()
    with client(tmp_path, models) as app:
        body = post(app, first[:1500])
    assert body["unscored"] is None and body["versions"] == models.versions
    expected = score_values(
        online_world.engine_features(first[:1500]), list(FEATURES), models.detectors, config
    )
    assert [r["ensemble"] for r in body["results"]] == expected.ensemble.tolist()
    assert [r["is_anomaly"] for r in body["results"]] == expected.is_anomaly.tolist()


def test_models_of_another_feature_set_are_refused_naming_both_versions(tmp_path, world):
    first, _, models = world
    manifests = {n: {**m, "feature_set_version": "f0reign"} for n, m in models.manifests.items()}
    foreign = type(models)(models.detectors, manifests, models.loaded_at)
    with client(tmp_path, foreign) as app:
        refused = app.post("/predict", json={"events": first[:1]}, headers=H)
        assert refused.status_code == 503
        detail = refused.json()["detail"]
        assert "f0reign" in detail and OnlineEngine.FEATURE_SET_VERSION in detail
        body = post(app, first[:2])  # still ingested, unscored, saying why
        assert [r["outcome"] for r in body["results"]] == ["ingested"] * 2
        assert "f0reign" in body["unscored"] and body["results"][0]["ensemble"] is None


# -- durability ----------------------------------------------------------------------------------------


def test_a_restart_loses_nothing_and_gives_the_same_state(tmp_path, world):
    first, second, _ = world
    events, probes = first + second[:2000], second[2000:2300]
    half = len(events) // 2
    with client(tmp_path / "never", checkpoint_events=10**9) as never:
        for start in range(0, len(events), 700):
            post(never, events[start : start + 700])
        expected, counters = peek(never, probes), never.app.state.online.counters()

    restarted = tmp_path / "restarted"
    with client(restarted, checkpoint_events=1000) as app:  # checkpoints along the way
        for start in range(0, half, 700):
            post(app, events[start : min(start + 700, half)])
        assert (restarted / "online" / STATE).exists()
        peek_at_half = peek(app, events[half : half + 50])
        # a crash: the folder as it is now, without the shutdown's checkpoint, and a line it was writing
        shutil.copytree(restarted / "online", tmp_path / "crashed" / "online")
        last = max((tmp_path / "crashed" / "online").glob("journal-*.jsonl"))
        with last.open("ab") as f:
            f.write(b'{"event_id": "never-answered", "ts": 17')
    with client(restarted, checkpoint_events=1000) as app:  # a clean restart
        online = app.get("/ready", headers=H).json()["online"]
        assert "its own checkpoint" in online["restored_from"] and online["ingesting"] is True
        assert online["high_water"]["event_id"] == events[half - 1]["event_id"]
        post(app, events[half:])
        np.testing.assert_array_equal(peek(app, probes), expected)
        assert app.app.state.online.counters() == counters
    for _ in range(2):  # and a second start after the crash (a journal file of its own each time)
        with client(tmp_path / "crashed", checkpoint_events=10**9) as app:
            np.testing.assert_array_equal(peek(app, events[half : half + 50]), peek_at_half)
    with client(tmp_path / "crashed", checkpoint_events=1000) as app:
        post(app, events[half:])
        np.testing.assert_array_equal(peek(app, probes), expected)
        assert app.app.state.online.counters() == counters
    journals = sorted(p.name for p in (restarted / "online").glob("journal-*.jsonl"))
    assert len(journals) == 1, journals  # the files a checkpoint covers are dropped


def test_a_second_process_may_not_ingest_into_the_same_folder(tmp_path, world):
    second = client(tmp_path)
    with client(tmp_path), pytest.raises(RuntimeError, match="another process owns the online state"):
        second.__enter__()


def _validated_logs(events: list[dict], day: str) -> duckdb.DuckDBPyConnection:
    """A warehouse holding ``events`` as validated_logs rows of partition ``day``."""
    con = duckdb.connect()
    rows = [
        {
            "partition_date": dt.date.fromisoformat(day),
            "event_id": e["event_id"],
            "ts": LogEvent.model_validate(e).utc_timestamp(),
            **{
                k: e.get(k)
                for k in (
                    "source_service",
                    "log_level",
                    "message",
                    "correlation_id",
                    "user_id",
                    "ip_address",
                    "geo_location",
                )
            },
            "metrics": orjson.dumps(e.get("metrics") or {}).decode(),
        }
        for e in events
    ]
    frame = pl.DataFrame(rows, schema_overrides={"ts": pl.Datetime("us")})  # noqa: F841 (read by DuckDB)
    con.execute("CREATE TABLE validated_logs AS SELECT * FROM frame")
    return con


def test_the_snapshots_checkpoint_starts_the_state_then_the_journal_is_reapplied(tmp_path, world):
    first, second, _ = world
    con = _validated_logs(first, TRAIN_DAY)
    through = dt.date.fromisoformat(TRAIN_DAY)
    publisher = SnapshotPublisher(tmp_path / "snapshots")
    pointer = publisher.publish(
        con, through, 1, checkpoint=lambda path: online_checkpoint.build(con, through, path)
    )
    assert pointer["checkpoint"]["events"] == len(first)
    probes = second[1000:1200]
    with client(tmp_path / "fresh") as control:  # the same events through POST /events
        post(control, first)
        post(control, second[:1000])
        expected = peek(control, probes)

    shutil.copytree(tmp_path / "snapshots", tmp_path / "served" / "snapshots")
    with client(tmp_path / "served") as app:
        assert "snapshot's checkpoint" in app.app.state.online.restored_from
        post(app, second[:1000])
    with client(tmp_path / "served") as app:  # its own checkpoint is now the newer
        assert "its own checkpoint" in app.app.state.online.restored_from
        np.testing.assert_array_equal(peek(app, probes), expected)
    # a damaged checkpoint is refused by its sha256 and the state starts empty
    (tmp_path / "snapshots" / pointer["checkpoint"]["file"]).write_bytes(b"damaged")
    shutil.copytree(tmp_path / "snapshots", tmp_path / "damaged" / "snapshots")
    with client(tmp_path / "damaged") as app:
        assert app.app.state.online.restored_from.startswith("nothing")


def test_a_publication_without_a_checkpoint_keeps_the_days_and_old_ones_are_pruned(tmp_path, world):
    first, _, _ = world
    con = _validated_logs(first, TRAIN_DAY)
    day = dt.date.fromisoformat(TRAIN_DAY)
    publisher = SnapshotPublisher(tmp_path, keep=2)
    built = [
        publisher.publish(con, day, 1, checkpoint=lambda p: online_checkpoint.build(con, day, p))
        for _ in range(3)
    ]
    kept = publisher.publish(con, day, 1)  # transaction_snapshot: the same day, no checkpoint of its own
    assert kept["checkpoint"] == built[-1]["checkpoint"]
    assert publisher.verified_checkpoint(kept) == tmp_path / kept["checkpoint"]["file"]
    assert len(list(tmp_path.glob("checkpoint-*.ckpt"))) == 2  # pruned like the snapshots, never the current
    later = publisher.publish(
        con, day + dt.timedelta(days=1), 1
    )  # another day: that checkpoint is not its state
    assert "checkpoint" not in later
    nothing = duckdb.connect()
    assert online_checkpoint.build(nothing, day, tmp_path / "none.ckpt") is None  # no validated_logs
