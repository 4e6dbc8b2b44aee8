"""The compiled engine (online/compiled.py, prepare.py and the numba kernel in online/kernel/) gives every
event features_events' vector on the tiny platform's day through replay's comparison, and the literal reading of docs/features.md
(tests/test_online_engine.py's ``_reference``; each feature within 1e-12 relative) on two generated days
with the attack scenarios and on random streams with ties, fractional sums, missing values and days of
gaps, in batches of any size (one event included). Late events (out of order within the lateness allowed,
ties on one microsecond ordered by id), duplicates, too-late and invalid events get the outcome the rules
of docs/online.md give (``_expected``), with the entity counters of its hourly sweep, also on shuffled
random streams over days; the state stays bounded by the retention; peek gives what ingest then gives; a
checkpoint restored continues as if uninterrupted.

Before the compiled engine replaced it, the Python engine was the reference of each of these tests: every
outcome, vector and counter was equal to it (branch ``numba-engine``, a24739b)."""

from __future__ import annotations

import random
import zlib
from collections import Counter

import duckdb
import numpy as np
import orjson
import polars as pl
import pytest

from bankanom_pipeline.online import layout, replay
from bankanom_pipeline.online.checkpoint import FORMAT
from bankanom_pipeline.online.compiled import CompiledEngine
from bankanom_pipeline.online.engine import FEATURES, OnlineEngine, TooLate
from bankanom_pipeline.online.events import BadEvent, Event, metric_values
from bankanom_pipeline.online.prepare import check, frame_of
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
            batch = engine.ingest_batch(frame[start : start + size])
        else:
            batch = engine.ingest_frame(frame.slice(start, size))
        statuses.extend(layout.STATUSES[s] for s in batch.status)
        rows.append(batch.features)
        start += size
        i += 1
    return engine, statuses, np.concatenate(rows)


NEW = ("ingested", "late", "duplicate", "too_late", "invalid", "new_user", "new_ip", "new_service")
RETENTION = DAY_US + 60 * MIN  # with the default hour of lateness


def _expected(events: list[Event], lateness_s: float = 3600.0, every: int = 1):
    """docs/online.md's rules, literally: each event's status, and every ``every``-th accepted event's
    vector by ``_reference`` over the events accepted before it (None for the others); the counters, with
    the hourly sweep (an entity whose newest event is older than the retention is dropped at the first
    in-order event more than an hour after the last sweep, and is new again)."""
    lateness = round(lateness_s * 1e6)
    retention = DAY_US + lateness
    hwm = None
    seen: dict[str, int] = {}
    live: dict[tuple[str, str], int] = {}
    swept = 0
    accepted: list[Event] = []
    first = 0  # accepted[first:] holds every event a window can still reach
    statuses, vectors = [], []
    counters = Counter()
    for x in events:
        try:
            check(x)
            metric_values(x.event_id, x.metrics)
        except BadEvent:
            statuses.append("invalid")
            vectors.append(None)
            continue
        if x.event_id in seen and seen[x.event_id] >= hwm[0] - retention:
            status = "duplicate"
        elif hwm is not None and (x.ts, x.event_id) < hwm:
            status = "too_late" if x.ts < hwm[0] - lateness else "late"
        else:
            status = "ingested"
        statuses.append(status)
        if status in ("duplicate", "too_late"):
            vectors.append(None)
            continue
        while first < len(accepted) and accepted[first].ts < x.ts - DAY_US - 2 * lateness:
            first += 1
        vectors.append(_reference(x, accepted[first:]) if len(accepted) % every == every - 1 else None)
        for kind, key in (("user", x.user_id), ("ip", x.ip_address), ("service", x.source_service)):
            if key is not None:
                if (kind, key) not in live:
                    counters[f"new_{kind}"] += 1
                live[(kind, key)] = max(live.get((kind, key), x.ts), x.ts)
        accepted.append(x)
        seen[x.event_id] = x.ts
        if status == "ingested":
            hwm = (x.ts, x.event_id)
            if x.ts - swept > 60 * MIN:
                swept = x.ts
                live = {k: t for k, t in live.items() if t >= x.ts - retention}
    counters.update(statuses)
    return statuses, vectors, {k: counters[k] for k in NEW}


def _assert_expected(events, statuses, features, lateness_s: float = 3600.0, every: int = 1, engine=None):
    """The compiled engine's statuses and vectors (and counters) against ``_expected``. Returns how many
    vectors were compared."""
    want_statuses, vectors, counters = _expected(events, lateness_s, every)
    assert statuses == want_statuses
    if engine is not None:
        assert {k: engine.counters[k] for k in NEW} == counters
    compared = 0
    for i, want in enumerate(vectors):
        if want is not None:
            assert np.allclose(features[i], want, rtol=1e-12, atol=1e-12), (
                events[i].event_id,
                [
                    (FEATURES[j], features[i][j], want[j])
                    for j in np.flatnonzero(~np.isclose(features[i], want, rtol=1e-12, atol=1e-12))
                ],
            )
            compared += 1
    return compared


def test_equals_features_events_on_the_tiny_day(tiny_world):
    con = duckdb.connect(str(tiny_world / "base" / "warehouse.duckdb"), read_only=True)
    try:
        stored = replay.read_day(con, tiny_platform.TRAIN_DAY)
    finally:
        con.close()
    events = replay.to_events(stored.events)
    # the first 300 events one at a time (the API's and the stream's batch of one), then batches
    engine, statuses, features = _compiled(stored.events, [1] * 300 + [997, 4096])
    assert statuses == ["ingested"] * stored.events.height and stored.events.height > 4000
    # equal to the SQL's features_events through replay's comparison
    day = [i for i, e in enumerate(events) if e.event_id in stored.day_ids]
    mine = pl.DataFrame({"event_id": [events[i].event_id for i in day]}).with_columns(
        pl.from_numpy(features[day], schema=list(FEATURES), orient="row")
    )
    report = replay.Report(day=tiny_platform.TRAIN_DAY)
    replay._compare_features(report, mine, stored.features)
    assert report.compared == len(stored.day_ids) == stored.features.height
    assert report.feature_share == 1.0 and not any(report.per_feature.values()), report.worst
    assert engine.counters["ingested"] == stored.events.height
    # and to the literal reading of the spec, on every 40th event (the other prepare: Events row by row)
    _, statuses, rows = _compiled(events, [63])
    assert _assert_expected(events, statuses, rows, every=40) > 100
    assert replay.equal(rows, features).all()


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


def test_matches_the_spec_on_generated_days_with_the_attack_scenarios(attack_days):
    events, scenarios = attack_days
    assert len(scenarios) >= 10 and len(events) > 30_000, scenarios
    engine, statuses, features = _compiled(frame_of(events), [8192, 65536])
    # the two ways of preparing give the same kernel input
    both = CompiledEngine()
    rows = both.prepare_events(events[:3000])
    vectorised = both.prepare(frame_of(events[:3000]))
    same = [c for c in range(layout.NB) if c != layout.B_RANK]
    assert (rows[0][:, same] == vectorised[0][:, same]).all()
    assert (np.argsort(rows[0][:, layout.B_RANK]) == np.argsort(vectorised[0][:, layout.B_RANK])).all()
    for a, b in zip(rows[1:3], vectorised[1:3], strict=True):  # floats (NaN: absent), feature rows
        assert np.allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)
    # every 400th event against the literal reading of the spec; the counters of every event
    assert _assert_expected(events, statuses, features, every=400, engine=engine) > 80


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_streams_match_the_spec(seed):
    """Ties (equal times, ordered by id), fractional and whole sums, missing values, IPv6, empty
    countries: every feature of every event against a literal reading of docs/features.md."""
    rng = random.Random(seed)
    events = sorted(_random_events(rng, 700), key=lambda e: (e.ts, e.event_id))
    sizes = [rng.choice((1, 2, 5, 40, 300)) for _ in range(50)]
    engine, statuses, features = _compiled(events, sizes)  # both ways of preparing, in one stream
    assert _assert_expected(events, statuses, features, engine=engine) == len(events)
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
    engine = CompiledEngine()
    statuses = []
    rows = []
    for batch in (events[:2], events[2:8], events[8:]):
        out = engine.ingest_batch(batch)
        statuses += [layout.STATUSES[s] for s in out.status]
        rows.append(out.features)
    features = np.concatenate(rows)
    assert statuses == ["ingested"] * 2 + ["duplicate", "ingested", "duplicate"] + ["invalid"] * 3 + [
        "ingested",
        "too_late",
        "late",
        "ingested",
    ]
    assert _assert_expected(events, statuses, features) == 6
    c = engine.counters
    assert (c["ingested"], c["duplicate"], c["invalid"], c["too_late"], c["late"]) == (5, 2, 3, 1, 1)


def test_an_id_sent_again_after_its_event_expired_is_remembered_anew():
    """A late event expires by time while its slot is still held (an earlier-arrived event is newer): its
    id sent again is a new event, and that one's id is then remembered, not forgotten with the old slot."""
    s = 1_000_000
    retention = DAY_US + 60 * s
    events = [
        ev("a", BASE),
        ev("b", BASE + 30 * s),
        ev("L", BASE + 10 * s),  # late
        ev("c", BASE + 10 * s + retention + 10 * s),  # "L" expired by time, its slot still held
        ev("L", BASE + 10 * s + retention + 11 * s),  # so this is a new event
        ev("d", BASE + 10 * s + retention + 40 * s),  # the first "L"'s slot is released
        ev("L", BASE + 10 * s + retention + 41 * s),  # the second "L" is retained: a duplicate
    ]
    _, statuses, features = _compiled(events, [1], CompiledEngine(allowed_lateness_s=60))
    assert statuses == ["ingested", "ingested", "late"] + ["ingested"] * 3 + ["duplicate"]
    assert _assert_expected(events, statuses, features, lateness_s=60) == 6


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
def test_late_events_match_the_spec(seed):
    """Shuffled arrivals (late, too late, repeated, ties on one microsecond between batches): each
    outcome the rules', each accepted event's vector the literal reading of docs/features.md over the
    events accepted before it, whatever their order of arrival; and the events after them too."""
    rng = random.Random(seed)
    events = _arrivals(rng, sorted(_random_events(rng, 900), key=lambda e: (e.ts, e.event_id)))
    sizes = [rng.choice((1, 3, 17, 70, 250)) for _ in range(60)]
    engine, statuses, features = _compiled(events, sizes, CompiledEngine(allowed_lateness_s=1200))
    counts = Counter(statuses)
    assert counts["late"] > 100 and counts["too_late"] > 5 and counts["duplicate"] > 5, counts
    compared = _assert_expected(events, statuses, features, lateness_s=1200, engine=engine)
    assert compared == counts["late"] + counts["ingested"]


def test_late_events_over_days_with_sweeps_and_a_wrapping_ring():
    """Four days, a small ring, late events across the hourly sweeps: the rules' outcomes and entity
    counters, every 10th vector the spec's, and the state still bounded."""
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
    engine, statuses, features = _compiled(frame_of(events), [300, 64, 500], CompiledEngine(capacity=1024))
    assert _assert_expected(events, statuses, features, every=10, engine=engine) > 500
    assert Counter(statuses)["late"] > 500
    g = engine.G
    per_hour = len(events) / ((events[-1].ts - events[0].ts) / (60 * MIN))
    held = int(g[layout.G_NEXT] - g[layout.G_RECLAIM])
    assert held <= (24 + 1 + 1) * per_hour * 1.3 + 500 < len(events) / 2
    assert g[layout.G_NEXT] > len(engine.R)  # the ring wrapped


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
    # a small ring: it grows once, then wraps, its slots reused after each sweep
    engine, statuses, features = _compiled(frame_of(events), [500], CompiledEngine(capacity=1024))
    assert _assert_expected(events, statuses, features, every=10, engine=engine) == len(events) // 10
    g = engine.G
    span = events[-1].ts - events[0].ts
    held = int(g[layout.G_NEXT] - g[layout.G_RECLAIM])
    per_hour = len(events) / (span / (60 * MIN))
    assert span > 3.5 * DAY_US
    assert held <= (24 + 1 + 1) * per_hour * 1.3 < len(events) / 2
    assert len(engine.ids["session"].ids) <= held / 20 + 2 < 6000 / 20 / 2
    assert len(engine.ids["ip"].ids) < 600 and len(engine.seen) <= held
    assert len(engine.pairs) < 8 * held
    assert len(engine.R) < len(events) and g[layout.G_NEXT] > 2 * len(engine.R)


@pytest.mark.parametrize("seed", [4, 5])
def test_peek_gives_what_ingest_gives_and_changes_nothing(seed):
    """Each event peeked, then ingested: the same vector. A batch of peeks: each row as if alone."""
    rng = random.Random(seed)
    events = sorted(_random_events(rng, 500), key=lambda e: (e.ts, e.event_id))
    engine = OnlineEngine()
    peeked, statuses, rows = [], [], []
    for i, x in enumerate(events):
        peeked.append(engine.peek(x))
        if i % 50 == 0:  # the next 20 events peeked together, each against this state
            ahead = events[i : i + 20]
            together = engine.peek_frame(frame_of(ahead)).features
            alone = [engine.peek(y) for y in ahead]
            assert replay.equal(together, np.array(alone)).all()
        out = engine.ingest(x)
        statuses.append(out.status)
        rows.append(out.features)
    features = np.array(rows)
    assert _assert_expected(events, statuses, features) == len(events)
    assert replay.equal(np.array(peeked), features).all()
    # before the high-water mark: the spec's reading of the events before it; beyond the lateness: refused
    for x in events[-30:-1]:
        assert np.allclose(engine.peek(x), _reference(x, events), rtol=1e-12, atol=1e-12)
    with pytest.raises(TooLate, match="lateness"):
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
    # the Python engine's format: refused by name, saying what to do
    v2 = orjson.dumps({"format": FORMAT, "format_version": 2, "feature_set_version": "9e879fd6d84d"})
    (tmp_path / "v2.ckpt").write_bytes(v2 + b"\n" + zlib.compress(b"{}"))
    with pytest.raises(CheckpointError, match=r"format 2 .*Python engine.*rebuilt from the events"):
        OnlineEngine.restore(tmp_path / "v2.ckpt")
    assert isinstance(OnlineEngine.restore(tmp_path / "state.ckpt"), OnlineEngine)
    (tmp_path / "other.ckpt").write_bytes(
        data.replace(CompiledEngine.FEATURE_SET_VERSION.encode(), b"0" * 12, 1)
    )
    with pytest.raises(CheckpointError, match="feature set"):
        CompiledEngine.restore(tmp_path / "other.ckpt")


def test_the_kernel_cache_is_keyed_on_every_kernel_source():
    """numba keys a cached function on its own file only; the kernel spans modules (and layout.py's
    constants), so every kernel function's cache key holds the digest of all of them (kernel/jit.py): a
    change of any one recompiles the functions that inline or call it, rather than loading stale code."""
    import importlib
    from pathlib import Path

    from numba.core.registry import CPUDispatcher

    from bankanom_pipeline.online.kernel import jit

    here = Path(jit.__file__).parent
    assert set(jit.SOURCES) == {*here.glob("*.py"), here.parent / "layout.py"}
    found = 0
    for path in here.glob("*.py"):
        module = importlib.import_module(f"bankanom_pipeline.online.kernel.{path.stem}")
        for f in vars(module).values():
            if isinstance(f, CPUDispatcher) and f.__module__ == module.__name__:
                assert isinstance(f._cache, jit.KernelCache), f
                found += 1
    assert found >= 30
    OnlineEngine().ingest_many(_random_events(random.Random(1), 50))  # run compiled (or loaded)
    run = importlib.import_module("bankanom_pipeline.online.kernel.step").run
    key = run._cache._index_key(run.signatures[0], run.targetctx.codegen())
    assert key[-1] == jit.DIGEST


def test_the_ring_does_not_grow_past_what_its_int32_links_reach(monkeypatch):
    """A link is an int32 offset between two events in the ring (below its capacity): the ring refuses
    to grow past ``MAX_CAPACITY`` (2**30) with a clear error rather than wrap an offset."""
    monkeypatch.setattr(layout, "MAX_CAPACITY", 2048)
    engine = OnlineEngine(capacity=1024)
    events = [ev(f"e{i:05d}", BASE + i * 1_000_000) for i in range(3000)]  # 50 minutes: all retained
    engine.ingest_many(events[:2000])
    assert len(engine.R) == 2048
    with pytest.raises(OverflowError, match="int32"):
        engine.ingest_many(events[2000:])
