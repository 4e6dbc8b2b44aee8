"""POST /events forwarded to the live stream, the online state's one owner, in process against the real
stream service (tests/online_world.py): its own key scope, each event's outcome (ingested, duplicate,
late, too_late, invalid) committed to the live store and counted in /metrics, refused events counted by
reason, scores from the promoted models, several API workers sharing one state, 503 when the stream is
down, and the state starting from the snapshot's checkpoint. Two generated days, no pipeline run."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import duckdb
import httpx
import numpy as np
import orjson
import polars as pl
import pytest

from bankanom_api import schemas
from bankanom_api.posted import wire
from bankanom_api.schemas import LogEvent
from bankanom_pipeline.detection.config import MODEL_NAMES, default_detection_config
from bankanom_pipeline.detection.explain import furthest_from_normal, furthest_from_normal_of
from bankanom_pipeline.detection.scoring import score, score_values
from bankanom_pipeline.live import feature_rows
from bankanom_pipeline.live.lines import as_event
from bankanom_pipeline.online.engine import FEATURES, OnlineEngine
from bankanom_pipeline.serving import online_checkpoint
from bankanom_pipeline.serving.snapshot import SnapshotPublisher
from tests import online_world
from tests.api_server import api_client, free_port
from tests.online_world import HI, INGEST, KEY, UNLIMITED, H, client
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
    """The features the stream's state gives ``events`` now (its /peek, as /predict asks it)."""
    return app.stream_scorer.peek([as_event_dict(e) for e in events])


def as_event_dict(event: dict) -> dict:
    return wire(LogEvent.model_validate(event))


def metric(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}\{{{re.escape(wanted)}\}} (\S+)$" if labels else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


# -- the key scope ------------------------------------------------------------------------------------


def test_only_ingest_keys_post_events_and_they_do_nothing_else(tmp_path, world):
    first, *_ = world
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


def test_each_outcome_is_answered_committed_and_counted_in_metrics(tmp_path, world):
    first, *_ = world
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
        # a field the features do not read may hold any JSON value (here an integer no JSON writer of
        # 64-bit numbers holds): it is not forwarded
        odd = {
            **events[6],
            "event_id": "odd-1",
            "timestamp": events[-1]["timestamp"],
            "metrics": {"x": 10**30},
        }
        results = post(app, [late, too_late, odd])["results"]
        assert [r["outcome"] for r in results] == ["late", "too_late", "ingested"]
        assert "older than the newest" in results[1]["reason"]
        # what the stream committed, read back from its live store as /metrics exports it
        text = app.get("/metrics", headers=H).text
        assert metric(text, "bankanom_stream_up") == 1
        assert metric(text, "bankanom_stream_events") == 202  # 200 + late + odd
        assert metric(text, "bankanom_stream_refused_events", reason="duplicate") == 3
        assert metric(text, "bankanom_stream_refused_events", reason="too_late") == 1
        assert 0 <= metric(text, "bankanom_stream_status_age_seconds") < 60
        # the stream's own counters, through /ready
        stream = app.get("/ready", headers=H).json()["stream"]
        assert stream["reachable"] is True
        counters = stream["status"]["engine_counters"]
        assert {c: counters.get(c) for c in ("ingested", "duplicate", "late", "too_late")} == {
            "ingested": 201,
            "duplicate": 3,
            "late": 1,
            "too_late": 1,
        }


def test_an_event_dated_in_the_future_is_refused_and_does_not_shut_out_the_present(tmp_path, world):
    first, *_ = world
    events = first[:20]
    far = {**events[0], "event_id": "future-1", "timestamp": "2999-01-01T00:00:00Z"}
    with client(tmp_path, stream={"max_future_s": 60}) as app:
        results = post(app, [*events[:10], far])["results"]
        assert [r["outcome"] for r in results] == ["ingested"] * 10 + ["invalid"]
        assert results[-1]["reason"].startswith("future")
        # the state's newest time did not move to 2999: the day's next events are still in time
        assert {r["outcome"] for r in post(app, events[10:])["results"]} == {"ingested"}
        text = app.get("/metrics", headers=H).text
        assert metric(text, "bankanom_stream_refused_events", reason="future") == 1
        assert metric(text, "bankanom_stream_events") == 20


def test_predicting_an_event_older_than_the_state_keeps_is_a_409_naming_context_false(tmp_path, world):
    first, *_ = world
    with client(tmp_path, models=True) as app:
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
    first, *_ = world
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
        # nothing refused reached the stream
        assert app.stream_scorer.status()["engine_counters"].get("ingested", 0) == 0


# -- scores ------------------------------------------------------------------------------------------


def test_the_numpy_path_scores_exactly_as_scoring_score(world):
    first, second, models, _ = world
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


def test_ingested_events_get_the_scores_of_their_point_in_time_features_and_show_live(tmp_path, world):
    first, _, models, _ = world
    config = default_detection_config()
    with client(tmp_path, models=True) as app:
        body = post(app, first[:1500])
        latest = app.get("/scores/latest", params={"limit": 1000}, headers=H).json()
    assert body["unscored"] is None and body["versions"] == models.versions
    expected = score_values(
        online_world.engine_features(first[:1500]), list(FEATURES), models.detectors, config
    )
    assert [r["ensemble"] for r in body["results"]] == expected.ensemble.tolist()
    assert [r["is_anomaly"] for r in body["results"]] == expected.is_anomaly.tolist()
    # committed before the answer: the live store serves them at once, newest first, marked live
    assert latest["total"] == 1500 and all(item["live"] for item in latest["items"])
    by_id = {r["event_id"]: r for r in body["results"]}
    newest = first[1500 - 1000 : 1500][::-1]
    assert [i["event_id"] for i in latest["items"]] == [e["event_id"] for e in newest]
    assert all(i["ensemble_score"] == by_id[i["event_id"]]["ensemble"] for i in latest["items"])
    assert {i["if_version"] for i in latest["items"]} == {models.versions["isolation_forest"]}


def test_models_of_another_feature_set_are_refused_naming_both_versions(tmp_path, world):
    first, *_ = world
    with client(tmp_path, models=True) as app:
        # an API whose registry's pair was trained on another feature set
        foreign = app.app.state.serving.models
        manifests = {n: {**m, "feature_set_version": "f0reign"} for n, m in foreign.manifests.items()}
        app.app.state.serving.models = type(foreign)(foreign.detectors, manifests, foreign.loaded_at)
        refused = app.post("/predict", json={"events": first[:1]}, headers=H)
        assert refused.status_code == 503
        detail = refused.json()["detail"]
        assert "f0reign" in detail and OnlineEngine.FEATURE_SET_VERSION in detail


# -- one state for every worker, and none when the stream is down --------------------------------------


def test_several_api_workers_share_the_streams_one_state(tmp_path, world):
    first, second, *_ = world
    shutil.copytree(online_world.built()[3], tmp_path / "other" / "models")
    with client(tmp_path, models=True) as one:
        settings = {
            "ingest_keys": [INGEST],
            "rate_limit": UNLIMITED,
            "stream_url": one.app.state.stream.url,
            "stream_key": online_world.STREAM_KEY,
            "live_dir": tmp_path / "live",
        }
        with api_client(tmp_path / "other", KEY, **settings) as other:
            post(one, first[:300])
            post(other, first[300:600])
            # either worker sees both halves: in the context of /predict and in /scores/latest
            probe = {**second[0], "event_id": "probe", "timestamp": first[599]["timestamp"]}
            a = one.post("/predict", json={"events": [probe]}, params={"explain": "true"}, headers=H)
            b = other.post("/predict", json={"events": [probe]}, params={"explain": "true"}, headers=H)
            assert a.status_code == b.status_code == 200, a.text
            assert a.json()["predictions"] == b.json()["predictions"]
            for app in (one, other):
                assert app.get("/scores/latest", headers=H).json()["total"] == 600
            assert post(other, first[:1])["results"][0]["outcome"] == "duplicate"


def test_without_the_stream_ingest_and_context_answer_503_and_the_rest_serves(tmp_path, world):
    first, *_ = world
    shutil.copytree(online_world.built()[3], tmp_path / "models")
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with api_client(tmp_path, KEY, ingest_keys=[INGEST], stream_url=down, live_dir=tmp_path / "live") as app:
        for response in (
            app.post("/events", json={"events": first[:1]}, headers=HI),
            app.post("/predict", json={"events": first[:1]}, headers=H),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["detail"] == f"no live stream at {down}: start bankanom stream"
        assert app.post(
            "/predict", json={"events": first[:1]}, params={"context": "false"}, headers=H
        ).is_success
        stream = app.get("/ready", headers=H).json()["stream"]
        assert stream["reachable"] is False and "start bankanom stream" in stream["error"]
        assert metric(app.get("/metrics", headers=H).text, "bankanom_stream_up") == 0


def test_a_stream_with_another_key_is_a_503_saying_so(tmp_path, world):
    first, *_ = world
    with client(tmp_path, stream_key="not-the-streams") as app:
        response = app.post("/events", json={"events": first[:1]}, headers=HI)
        assert response.status_code == 503 and "BANKANOM_STREAM_KEY" in response.json()["detail"]


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


def test_the_stream_starts_from_the_snapshots_checkpoint(tmp_path, world):
    first, second, *_ = world
    con = _validated_logs(first, TRAIN_DAY)
    through = dt.date.fromisoformat(TRAIN_DAY)
    publisher = SnapshotPublisher(tmp_path / "served" / "snapshots")
    pointer = publisher.publish(
        con, through, 1, checkpoint=lambda path: online_checkpoint.build(con, through, path)
    )
    assert pointer["checkpoint"]["events"] == len(first)
    probes = second[1000:1200]
    with client(tmp_path / "fresh") as control:  # the same events through POST /events
        post(control, first)
        post(control, second[:1000])
        expected = peek(control, probes)
    with client(tmp_path / "served") as app:
        assert "checkpoint" in app.stream_scorer.restored_from
        post(app, second[:1000])
        np.testing.assert_array_equal(peek(app, probes), expected)


def test_a_publication_without_a_checkpoint_keeps_the_days_and_old_ones_are_pruned(tmp_path, world):
    first, *_ = world
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


# -- the stream's feature rows ------------------------------------------------------------------------


def test_feature_rows_carry_the_array_itself_and_refuse_a_torn_body():
    values = np.array([[1.5, np.nan, -0.0, 1e308], [np.pi, 0.1, 7.0, -np.inf]])
    body, headers = feature_rows.encode(values, "v1", ["a", "b", "c", "d"])
    assert len(body) == values.size * 8
    version, columns, back = feature_rows.decode(headers, body)
    assert (version, columns) == ("v1", ["a", "b", "c", "d"])
    assert np.array_equal(back, values, equal_nan=True) and np.signbit(back[0, 2])
    with pytest.raises(ValueError, match="not whole rows"):
        feature_rows.decode(headers, body[:-8])
    with pytest.raises(ValueError, match="feature rows for 3 columns"):
        feature_rows.encode(values, "v1", ["a", "b", "c"])


def test_predict_scores_the_streams_peek_bit_for_bit_and_peek_answers_json_unless_asked(tmp_path, world):
    first, second, *_ = world
    with client(tmp_path, models=True) as app:
        post(app, first)
        events = second[:50]
        expected = peek(app, events)
        response = app.post("/predict", json={"events": events}, params={"explain": "true"}, headers=H)
        assert response.status_code == 200, response.text
        served = np.array(
            [
                [np.nan if v is None else v for v in p["features"].values()]
                for p in response.json()["predictions"]
            ]
        )
        assert list(response.json()["predictions"][0]["features"]) == list(FEATURES)
        assert np.array_equal(served, expected, equal_nan=True)
        # the stream itself: raw rows to the API's client, JSON to anyone else, the same numbers
        settings = app.app.state.settings
        body = {"events": [as_event_dict(e) for e in events]}
        key = {"X-Stream-Key": settings.stream_key}
        raw = httpx.post(
            f"{settings.stream_url}/peek", json=body, headers={**key, "accept": feature_rows.FEATURE_ROWS}
        )
        assert raw.headers["content-type"] == feature_rows.FEATURE_ROWS
        version, columns, rows = feature_rows.decode(raw.headers, raw.content)
        assert version == OnlineEngine.FEATURE_SET_VERSION and columns == list(FEATURES)
        assert np.array_equal(rows, expected, equal_nan=True)
        as_json = httpx.post(f"{settings.stream_url}/peek", json=body, headers=key).json()
        assert as_json["columns"] == list(FEATURES)
        assert np.array_equal(np.array(as_json["features"], dtype=float), expected, equal_nan=True)


def test_the_stream_takes_the_apis_validated_events_only_with_its_key_and_checks_their_shape(tmp_path, world):
    first, second, *_ = world
    with client(tmp_path, models=True) as app:
        post(app, first)
        events = second[:50]
        expected = peek(app, events)  # validated by the stream itself, from the JSON lines
        url = app.app.state.settings.stream_url + "/peek"
        validated = [as_event(LogEvent.model_validate(e)) for e in events]
        key = {"X-Stream-Key": app.app.state.settings.stream_key}
        ask = {"content-type": feature_rows.EVENTS, "accept": feature_rows.FEATURE_ROWS}

        def peek_validated(events, headers=key):
            return httpx.post(url, content=feature_rows.encode_events(events), headers={**headers, **ask})

        answer = peek_validated(validated)
        assert answer.status_code == 200, answer.text
        assert np.array_equal(
            feature_rows.decode(answer.headers, answer.content)[2], expected, equal_nan=True
        )
        assert peek_validated(validated, {}).status_code == 401
        # a few events are peeked on the service's event loop, unless a batch holds the state: then they
        # wait for it in a thread, as a larger peek does
        one = peek_validated(validated[:1])
        assert np.array_equal(feature_rows.decode(one.headers, one.content)[2], expected[:1], equal_nan=True)
        with ThreadPoolExecutor(1) as pool:
            with app.stream_scorer.lock:
                waiting = pool.submit(peek_validated, validated[:1])
                time.sleep(0.3)
                assert not waiting.done()
            one = waiting.result(timeout=30)
        assert np.array_equal(feature_rows.decode(one.headers, one.content)[2], expected[:1], equal_nan=True)
        torn = httpx.post(url, content=b"[[1, 2]]", headers={**key, **ask})
        assert torn.status_code == 422 and "fields" in torn.json()["detail"]
        # the engine still checks each field's type, and the state's lateness
        for bad, field, kind in [
            (validated[0]._replace(event_id=5), "event", "missing_field"),
            (validated[0]._replace(ts="2026-01-06"), "event", "bad_timestamp"),
            (validated[0]._replace(metrics={"response_time_ms": "slow"}), "metrics", "bad_metrics"),
            (validated[0]._replace(ts=validated[0].ts - 10 * 86_400_000_000), "timestamp", "too_late"),
        ]:
            refused = peek_validated([validated[1], bad])
            assert refused.status_code in (409, 422), refused.text
            assert refused.json()["detail"][0]["loc"] == ["body", "events", 1, field]
            assert refused.json()["detail"][0]["type"] == kind
        # /predict sends that form: its features are the stream's own validation's, bit for bit
        response = app.post("/predict", json={"events": events}, params={"explain": "true"}, headers=H)
        assert response.status_code == 200, response.text
        served = [
            [np.nan if v is None else v for v in p["features"].values()]
            for p in response.json()["predictions"]
        ]
        assert np.array_equal(np.array(served), expected, equal_nan=True)


def test_a_stream_without_a_key_refuses_validated_events_and_the_api_sends_it_json(tmp_path, world):
    first, second, *_ = world
    shutil.copytree(online_world.built()[3], tmp_path / "models")
    with online_world.stream_service(tmp_path, key=None) as (url, scorer):
        scorer.ingest_posted([as_event_dict(e) for e in first])
        events = second[:20]
        body = feature_rows.encode_events([as_event(LogEvent.model_validate(e)) for e in events])
        refused = httpx.post(
            f"{url}/peek", content=body, headers={"content-type": feature_rows.EVENTS, "X-Stream-Key": "any"}
        )
        assert refused.status_code == 415 and "BANKANOM_STREAM_KEY" in refused.json()["detail"]
        settings = {
            "rate_limit": UNLIMITED,
            "stream_url": url,
            "stream_key": "a-key-the-stream-ignores",
            "live_dir": tmp_path / "live",
        }
        with api_client(tmp_path, KEY, **settings) as app:
            for _ in range(2):  # the first call learns the stream validates, the second asks it so at once
                response = app.post(
                    "/predict", json={"events": events}, params={"explain": "true"}, headers=H
                )
                assert response.status_code == 200, response.text
                served = [
                    [np.nan if v is None else v for v in p["features"].values()]
                    for p in response.json()["predictions"]
                ]
                assert np.array_equal(
                    np.array(served), scorer.peek([as_event_dict(e) for e in events]), equal_nan=True
                )
            assert app.app.state.stream._validated_events is False


def test_a_stream_that_accepts_but_never_answers_is_a_503_within_the_timeout():
    import socket
    import time

    from bankanom_api.stream import StreamClient, StreamUnavailable

    with socket.socket() as listener:  # accepts connections (the kernel's backlog), never reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"

        async def ask() -> None:
            stream = StreamClient(url, "k", timeout=0.3)
            began = time.monotonic()
            with pytest.raises(StreamUnavailable, match="did not answer in time") as refused:
                await stream.peek([LogEvent.model_validate(schemas.EXAMPLE_EVENT)])
            assert refused.value.status_code == 503 and time.monotonic() - began < 5
            await stream.aclose()
            with pytest.raises(StreamUnavailable, match="is stopping"):
                await stream.status()

        anyio.run(ask)
