"""The stream scorer: validate → engine → score → one commit; refusals with reasons; exactly once across a
restart (a checkpoint, a crash mid-batch); models swapped between batches; the internal service."""

from __future__ import annotations

import datetime as dt
import functools
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import polars as pl
import pytest
from fastapi.testclient import TestClient

from bankanom_pipeline.detection.config import MODEL_NAMES, default_detection_config
from bankanom_pipeline.detection.models import TRAINERS
from bankanom_pipeline.detection.registry import CURRENT, Registry
from bankanom_pipeline.detection.scoring import score_values
from bankanom_pipeline.detection.space import FeatureSpace
from bankanom_pipeline.ingest.raw_logs import KNOWN_FIELDS
from bankanom_pipeline.live.lines import LABEL_FIELDS, from_line
from bankanom_pipeline.live.runner import Runner
from bankanom_pipeline.live.scorer import LiveScorer, LiveStateError, PeekRefused
from bankanom_pipeline.live.service import create_app
from bankanom_pipeline.live.sources import Item
from bankanom_pipeline.live.store import LiveStore
from bankanom_pipeline.online.engine import FEATURES, OnlineEngine
from tests.tiny_platform import DAY, RATE, TRAIN_DAY


@functools.lru_cache(maxsize=1)
def world() -> tuple[list[bytes], list[bytes]]:
    """Both tiny days' generated lines (labels included, as a source delivers them), each day in the order
    the generator emits them (by time)."""
    from tests.conftest import generated_days

    root = Path(tempfile.mkdtemp(prefix="live-world-"))
    try:
        generated_days(root, {TRAIN_DAY: 100, DAY: 101}, RATE)
        days = []
        for day in (TRAIN_DAY, DAY):
            lines = [
                line
                for p in sorted((root / "logs" / day).glob("*.jsonl"))
                for line in p.read_bytes().splitlines()
            ]
            days.append(sorted(lines, key=lambda line: orjson.loads(line)["timestamp"]))
        return days[0], days[1]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@functools.lru_cache(maxsize=2)
def detectors(seed: int) -> dict:
    """A model pair trained on the engine's features of the training day."""
    engine, rows = OnlineEngine(), []
    for line in world()[0]:
        outcome = engine.ingest(from_line(line))
        if outcome.features is not None:
            rows.append(outcome.features)
    frame = pl.DataFrame(np.asarray(rows, dtype=np.float64), schema=list(FEATURES), orient="row")
    base = default_detection_config()
    # small and seeded: real detectors, trained in a second; another seed, other numbers
    config = base.model_copy(
        update={
            "isolation_forest": base.isolation_forest.model_copy(
                update={"n_estimators": 30, "random_state": seed}
            ),
            "local_outlier_factor": base.local_outlier_factor.model_copy(
                update={"train_rows": 1000, "random_state": seed}
            ),
        }
    )
    trained = {}
    for name in MODEL_NAMES:
        space = FeatureSpace.fit(
            frame, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
        )
        trained[name] = TRAINERS[name](space.matrix(frame), space, config)
    return trained


def promote(models_dir: Path, seed: int) -> dict[str, str]:
    registry = Registry(models_dir)
    versions = {
        name: registry.save(d, params={}, window=(TRAIN_DAY, TRAIN_DAY), rows=1, metrics={}).version
        for name, d in detectors(seed).items()
    }
    registry.promote(versions)
    return versions


def items(lines: list[bytes], start: int = 0) -> list[Item]:
    return [Item(f"1:{start + i}", line, 1000.0 + i) for i, line in enumerate(lines)]


def batches(all_items: list[Item], size: int) -> list[list[Item]]:
    return [all_items[i : i + size] for i in range(0, len(all_items), size)]


def new_scorer(root: Path, **kwargs) -> LiveScorer:
    return LiveScorer(root / "live", root / "models", root / "snapshots", **kwargs)


def crash(scorer: LiveScorer) -> None:
    """What a kill leaves: no checkpoint, nothing flushed beyond the last commit."""
    scorer.store.close()
    scorer._owner.close()


def stored(root: Path) -> list[tuple]:
    with LiveStore(root / "live" / "live.sqlite", readonly=True) as store:
        return store.con.execute(
            "SELECT seq, event_id, status, source_offset, isolation_forest, local_outlier_factor, "
            "ensemble_score, is_anomaly, model_versions FROM events ORDER BY seq"
        ).fetchall()


def test_the_labels_are_what_raw_logs_keeps_out_of_validated_logs():
    from bankanom_pipeline.live.lines import LogEvent

    assert set(LABEL_FIELDS) == set(KNOWN_FIELDS) - set(LogEvent.model_fields) - {"metrics"}
    line = world()[1][0]
    assert b"anomaly_details" in line  # the generator writes them; the engine's event has no place for them


def test_a_batch_is_scored_and_committed_with_every_refusal_counted(tmp_path):
    promote(tmp_path / "models", 0)
    lines = world()[1][:300]
    first = orjson.loads(lines[0])
    bad = [
        b"{not json",
        b"[1, 2]",
        orjson.dumps({**first, "event_id": "bad-level", "log_level": "LOUD"}),
        lines[5],  # a duplicate
        orjson.dumps({**first, "event_id": "from-the-future", "timestamp": "2099-01-01T00:00:00Z"}),
        orjson.dumps({**first, "event_id": "too-old", "timestamp": "2020-01-01T00:00:00Z"}),
    ]
    scorer = new_scorer(tmp_path)
    try:
        results = scorer.process(items(lines + bad), "mock", lag=(3, 1.5))
    finally:
        scorer.close()
    assert [r["outcome"] for r in results[:300]].count("ingested") + [
        r["outcome"] for r in results[:300]
    ].count("late") == 300
    assert [r["outcome"] for r in results[300:]] == [
        "invalid",
        "invalid",
        "invalid",
        "duplicate",
        "invalid",
        "too_late",
    ]
    with LiveStore(tmp_path / "live" / "live.sqlite", readonly=True) as store:
        assert store.offset("mock") == f"1:{len(lines) + len(bad) - 1}"
        reasons = [r[0] for r in store.con.execute("SELECT reason FROM refused ORDER BY id")]
        status = store.meta_json("status")
        row = store.con.execute(
            "SELECT partition_date, scored_at >= emitted_at, model_versions, unscored FROM events LIMIT 1"
        ).fetchone()
    assert reasons[0].startswith("invalid: line: not JSON")
    assert reasons[1] == "invalid: line: a log line is a JSON object, not list"
    assert reasons[2].startswith("invalid: log_level: ")
    assert reasons[3] == "duplicate"
    assert reasons[4].startswith("future: dated ")
    assert reasons[5].startswith("too_late: ")
    assert status["refused"] == {"invalid": 3, "duplicate": 1, "future": 1, "too_late": 1}
    assert (status["events"], status["lag_events"], status["lag_seconds"]) == (300, 3, 1.5)
    assert row[0] == DAY and row[1] == 1 and row[3] is None
    assert json.loads(row[2]) == {n: v for n, v in Registry(tmp_path / "models").current().items()}
    # the scores are the promoted pair's on the engine's point-in-time features, as the API computes them
    engine = OnlineEngine()
    features = np.asarray([engine.ingest(from_line(line)).features for line in lines], dtype=np.float64)
    pair = scorer.models.pair
    expected = score_values(features, FEATURES, pair.detectors, default_detection_config())
    got = np.asarray([r[4] for r in stored(tmp_path)])
    assert np.array_equal(got, expected.isolation_forest)


def test_a_batch_gives_what_its_events_get_one_at_a_time(tmp_path):
    """The stream ingests a batch in one engine call and /predict peeks it in one: every result, refusal
    (reason included: a too-late event's distance to the newest event before it), stored row, counter
    and peeked vector as the same events one at a time; a refused peek names its event's index."""
    promote(tmp_path / "models", 0)
    lines = world()[1][:400]
    first = orjson.loads(lines[0])
    old = orjson.dumps({**first, "event_id": "too-old", "timestamp": "2020-01-01T00:00:00Z"})
    mixed = list(lines[:300])
    for i in range(20, 280, 37):  # late events: each a few places after its time
        mixed[i], mixed[i + 3] = mixed[i + 3], mixed[i]
    mixed[40:40] = [old, b"{not json", lines[7]]  # too late, invalid, a duplicate of an earlier line
    mixed[250:250] = [orjson.dumps({**orjson.loads(old), "event_id": "too-old-2"}), lines[260]]
    scorers = {}
    for name, size in (("batch", len(mixed)), ("alone", 1)):
        root = tmp_path / name
        shutil.copytree(tmp_path / "models", root / "models")
        scorer = scorers[name] = new_scorer(root)
        results = [r for b in batches(items(mixed), size) for r in scorer.process(b, "mock")]
        scorer.results = results
    try:
        batch, alone = scorers["batch"], scorers["alone"]
        assert batch.results == alone.results
        outcomes = [r["outcome"] for r in batch.results]
        assert {"late", "duplicate", "too_late", "invalid"} <= set(outcomes)
        assert dict(batch.engine.counters) == dict(alone.engine.counters)
        assert stored(tmp_path / "batch") == stored(tmp_path / "alone")
        reasons = {}
        for name in scorers:
            with LiveStore(tmp_path / name / "live" / "live.sqlite", readonly=True) as store:
                reasons[name] = store.con.execute(
                    "SELECT source_offset, event_id, reason FROM refused ORDER BY id"
                ).fetchall()
        assert reasons["batch"] == reasons["alone"]
        too_late = [r for _, e, r in reasons["batch"] if (e or "").startswith("too-old")]
        assert len(too_late) == 2 and too_late[0] != too_late[1]  # each against the newest before it
        # peeks: the next lines (some of them late) and a too-late one, together and one at a time
        ahead = [from_line(line) for line in lines[300:400]]
        ahead[10], ahead[30] = ahead[30], ahead[10]
        together = batch.peek_validated(ahead)
        one_by_one = np.vstack([batch.peek_validated([e]) for e in ahead])
        assert together.shape == (100, len(FEATURES))
        assert np.array_equal(together, one_by_one, equal_nan=True)
        assert np.array_equal(together, alone.peek_validated(ahead), equal_nan=True)
        few = batch.peek_validated(ahead[:5])  # fewer than a frame's worth: the row-by-row path
        assert np.array_equal(few, one_by_one[:5], equal_nan=True)
        refused = [*ahead[:5], from_line(old), ahead[6]._replace(ts="soon")]
        with pytest.raises(PeekRefused) as error:
            batch.peek_validated(refused)
        assert (error.value.status, error.value.detail["loc"][2]) == (409, 5)
        with pytest.raises(PeekRefused) as error:
            batch.peek_validated([*ahead[:70], ahead[6]._replace(ts="soon"), from_line(old)])
        assert (error.value.status, error.value.detail["loc"][2]) == (422, 70)
        assert dict(batch.engine.counters) == dict(alone.engine.counters)  # peeks change nothing
    finally:
        for scorer in scorers.values():
            scorer.close()


def run_through(root: Path, batch_list: list[list[Item]], **kwargs) -> LiveScorer:
    scorer = new_scorer(root, **kwargs)
    for batch in batch_list:
        scorer.process(batch, "mock")
    return scorer


def resume_from_committed(scorer: LiveScorer, all_items: list[Item], size: int) -> None:
    """What the runner does on start: resume the source after the committed offset."""
    committed = scorer.committed_offset("mock")
    after = -1 if committed is None else int(committed.split(":")[1])
    for batch in batches([i for i in all_items if int(i.offset.split(":")[1]) > after], size):
        scorer.process(batch, "mock")


def test_exactly_once_across_a_crash_mid_flow(tmp_path):
    """Kill after a checkpoint, then kill mid-batch (the engine ahead of the store): the restarted
    scorers store every event once, with the scores, states and counters of one uninterrupted run."""
    promote(tmp_path / "models", 0)
    shutil.copytree(tmp_path / "models", tmp_path / "crashing" / "models")
    all_items = items(world()[1][:3000])
    size = 97
    whole = run_through(tmp_path, batches(all_items, size))

    root = tmp_path / "crashing"
    half = batches(all_items, size)[: len(all_items) // size // 2]
    first = run_through(root, half, checkpoint_events=1000)
    first.wait_for_checkpoint()  # written by a forked child while the batches went on
    assert first.checkpoint_seq is not None and first.since_checkpoint > 0  # the replay has work to do
    assert first.checkpoint_seq % size == 0 and first.checkpoint_seq >= 1000
    crash(first)

    second = new_scorer(root, checkpoint_events=1000)
    assert second.restored_from.startswith("its own checkpoint engine-")
    committed = second.committed_offset("mock")
    real_commit = second.store.commit

    def commit_then_fail(rows, *args, **kwargs):  # a kill between folding a batch in and its commit
        raise OSError("killed mid-batch")

    second.store.commit = commit_then_fail
    with pytest.raises(LiveStateError):
        after = int(committed.split(":")[1])
        second.process([i for i in all_items if int(i.offset.split(":")[1]) > after][:size], "mock")
    with pytest.raises(LiveStateError, match="stopped ingesting"):
        second.process(all_items[-1:], "mock")
    second.store.commit = real_commit
    second.close()  # no checkpoint of an engine ahead of its store
    assert second.checkpoint_seq == first.checkpoint_seq

    third = new_scorer(root, checkpoint_events=1000)
    resume_from_committed(third, all_items, size)

    assert stored(root) == stored(tmp_path)  # every event once, same seq, same scores
    assert len(stored(root)) == sum(1 for r in stored(tmp_path)) > 2900
    assert third.engine.counters == whole.engine.counters
    assert third.engine.high_water_mark == whole.engine.high_water_mark
    probe = [orjson.loads(line) for line in world()[1][-50:]]
    for event in probe:
        event["event_id"] += "-probe"
    assert np.array_equal(third.peek(probe), whole.peek(probe), equal_nan=True)
    third.close()
    whole.close()


def test_a_clean_stop_checkpoints_and_a_restart_replays_nothing(tmp_path):
    lines = world()[1][:500]
    scorer = run_through(tmp_path, batches(items(lines), 100))
    assert scorer.models.problem.startswith("no promoted models")
    scorer.close()
    again = new_scorer(tmp_path)
    assert again.restored_from == "its own checkpoint engine-000000000500.ckpt"
    assert again.since_checkpoint == 0 and again.seq == 500
    assert sorted(p.name for p in (tmp_path / "live").glob("*.ckpt")) == ["engine-000000000500.ckpt"]
    rows = stored(tmp_path)
    assert all(r[4] is None and r[8] is None for r in rows)
    with LiveStore(tmp_path / "live" / "live.sqlite", readonly=True) as store:
        assert store.con.execute("SELECT DISTINCT unscored FROM events").fetchall() == [
            ("no promoted models yet: run train_job",)
        ]
        assert store.meta_json("checkpoint") == {"file": "engine-000000000500.ckpt", "seq": 500}
    with pytest.raises(LiveStateError, match="another bankanom stream owns"):
        new_scorer(tmp_path)
    again.close()


def test_models_are_swapped_between_batches(tmp_path, caplog):
    lines = items(world()[1][:400])
    scorer = new_scorer(tmp_path)
    try:
        scorer.process(lines[:100], "mock")
        first = promote(tmp_path / "models", 0)
        scorer.models.check()  # what the watcher's thread does every poll
        scorer.process(lines[100:200], "mock")
        second = promote(tmp_path / "models", 1)
        scorer.models.check()
        scorer.process(lines[200:300], "mock")
        # a pointer to a version that cannot load: logged, the pair that scores is kept
        (tmp_path / "models" / CURRENT).write_text(
            json.dumps(
                {
                    "isolation_forest": "isolation_forest-missing",
                    "local_outlier_factor": second["local_outlier_factor"],
                }
            )
        )
        scorer.models.check()
        scorer.process(lines[300:350], "mock")
        # a pair of another feature set (written by hand: promote refuses it): kept out, the pair stays
        registry = Registry(tmp_path / "models")
        stale = {
            n: registry.save(d, params={}, window=(TRAIN_DAY, TRAIN_DAY), rows=1, metrics={}).version
            for n, d in detectors(1).items()
        }
        manifest = tmp_path / "models" / stale["isolation_forest"] / "manifest.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "feature_set_version": "0ld"}))
        (tmp_path / "models" / CURRENT).write_text(json.dumps(stale))
        scorer.models.check()
        scorer.process(lines[350:], "mock")
    finally:
        scorer.close()
    assert "could not load the promoted models (kept the current pair)" in caplog.text
    assert "trained on feature-set version 0ld" in caplog.text
    used = [r[8] and json.loads(r[8]) for r in stored(tmp_path)]
    assert used[:100] == [None] * 100
    assert used[100:200] == [first] * 100
    assert used[200:] == [second] * 200
    scores = [r[4] for r in stored(tmp_path)]
    assert scores[150] != scores[250] or scores[160] != scores[260]  # two pairs, two sets of numbers
    assert scorer.models.swaps == 2


class ListSource:
    """A source over a list of items, as the Source protocol asks: fetch never repeats an offset."""

    name = "mock"

    def __init__(self, all_items: list[Item]):
        self.items, self.after, self.acknowledged = all_items, None, []

    def resume(self, committed):
        self.after = -1 if committed is None else int(committed.split(":")[1])

    def fetch(self, max_events, wait_s):
        pending = [i for i in self.items if int(i.offset.split(":")[1]) > self.after][:max_events]
        if not pending:
            time.sleep(wait_s)
            return []
        self.after = int(pending[-1].offset.split(":")[1])
        return pending

    def acknowledge(self, offset):
        self.acknowledged.append(offset)

    def lag(self):
        return sum(1 for i in self.items if int(i.offset.split(":")[1]) > self.after), 0.0

    def stats(self):
        return {"after": self.after}

    def close(self):
        pass


def test_the_runner_and_the_service(tmp_path):
    promote(tmp_path / "models", 0)
    day = world()[1]
    source = ListSource(items(day[:1000]))
    scorer = new_scorer(tmp_path)
    runner = Runner(scorer, source, max_events=150, wait_s=0.01)
    client = TestClient(create_app(scorer, runner, "secret"))
    H = {"X-Stream-Key": "secret"}
    runner.start()
    try:
        deadline = time.time() + 30
        while scorer.seq < 1000 and time.time() < deadline:
            time.sleep(0.02)
        assert scorer.seq == 1000
        assert source.acknowledged[-1] == "1:999" and len(source.acknowledged) == 7  # 150 at a time
        assert client.get("/status").status_code == 401
        assert client.get("/status", headers={"X-Stream-Key": "wrong"}).status_code == 401
        status = client.get("/status", headers=H).json()
        assert status["events"] == 1000 and status["runner"]["running"] and status["runner"]["batches"] == 7

        posted = [orjson.loads(line) for line in day[1000:1010]]
        for event in posted:
            event.pop("anomaly_details", None)
        peek = client.post("/peek", json={"events": posted[:3]}, headers=H)
        assert peek.status_code == 200 and peek.json()["columns"] == list(FEATURES)
        ingested = client.post("/ingest", json={"events": posted}, headers=H).json()
        assert [r["outcome"] for r in ingested["results"]] == ["ingested"] * 10
        assert ingested["versions"] == Registry(tmp_path / "models").current()
        assert all(isinstance(r["ensemble"], float) for r in ingested["results"])
        again = client.post("/ingest", json={"events": posted[:1]}, headers=H).json()
        assert again["results"][0]["outcome"] == "duplicate"
        old = {**posted[0], "event_id": "old", "timestamp": "2020-01-01T00:00:00Z"}
        too_late = client.post("/peek", json={"events": [old]}, headers=H)
        assert too_late.status_code == 409 and too_late.json()["detail"][0]["type"] == "too_late"
        invalid = client.post("/peek", json={"events": [{**old, "log_level": "LOUD"}]}, headers=H)
        assert invalid.status_code == 422 and invalid.json()["detail"][0]["msg"].startswith(
            "invalid: log_level"
        )
        assert client.post("/ingest", content=b"{}", headers=H).status_code == 422
    finally:
        runner.stop()
        scorer.close()
    rows = stored(tmp_path)
    assert len(rows) == 1010 and [r[3] for r in rows[-10:]] == [str(s) for s in range(1001, 1011)]
    with LiveStore(tmp_path / "live" / "live.sqlite", readonly=True) as store:
        assert store.offset("mock") == "1:999" and store.offset("api") is None
        assert store.con.execute("SELECT reason, source FROM refused").fetchall() == [("duplicate", "api")]


def test_a_failing_loop_stops_and_says_why(tmp_path):
    source = ListSource(items(world()[1][:50]))
    scorer = new_scorer(tmp_path)
    stopped = threading.Event()

    def broken_fetch(max_events, wait_s):
        raise RuntimeError("the bus went away")

    source.fetch = broken_fetch
    runner = Runner(scorer, source, wait_s=0.01)
    runner.on_failure = stopped.set
    runner.start()
    assert stopped.wait(10)
    assert runner.failure == "RuntimeError: the bus went away" and not runner.alive
    scorer.close()


def test_flagged_events_reach_the_live_incidents_in_the_same_commit(tmp_path):
    from bankanom_pipeline.live.incidents import LiveIncidents

    promote(tmp_path / "models", 0)
    all_items = items(world()[1][:2500])
    scorer = new_scorer(tmp_path, incidents=LiveIncidents())
    for batch in batches(all_items[:1500], 250):
        scorer.process(batch, "mock")
    crash(scorer)
    again = new_scorer(tmp_path, incidents=LiveIncidents())  # restores the open groups from the store
    resume_from_committed(again, all_items, 250)
    status = again.status()
    again.close()
    with LiveStore(tmp_path / "live" / "live.sqlite", readonly=True) as store:
        flagged = {r[0] for r in store.con.execute("SELECT event_id FROM events WHERE is_anomaly = 1")}
        members = [r[0] for r in store.con.execute("SELECT event_id FROM incident_events")]
        incidents = store.con.execute("SELECT count(*) FROM incidents WHERE merged_into IS NULL").fetchone()[
            0
        ]
        assert store.meta_json("status")["open_incidents"] is not None
    assert flagged and sorted(members) == sorted(flagged)  # each flagged event in one incident, once
    assert 0 < status["open_incidents"] <= incidents


def test_retention_keeps_the_newest_days_and_never_reuses_a_seq(tmp_path, caplog):
    caplog.set_level("INFO", "bankanom.stream")
    first_day, second_day = world()
    scorer = new_scorer(tmp_path, retention_days=1)
    try:
        scorer.process(items(first_day[:100]), "mock")
        scorer.process(items(second_day[:100], start=100), "mock")
    finally:
        scorer.close()
    rows = stored(tmp_path)
    assert [r[0] for r in rows] == list(range(101, 201))  # the first day went, its seqs with it
    # checkpointed before the prune: a restart replays nothing that is gone
    assert [p.name for p in (tmp_path / "live").glob("*.ckpt")] == ["engine-000000000200.ckpt"]
    assert caplog.text.index("checkpoint engine-000000000200.ckpt written") < caplog.text.index("retention:")
    with LiveStore(tmp_path / "live" / "live.sqlite", readonly=True) as store:
        assert {r[0] for r in store.con.execute("SELECT DISTINCT partition_date FROM events")} == {DAY}
    with pytest.raises(ValueError, match="at least 1"):
        new_scorer(tmp_path / "other", retention_days=0)


@pytest.mark.e2e
def test_the_stream_process_stops_cleanly_and_restarts_from_its_checkpoint(tmp_path):
    """`bankanom stream --source none` as its own process: it logs ready, answers /status, ingests what is
    posted; SIGTERM checkpoints; the next start restores that checkpoint and replays nothing."""
    import os
    import sys

    import httpx

    from tests.api_server import free_port
    from tests.servers import start, stop

    port = free_port()
    env = {
        **os.environ,
        "BANKANOM_HOME": str(tmp_path),
        "BANKANOM_STREAM_KEY": "k",
        "BANKANOM_STREAM_URL": f"http://127.0.0.1:{port}",
    }
    command = [sys.executable, "-m", "bankanom_pipeline.cli", "stream", "--source", "none"]
    posted = [orjson.loads(line) for line in world()[1][:20]]

    def run(log: Path, then) -> str:
        process = start(command, env, log)
        try:
            deadline = time.time() + 60
            while "ready: serving" not in log.read_text() and time.time() < deadline:
                assert process.poll() is None, log.read_text()
                time.sleep(0.1)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Stream-Key": "k"}) as client:
                return then(client)
        finally:
            stop(process)
            assert process.returncode in (0, -15, 143), log.read_text()

    def first(client):
        body = client.post("/ingest", json={"events": posted}).json()
        assert [r["outcome"] for r in body["results"]] == ["ingested"] * 20
        return client.get("/status").json()["restored_from"]

    assert run(tmp_path / "first.log", first) == "nothing (empty state)"
    assert "checkpoint engine-000000000020.ckpt written" in (tmp_path / "first.log").read_text()

    def second(client):
        status = client.get("/status").json()
        again = client.post("/ingest", json={"events": posted[:1]}).json()["results"][0]["outcome"]
        return status, again

    status, again = run(tmp_path / "second.log", second)
    assert status["restored_from"] == "its own checkpoint engine-000000000020.ckpt"
    assert status["events"] == 20 and status["since_checkpoint"] == 0 and again == "duplicate"


def test_without_a_checkpoint_of_its_own_it_starts_from_the_snapshots(tmp_path):
    """The pipeline published a snapshot whose engine checkpoint holds the day's first 1,000 events; the
    stream, started from it, gets 500 of those again and 1,000 new ones, and is killed before a checkpoint
    of its own: the restart restores the snapshot's and folds in the stored events, the same state."""
    import duckdb

    from bankanom_pipeline.serving.snapshot import SnapshotPublisher

    day = world()[1]
    batch_engine = OnlineEngine()
    for line in day[:1000]:
        batch_engine.ingest(from_line(line))

    def checkpoint(path: Path) -> dict:
        batch_engine.checkpoint(path)
        return {"high_water": list(batch_engine.high_water_mark)}

    con = duckdb.connect()
    SnapshotPublisher(tmp_path / "snapshots").publish(con, dt.date.fromisoformat(DAY), 1, checkpoint)
    con.close()

    scorer = new_scorer(tmp_path)
    assert scorer.restored_from.startswith("the snapshot's checkpoint checkpoint-")
    for batch in batches(items(day[500:2000]), 100):
        scorer.process(batch, "mock")
    assert scorer.refused == {"duplicate": 500}
    crash(scorer)
    again = new_scorer(tmp_path)
    assert again.restored_from.startswith("the snapshot's checkpoint checkpoint-")
    assert again.engine.high_water_mark == scorer.engine.high_water_mark
    assert again.engine.counters["ingested"] == scorer.engine.counters["ingested"]
    probe = [{**orjson.loads(line), "event_id": f"probe-{i}"} for i, line in enumerate(day[2000:2050])]
    assert np.array_equal(again.peek(probe), scorer.peek(probe), equal_nan=True)
    again.close()
