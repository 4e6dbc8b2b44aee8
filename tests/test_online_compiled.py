"""The compiled engine (online/compiled.py, online/kernel.py) gives every event the Python engine's vector
(each feature within replay's 1e-9 relative), and features_events' on the tiny platform's day through
replay's comparison: on that day, on two generated days with the attack scenarios, and on random streams
with ties, fractional sums, missing values and days of gaps, in batches of any size (one event included).
Late events (out of order within the lateness allowed, ties on one microsecond ordered by id), duplicates,
too-late and invalid events get the Python engine's outcome and vector, also on shuffled random streams;
the state stays bounded by the retention; peek gives what ingest then gives; a checkpoint restored
continues as if uninterrupted."""

from __future__ import annotations

import random
from collections import Counter

import duckdb
import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.online import kernel, replay
from bankanom_pipeline.online.compiled import CompiledEngine, frame_of
from bankanom_pipeline.online.engine import FEATURES, OnlineEngine
from bankanom_pipeline.online.events import Event
from tests import tiny_platform
from tests.test_online_engine import BASE, MIN, _random_events, _reference, ev

DAY_US = 24 * 60 * MIN


def _compiled(frame: pl.DataFrame | list[Event], sizes, engine: CompiledEngine | None = None):
    """``frame`` (or ``Event``s: batches below ROWS_BELOW are then prepared row by row, larger ones with
    polars) through a compiled engine in batches of the given sizes (cycled); the statuses and the
    features of every row."""
    engine = engine or CompiledEngine()
    statuses, rows = [], []
    start, i = 0, 0
    while start < len(frame):
        size = sizes[i % len(sizes)]
        if isinstance(frame, list):
            batch = engine.ingest_many(frame[start : start + size])
        else:
            batch = engine.ingest_frame(frame.slice(start, size))
        statuses.extend(kernel.STATUSES[s] for s in batch.status)
        rows.append(batch.features)
        start += size
        i += 1
    return engine, statuses, np.concatenate(rows)


def _python(events: list[Event]):
    engine = OnlineEngine()
    outcomes = engine.ingest_many(events)
    return engine, outcomes


NEW = ("ingested", "new_user", "new_ip", "new_service")


def _same_counters(python: OnlineEngine, compiled: CompiledEngine) -> None:
    """The entity counters too: the kernel's sweep runs at the Python engine's events."""
    assert {k: python.counters[k] for k in NEW} == {k: compiled.counters[k] for k in NEW}


def _assert_equal_vectors(outcomes, statuses, features) -> int:
    """The Python engine's outcomes against the compiled engine's statuses and vectors: same status,
    every feature of every accepted event equal by replay's rule. Returns the events compared."""
    assert [o.status for o in outcomes] == statuses
    accepted = [i for i, o in enumerate(outcomes) if o.status in ("ingested", "late")]
    want = np.array([outcomes[i].features for i in accepted]).reshape(len(accepted), len(FEATURES))
    got = features[accepted]
    ok = replay.equal(want, got)
    bad = np.argwhere(~ok)
    assert not len(bad), [
        (FEATURES[j], outcomes[accepted[i]].event_id, want[i, j], got[i, j]) for i, j in bad[:5]
    ]
    return len(accepted)


def test_equals_the_python_engine_and_features_events_on_the_tiny_day(tiny_world):
    con = duckdb.connect(str(tiny_world / "base" / "warehouse.duckdb"), read_only=True)
    try:
        stored = replay.read_day(con, tiny_platform.TRAIN_DAY)
    finally:
        con.close()
    events = replay.to_events(stored.events)
    py, outcomes = _python(events)
    # the first 300 events one at a time (the API's and the stream's batch of one), then batches
    engine, statuses, features = _compiled(stored.events, [1] * 300 + [997, 4096])
    assert _assert_equal_vectors(outcomes, statuses, features) == stored.events.height > 4000
    # and equal to the SQL's features_events through replay's comparison
    day = [i for i, e in enumerate(events) if e.event_id in stored.day_ids]
    mine = pl.DataFrame({"event_id": [events[i].event_id for i in day]}).with_columns(
        pl.from_numpy(features[day], schema=list(FEATURES), orient="row")
    )
    report = replay.Report(day=tiny_platform.TRAIN_DAY)
    replay._compare_features(report, mine, stored.features)
    assert report.compared == len(stored.day_ids) == stored.features.height
    assert report.feature_share == 1.0 and not any(report.per_feature.values()), report.worst
    assert engine.counters["ingested"] == stored.events.height
    _same_counters(py, engine)


@pytest.fixture(scope="module")
def attack_days(tmp_path_factory):
    """Two generated days (their own seeds, ~20k events each, the attack scenarios in them), in order."""
    from bankanom_api.schemas import LogEvent
    from bankanom_pipeline.live.lines import as_event
    from tests.conftest import generated_days
    from tests.online_world import landed

    landing = tmp_path_factory.mktemp("attack-days")
    days = {"2026-03-09": 301, "2026-03-10": 302}
    generated_days(landing, days, 0.25)
    lines = [line for day in days for line in landed(landing, day)]
    scenarios = Counter(
        line["anomaly_details"]["anomaly_id"] for line in lines if line["anomaly_details"]["is_anomaly"]
    )
    return [as_event(LogEvent.model_validate(line)) for line in lines], scenarios


def test_equals_the_python_engine_on_generated_days_with_the_attack_scenarios(attack_days):
    events, scenarios = attack_days
    assert len(scenarios) >= 10 and len(events) > 30_000, scenarios
    py, outcomes = _python(events)
    engine, statuses, features = _compiled(frame_of(events), [8192, 65536])
    # the two ways of preparing give the same kernel input
    both = CompiledEngine()
    rows = both.prepare_events(events[:3000])
    vectorised = both.prepare(frame_of(events[:3000]))
    same = [c for c in range(kernel.NB) if c != kernel.B_RANK]
    assert (rows[0][:, same] == vectorised[0][:, same]).all()
    assert (np.argsort(rows[0][:, kernel.B_RANK]) == np.argsort(vectorised[0][:, kernel.B_RANK])).all()
    for a, b in zip(rows[1:3], vectorised[1:3], strict=True):  # floats (NaN: absent), feature rows
        assert np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)
    assert _assert_equal_vectors(outcomes, statuses, features) == len(events)
    _same_counters(py, engine)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_streams_match_the_spec_and_the_python_engine(seed):
    """Ties (equal times, ordered by id), fractional and whole sums, missing values, IPv6, empty
    countries: every feature of every event against a literal reading of docs/features.md."""
    rng = random.Random(seed)
    events = sorted(_random_events(rng, 700), key=lambda e: (e.ts, e.event_id))
    _, outcomes = _python(events)
    sizes = [rng.choice((1, 2, 5, 40, 300)) for _ in range(50)]
    _, statuses, features = _compiled(events, sizes)  # both ways of preparing, in one stream
    assert _assert_equal_vectors(outcomes, statuses, features) == len(events)
    for i, x in enumerate(events):
        want = _reference(x, events[:i])
        assert np.allclose(features[i], want, rtol=1e-12, atol=1e-12), x.event_id


def test_duplicates_too_late_invalid_and_late_events():
    events = [
        ev("a", BASE),
        ev("b", BASE + MIN, message="Login failed for USR-1"),
        ev("a", BASE + 2 * MIN),  # a repeat of a retained id, in the next batch
        ev("c", BASE + 3 * MIN),
        ev("c", BASE + 3 * MIN),  # a repeat inside the same batch
        ev("d", BASE + 4 * MIN, amount=float("nan")),  # non-finite: invalid
        Event("e", BASE + 5 * MIN, "auth", "INFO", "ok", None, None, None, None, {"amount": "12"}),
        Event("f", BASE + 5 * MIN, "auth", "INFO", "ok", None, None, None, None, {"amount": True}),
        ev("g", BASE + 3 * 60 * MIN),
        ev("h", BASE + 60 * MIN),  # two hours older than the newest: too late
        ev("i", BASE + 2 * 60 * MIN + 30 * MIN),  # 30 minutes late
        ev("j", BASE + 3 * 60 * MIN + MIN),
    ]
    _, outcomes = _python(events)
    engine = CompiledEngine()
    statuses = []
    rows = []
    for batch in (events[:2], events[2:8], events[8:]):
        out = engine.ingest_many(batch)
        statuses += [kernel.STATUSES[s] for s in out.status]
        rows.append(out.features)
    features = np.concatenate(rows)
    assert statuses == ["ingested"] * 2 + ["duplicate", "ingested", "duplicate"] + ["invalid"] * 3 + [
        "ingested",
        "too_late",
        "late",
        "ingested",
    ]
    assert _assert_equal_vectors(outcomes, statuses, features) == 6
    c = engine.counters
    assert (c["ingested"], c["duplicate"], c["invalid"], c["too_late"], c["late"]) == (5, 2, 3, 1, 1)


def _arrivals(rng: random.Random, events: list[Event]) -> list[Event]:
    """``events`` (in order) as they might arrive: each held back by up to 40 minutes (a third of them),
    some beyond the 20 minutes allowed, a few repeated (the same id, the same or another time)."""
    delayed = sorted(
        events, key=lambda e: (e.ts + (rng.randrange(40 * MIN) if rng.random() < 0.33 else 0), rng.random())
    )
    out = []
    for x in delayed:
        out.append(x)
        if rng.random() < 0.03:
            y = rng.choice(out)
            out.append(y if rng.random() < 0.5 else y._replace(ts=x.ts))
    return out


@pytest.mark.parametrize("seed", [21, 22, 23, 24])
def test_late_events_match_the_python_engine_and_the_spec(seed):
    """Shuffled arrivals (late, too late, repeated, ties on one microsecond between batches): each
    outcome and vector the Python engine's, each accepted event's vector the literal reading of
    docs/features.md over the events accepted before it; and the next events after them too."""
    rng = random.Random(seed)
    events = _arrivals(rng, sorted(_random_events(rng, 900), key=lambda e: (e.ts, e.event_id)))
    python = OnlineEngine(allowed_lateness_s=1200)
    outcomes = python.ingest_many(events)
    counts = Counter(o.status for o in outcomes)
    assert counts["late"] > 100 and counts["too_late"] > 5 and counts["duplicate"] > 5, counts
    sizes = [rng.choice((1, 3, 17, 70, 250)) for _ in range(60)]
    engine, statuses, features = _compiled(events, sizes, CompiledEngine(allowed_lateness_s=1200))
    assert _assert_equal_vectors(outcomes, statuses, features) == counts["late"] + counts["ingested"]
    assert {k: engine.counters[k] for k in ("late", "too_late", "duplicate", *NEW)} == {
        k: python.counters[k] for k in ("late", "too_late", "duplicate", *NEW)
    }
    accepted = []
    for i, x in enumerate(events):
        if statuses[i] in ("ingested", "late"):
            assert np.allclose(features[i], _reference(x, accepted), rtol=1e-12, atol=1e-12), x.event_id
            accepted.append(x)


def test_late_events_over_days_with_sweeps_and_a_wrapping_ring():
    """Four days, a small ring, late events across the hourly sweeps: the Python engine's outcomes and
    vectors, the same entity counters, and the state still bounded."""
    rng = random.Random(9)
    events = []
    t = BASE
    for i in range(6000):
        t += rng.randrange(0, 130_000_000)
        user = f"USR-{rng.randrange(30)}"
        events.append(
            ev(
                f"e{i:05d}",
                t,
                user=user,
                ip=f"10.{i // 300}.{rng.randrange(3)}.{rng.randrange(6)}",
                message=f"Login succeeded for {user} session SES-{i // 25}",
                service=rng.choice(("auth", "payments")),
                records_accessed=rng.randrange(5) + 0.5 * (rng.random() < 0.1),
                amount=rng.uniform(1, 500),
                geo=rng.choice(("US-CA", "DE-BE", "US-NY")),
            )
        )
    events = _arrivals(rng, events)
    python = OnlineEngine()
    outcomes = python.ingest_many(events)
    engine, statuses, features = _compiled(frame_of(events), [300, 64, 500], CompiledEngine(capacity=1024))
    assert _assert_equal_vectors(outcomes, statuses, features) > 5000
    assert Counter(statuses)["late"] > 500
    _same_counters(python, engine)
    g = engine.G
    per_hour = len(events) / ((events[-1].ts - events[0].ts) / (60 * MIN))
    held = int(g[kernel.G_NEXT] - g[kernel.G_RECLAIM])
    assert held <= (24 + 1 + 1) * per_hour * 1.3 + 500 < len(events) / 2
    assert g[kernel.G_NEXT] > len(engine.R)  # the ring wrapped


def test_state_is_bounded_by_the_retention():
    """Four days of events of ever new sessions and addresses: the ring, the entities and the distinct
    counters hold what the last 24 h + lateness + the sweep hour hold, not everything seen."""
    rng = random.Random(7)
    events = []
    t = BASE
    for i in range(6000):
        t += rng.randrange(0, 120_000_000)  # ~1 minute apart: ~4 days
        user = f"USR-{rng.randrange(40)}"
        events.append(
            ev(
                f"e{i:05d}",
                t,
                user=user,
                ip=f"10.{i // 250}.{rng.randrange(4)}.{rng.randrange(9)}",
                message=f"Login succeeded for {user} session SES-{i // 20}",
                service=rng.choice(("auth", "payments")),
                records_accessed=rng.randrange(5) + 0.5 * (rng.random() < 0.1),
                amount=rng.uniform(1, 500),
            )
        )
    py, outcomes = _python(events)
    # a small ring: it grows once, then wraps, its slots reused after each sweep
    engine, statuses, features = _compiled(frame_of(events), [500], CompiledEngine(capacity=1024))
    assert _assert_equal_vectors(outcomes, statuses, features) == len(events)
    _same_counters(py, engine)
    g = engine.G
    span = events[-1].ts - events[0].ts
    held = int(g[kernel.G_NEXT] - g[kernel.G_RECLAIM])
    per_hour = len(events) / (span / (60 * MIN))
    assert span > 3.5 * DAY_US
    assert held <= (24 + 1 + 1) * per_hour * 1.3 < len(events) / 2
    assert len(engine.ids["session"].ids) <= held / 20 + 2 < 6000 / 20 / 2
    assert len(engine.ids["ip"].ids) < 600 and len(engine.seen) <= held
    assert len(engine.pairs) < 8 * held
    assert len(engine.R) < len(events) and g[kernel.G_NEXT] > 2 * len(engine.R)


@pytest.mark.parametrize("seed", [4, 5])
def test_peek_gives_what_ingest_gives_and_changes_nothing(seed):
    """Each event peeked, then ingested: the same vector. A batch of peeks: each row as if alone."""
    rng = random.Random(seed)
    events = sorted(_random_events(rng, 500), key=lambda e: (e.ts, e.event_id))
    _, outcomes = _python(events)
    engine = CompiledEngine()
    peeked, statuses, rows = [], [], []
    for i, x in enumerate(events):
        peeked.append(engine.peek(x))
        if i % 50 == 0:  # the next 20 events peeked together, each against this state
            ahead = events[i : i + 20]
            together = engine.peek_frame(frame_of(ahead)).features
            alone = [engine.peek(y) for y in ahead]
            assert replay.equal(together, np.array(alone)).all()
        out = engine.ingest_many([x])
        statuses.append(kernel.STATUSES[out.status[0]])
        rows.append(out.features[0])
    features = np.array(rows)
    assert _assert_equal_vectors(outcomes, statuses, features) == len(events)
    assert replay.equal(np.array(peeked), features).all()
    # before the high-water mark: what the Python engine's peek gives; beyond the lateness: refused
    python = OnlineEngine()
    python.ingest_many(events)
    for x in events[-30:-1]:
        assert replay.equal(np.array(python.peek(x)), np.array(engine.peek(x))).all()
    with pytest.raises(ValueError, match="lateness"):
        engine.peek(events[-1]._replace(ts=events[-1].ts - 2 * 60 * MIN, event_id="old"))


def test_checkpoint_round_trip(tmp_path):
    """Half of a stream, a checkpoint, a restore in a fresh engine, the other half: every outcome equal to
    one engine fed the whole stream (a repeat of a first-half id included). Another format, another
    feature set and a corrupt body are refused by name."""
    from bankanom_pipeline.online.checkpoint import CheckpointError

    rng = random.Random(11)
    events = sorted(_random_events(rng, 1200), key=lambda e: (e.ts, e.event_id))
    events.insert(900, events[100]._replace(ts=events[899].ts))  # a repeat, after the restore
    whole, statuses, features = _compiled(events, [37, 300])
    half = CompiledEngine()
    _compiled(events[:600], [37, 300], half)
    half.checkpoint(tmp_path / "state.ckpt")
    restored = CompiledEngine.restore(tmp_path / "state.ckpt")
    _, rest_statuses, rest_features = _compiled(events[600:], [37, 300], restored)
    assert rest_statuses == statuses[600:] and "duplicate" in rest_statuses
    assert np.array_equal(rest_features, features[600:])
    assert restored.counters == whole.counters
    data = (tmp_path / "state.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="corrupt"):
        CompiledEngine.restore(tmp_path / "cut.ckpt")
    python = OnlineEngine()
    python.ingest_many(events[:10])
    python.checkpoint(tmp_path / "v2.ckpt")
    with pytest.raises(CheckpointError, match="format 2"):
        CompiledEngine.restore(tmp_path / "v2.ckpt")
    (tmp_path / "other.ckpt").write_bytes(
        data.replace(CompiledEngine.FEATURE_SET_VERSION.encode(), b"0" * 12, 1)
    )
    with pytest.raises(CheckpointError, match="feature set"):
        CompiledEngine.restore(tmp_path / "other.ckpt")
