"""The online feature engine's API (``OnlineEngine``, on the compiled engine) on hand-made events: window
edges, ties, late, too late, duplicates, the 24-hour horizon, checkpoints, peek, and every feature against
a brute-force reading of docs/features.md (``_reference``, also the reference of test_online_compiled)."""

from __future__ import annotations

import hashlib
import math
import random
import zlib

import orjson
import pytest

from bankanom_pipeline.online import engine as engine_module
from bankanom_pipeline.online.checkpoint import CheckpointError
from bankanom_pipeline.online.engine import FEATURES, OnlineEngine, TooLate
from bankanom_pipeline.online.events import BadEvent, Event, geo_seed, network, session, template

BASE = 1_780_000_000_000_000  # 2026-05-28T20:26:40Z, epoch µs
MIN = 60_000_000
F = {name: i for i, name in enumerate(FEATURES)}


def ev(
    eid,
    ts,
    *,
    user="USR-1",
    ip="10.0.0.1",
    service="auth",
    level="INFO",
    message="Login ok",
    geo="US-CA",
    **m,
):
    return Event(eid, ts, service, level, message, None, user, ip, geo, m or None)


def feats(engine, event):
    out = engine.ingest(event)
    assert out.status in ("ingested", "late"), out
    return dict(zip(FEATURES, out.features, strict=True))


def test_window_edges_are_closed():
    e = OnlineEngine()
    feats(e, ev("a", BASE))
    at_edge = feats(e, ev("b", BASE + 10 * MIN))  # exactly 10 minutes later: "a" is in the window
    assert at_edge["user_events_10m"] == 2 and at_edge["ip_events_10m"] == 2
    past = feats(e, ev("c", BASE + 20 * MIN + 1))  # 10 min + 1 µs after "b": "b" is out, "a" too
    assert past["user_events_10m"] == 1 and past["ip_events_10m"] == 1


def test_same_timestamp_counts_only_smaller_ids():
    e = OnlineEngine()
    first = feats(e, ev("e1", BASE, message="Login failed for USR-1"))
    second = feats(e, ev("e2", BASE, message="Login failed for USR-1"))
    assert first["user_failed_logins_10m"] == 1 and second["user_failed_logins_10m"] == 2
    # e0 sorts before both: it is late (a tie broken by id) and counts neither
    late = e.ingest(ev("e0", BASE, message="Login failed for USR-1"))
    assert late.status == "late"
    assert dict(zip(FEATURES, late.features, strict=True))["user_failed_logins_10m"] == 1
    assert e.counters["late"] == 1


def test_late_event_gets_its_point_in_time_features_and_earlier_scores_stand():
    events = [ev(f"e{i:03d}", BASE + i * 7_000_000, ip=f"10.0.0.{i % 3}") for i in range(60)]
    in_order = OnlineEngine()
    expected = {x.event_id: in_order.ingest(x).features for x in events}
    shuffled = OnlineEngine()
    held = events[30]
    for x in events[:30] + events[31:]:
        shuffled.ingest(x)
    out = shuffled.ingest(held)
    assert out.status == "late" and out.features == expected[held.event_id]
    # after the late event, the state is the in-order one: the next event sees the same window
    nxt = ev("z", BASE + 61 * 7_000_000)
    assert shuffled.ingest(nxt).features == in_order.ingest(nxt).features


def test_too_late_and_duplicates_are_refused_and_counted():
    e = OnlineEngine(allowed_lateness_s=60)
    feats(e, ev("a", BASE + 10 * MIN))
    assert e.ingest(ev("old", BASE)).status == "too_late"
    with pytest.raises(TooLate):
        e.peek(ev("old", BASE))
    assert e.ingest(ev("a", BASE + 10 * MIN)).status == "duplicate"
    after = feats(e, ev("b", BASE + 10 * MIN + 1))
    assert after["user_events_10m"] == 2  # a once, b; neither the refused nor the repeat
    assert e.counters["too_late"] == 1 and e.counters["duplicate"] == 1 and e.counters["ingested"] == 2


def test_the_default_allowance_is_an_hour():
    e = OnlineEngine()
    feats(e, ev("now", BASE + 2 * 60 * MIN))
    assert e.ingest(ev("hour", BASE + 60 * MIN)).status == "late"  # exactly an hour late: accepted
    refused = e.ingest(ev("older", BASE + 60 * MIN - 1))
    assert refused.status == "too_late" and refused.reason == "3600 s older than the newest event"


def test_bad_input_is_refused_with_a_reason():
    e = OnlineEngine()
    out = e.ingest(ev("nan", BASE, response_time_ms=float("nan")))
    assert out.status == "invalid" and "non_finite" in out.reason
    out = e.ingest(ev("txt", BASE, response_time_ms="fast"))
    assert out.status == "invalid" and "bad_metrics" in out.reason
    out = e.ingest(ev("num", BASE, user=12345))
    assert out.status == "invalid" and "bad_type" in out.reason
    assert e.counters["invalid"] == 3 and e.counters["ingested"] == 0
    with pytest.raises(BadEvent, match="missing_field"):
        Event.from_row({"event_id": "x", "ts": BASE, "source_service": "auth", "log_level": "INFO"})
    with pytest.raises(BadEvent, match="bad_timestamp"):
        Event.from_row(
            {"event_id": "x", "ts": "yesterday", "source_service": "a", "log_level": "I", "message": ""}
        )
    row = Event.from_row(
        {
            "event_id": "x",
            "ts": "2026-05-28T20:26:40+00:00",
            "source_service": "auth",
            "log_level": "INFO",
            "message": "m",
            "metrics": '{"amount": 3}',
        }
    )
    assert row.ts == BASE and row.metrics == {"amount": 3}


def test_horizon_is_24_hours():
    e = OnlineEngine()
    feats(e, ev("a", BASE, geo="VN-HN"))
    day = 24 * 60 * MIN
    exactly = feats(e, ev("b", BASE + day, geo="US-CA"))
    assert exactly["user_country_share"] == 0.5  # "a" is exactly 24 h back: in
    e2 = OnlineEngine()
    feats(e2, ev("a", BASE, geo="VN-HN"))
    beyond = feats(e2, ev("b", BASE + day + 1, geo="US-CA"))
    assert beyond["user_country_share"] == 1.0 and beyond["travel_km"] == 0.0


def test_expired_state_is_dropped():
    e = OnlineEngine(allowed_lateness_s=0)
    for i in range(50):
        e.ingest(ev(f"u{i}", BASE + i, user=f"USR-{i}", ip=f"10.1.{i}.1"))
    assert e.entity_counts()["user"] == 50
    e.ingest(ev("later", BASE + 2 * 24 * 60 * MIN, user="USR-x", ip="10.9.9.9"))
    counts = e.entity_counts()
    assert counts["user"] == 1 and counts["ip"] == 1 and counts["session"] == 0
    # a repeated id older than the retention is no longer remembered, and is too late anyway
    assert e.ingest(ev("u1", BASE + 1)).status == "too_late"


def test_checkpoint_round_trip(tmp_path):
    events = _random_events(random.Random(3), 400)
    whole = OnlineEngine()
    expected = [whole.ingest(x) for x in events]
    first = OnlineEngine()
    for x in events[:250]:
        first.ingest(x)
    path = tmp_path / "state.ckpt"
    first.checkpoint(path)
    restored = OnlineEngine.restore(path)
    for x, want in zip(events[250:], expected[250:], strict=True):
        got = restored.ingest(x)
        assert got.status == want.status
        # running float sums are rebuilt in another order of additions: equal to the last bits
        assert got.features == pytest.approx(want.features, rel=1e-12, abs=1e-12)
    assert restored.counters == whole.counters
    data = path.read_bytes()
    path.write_bytes(data[:-20] + b"0" * 20)
    with pytest.raises(CheckpointError, match="corrupt"):
        OnlineEngine.restore(path)
    path.write_bytes(data.replace(OnlineEngine.FEATURE_SET_VERSION.encode(), b"other", 1))
    with pytest.raises(CheckpointError, match="feature set other"):
        OnlineEngine.restore(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not an online-engine checkpoint"):
        OnlineEngine.restore(path)
    # an older format (1 was JSON, 2 the Python engine's, 4 this engine's with int64 links) is named,
    # not misread
    for old, why in ((1, "JSON"), (4, "before its ring's int32 columns")):
        path.write_bytes(data.replace(b'"format_version":5', b'"format_version":%d' % old, 1))
        with pytest.raises(
            CheckpointError, match=rf"checkpoint format {old} \(.*{why}\), this engine reads 5"
        ):
            OnlineEngine.restore(path)
    # a body whose digest matches but whose state does not hold together: an event id missing
    header, _, body = data.partition(b"\n")
    raw = zlib.decompress(body)
    size = int.from_bytes(raw[:8], "little")
    manifest = orjson.loads(raw[8 : 8 + size])
    manifest["retained"].pop()
    bad = orjson.dumps(manifest)
    bad_body = zlib.compress(len(bad).to_bytes(8, "little") + bad + raw[8 + size :])
    head = orjson.loads(header)
    head.update(bytes=len(bad_body), sha256=hashlib.sha256(bad_body).hexdigest())
    path.write_bytes(orjson.dumps(head) + b"\n" + bad_body)
    with pytest.raises(CheckpointError, match="malformed state"):
        OnlineEngine.restore(path)


def test_peek_does_not_change_the_state():
    events = _random_events(random.Random(5), 200)
    e, untouched = OnlineEngine(), OnlineEngine()
    for x in events[:150]:
        e.ingest(x)
        untouched.ingest(x)
    peeked = [e.peek(x) for x in events[150:]] + [e.peek(x) for x in events[140:150]]  # late ones too
    # peeking the next event equals ingesting it; the rest goes on as if nothing had been peeked
    assert e.peek(events[150]) == peeked[0] == e.ingest(events[150]).features
    untouched.ingest(events[150])
    assert e.ingest_many(events[151:]) == untouched.ingest_many(events[151:])
    assert e.counters == untouched.counters


def test_peek_equals_what_ingest_then_gives_also_for_late_events():
    # every peek equals what the event gets when ingested next (the running windows, or the lists read up
    # to its place for a late one), also for probes that share a service's minute
    rng = random.Random(7)
    events = _random_events(rng, 700)
    arrival = events[:300]
    rest = events[300:]
    for i in range(0, len(rest) - 1, 2):  # every other pair swapped: the second of each arrives late
        a, b = rest[i], rest[i + 1]
        arrival += [b, a] if rng.random() < 0.5 else [a, b]
    e = OnlineEngine()
    for x in arrival[:300]:
        e.ingest(x)
    for i, x in enumerate(arrival[300:], 300):
        probes = arrival[i : i + 6]
        peeked = [e.peek(p) for p in probes]
        assert [e.peek(p) for p in probes] == peeked
        outcome = e.ingest(x)
        assert outcome.status in ("ingested", "late")
        assert outcome.features == peeked[0]
    assert e.counters["late"] > 50


def test_declared_feature_set_version_is_the_sqls():
    from bankanom_pipeline.online.version import FEATURE_SET_VERSION

    assert engine_module.ENGINE_FEATURE_SET_VERSION == FEATURE_SET_VERSION, (
        "the feature SQL changed: make the engine implement it, update ENGINE_FEATURE_SET_VERSION and "
        "prove them equal with bankanom replay"
    )


def test_derived_keys_follow_the_sql():
    assert (
        template("User USR-12ab paid 12.50 to 10.0.0.1 via svc-pay SES-9")
        == "User <id> paid # to <id> via <id> <id>"
    )
    assert network("10.1.2.3") == "10.1.2" and network("2001:db8::1") == "2001:db8:" and network("abc") == ""
    assert (
        session("token SES-abc9 and SES-x") == "SES-abc9"
        and session("SES-") is None
        and session("no") is None
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_feature_matches_a_brute_force_reading_of_the_spec(seed):
    rng = random.Random(seed)
    events = _random_events(rng, 600)
    # ingest mostly in order, a few late (up to 20 minutes), some duplicates
    order = list(events)
    for _ in range(25):
        i = rng.randrange(1, len(order))
        j = max(0, i - rng.randrange(1, 12))
        order.insert(j, order.pop(i))
    order += rng.sample(events, 10)
    e = OnlineEngine(allowed_lateness_s=1200)
    seen: list[Event] = []
    checked = 0
    for x in order:
        out = e.ingest(x)
        if any(y.event_id == x.event_id for y in seen):
            assert out.status == "duplicate"
            continue
        newest = max(((y.ts, y.event_id) for y in seen), default=None)
        if newest is not None and x.ts < newest[0] - 1200 * 1_000_000:
            assert out.status == "too_late"
            continue
        assert out.status == ("late" if newest is not None and (x.ts, x.event_id) < newest else "ingested")
        expected = _reference(x, seen)
        for name, got, want in zip(FEATURES, out.features, expected, strict=True):
            assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), (x.event_id, name, got, want)
        seen.append(x)
        checked += 1
    assert checked > 550 and e.counters["late"] > 5


# ---------------------------------------------------------------------------- helpers

_MESSAGES = (
    "Login failed for {u} from {ip}",
    "Login succeeded for {u} session SES-{s}",
    "VPN connection established for {u}",
    "Payment {n} processed for {u} SES-{s}",
    "Cache refresh took {n}.5 ms",
)
_GEOS = ("US-CA", "US-NY", "VN-HN", "XX-YY", "", None)
_LEVELS = ("DEBUG", "INFO", "INFO", "WARN", "ERROR", "FATAL")


def _random_events(rng: random.Random, n: int) -> list[Event]:
    out = []
    t = BASE
    for i in range(n):
        t += rng.choice((0, 0, 1, 1_000, 3_000_000, 40_000_000, 300_000_000))
        user = rng.choice(("USR-1", "USR-2", "USR-3", None))
        ip = rng.choice(("10.0.0.1", "10.0.0.2", "10.0.1.9", "2001:db8::7", None))
        metrics = {}
        for name, lo, hi in (
            ("response_time_ms", 1, 900),
            ("amount", 0, 5000),
            ("records_accessed", 0, 40),
            ("bytes_out", 0, 1e6),
            ("timeout_rate", 0, 1),
            ("error_rate", 0, 1),
            ("cache_hit_rate", 0, 1),
            ("replication_lag_s", 0, 9),
            ("requests_per_second", 0, 500),
            ("files_modified", 0, 30),
            ("active_connections", 0, 50),
            ("max_connections", 0, 50),
        ):
            if rng.random() < 0.4:
                metrics[name] = round(rng.uniform(lo, hi), 2)
        msg = rng.choice(_MESSAGES).format(u=user, ip=ip, s=rng.choice("abc"), n=rng.randrange(100))
        out.append(
            Event(
                f"ev-{rng.randrange(10**6):06d}-{i}",
                t,
                rng.choice(("auth", "payments", "db")),
                rng.choice(_LEVELS),
                msg,
                None,
                user,
                ip,
                rng.choice(_GEOS),
                metrics or None,
            )
        )
    return out


def _reference(x: Event, seen: list[Event]) -> list[float]:
    """docs/features.md read literally: every window is the events before ``x`` in (ts, event_id) order
    with ts >= ts(x) - W, plus ``x``."""
    import datetime as dt

    def window(w, same):
        return [
            y for y in seen if same(y) and y.ts >= x.ts - w and (y.ts, y.event_id) < (x.ts, x.event_id)
        ] + [x]

    def metric(y, name):
        return (y.metrics or {}).get(name)

    def level(y):
        return {"DEBUG": 0, "INFO": 1, "WARN": 2, "ERROR": 3}.get(y.log_level, 4)

    def country(y):
        return None if y.geo_location is None else y.geo_location.split("-")[0]

    day, h1, m30, m10, m1 = 86_400_000_000, 3_600_000_000, 1_800_000_000, 600_000_000, 60_000_000
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=x.ts)
    hour = moment.hour + moment.minute / 60.0
    out = [
        level(x),
        math.sin(2 * math.pi * hour / 24),
        math.cos(2 * math.pi * hour / 24),
        moment.isoweekday() >= 6,
    ]
    everyone = window(day, lambda y: True)
    same_tpl = [y for y in everyone if template(y.message) == template(x.message)]
    out.append(-math.log(len(same_tpl) / len(everyone)))
    if level(x) <= 1 and country(x):
        quiet = [y for y in everyone if level(y) <= 1 and country(y)]
        share = sum(country(y) == country(x) for y in quiet) / len(quiet)
        out.append(max(math.log(0.01 / share), 0.0))
    else:
        out.append(0.0)
    for name in FEATURES[6:28]:
        if name == "connection_pool_use":
            a, b = metric(x, "active_connections"), metric(x, "max_connections")
            out.append(0.0 if a is None or not b else a / b)
        else:
            v = metric(x, name)
            out.append((1.0 if name in ("success_rate", "cache_hit_rate") else 0.0) if v is None else v)
    if x.user_id is None:
        out += [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    else:
        mine = lambda y: y.user_id == x.user_id  # noqa: E731
        w10, w30, w60, w24 = window(m10, mine), window(m30, mine), window(h1, mine), window(day, mine)
        out.append(len(w10))
        out.append(sum(y.message.startswith("Login failed") for y in w10))
        out.append(len({y.ip_address for y in w60} - {None}))
        out.append(len({country(y) for y in w60} - {None}))
        out.append(sum(y.message.startswith("VPN connection") for y in w60))
        out.append(sum(metric(y, "records_accessed") or 0 for y in w10))
        out.append(sum(metric(y, "bytes_out") or 0 for y in w30))
        out.append(sum(country(y) == country(x) for y in w24) / len(w24))
        out.append(sum(y.ip_address == x.ip_address for y in w24) / len(w24))
        ses = session(x.message)
        if ses is None:
            out.append(0)
        else:
            mates = window(day, lambda y: y.user_id is not None and session(y.message) == ses)
            out.append(len({y.ip_address for y in mates} - {None}))
        earlier = [math.log(1 + metric(y, "amount")) for y in w24[:-1] if metric(y, "amount") is not None]
        if metric(x, "amount") is None or len(earlier) < 3:
            out.append(0.0)
        else:
            xa = math.log(1 + metric(x, "amount"))
            mean = sum(earlier) / len(earlier)
            sd = math.sqrt(max(sum((v - mean) ** 2 for v in earlier) / (len(earlier) - 1), 0))
            out.append((xa - mean) / (0.25 + sd))
        geo = geo_seed()
        located = [y for y in w24[:-1] if y.geo_location in geo]
        if x.geo_location in geo and located:
            prev = max(located, key=lambda y: (y.ts, y.event_id))
            (lat, lon), (plat, plon) = geo[x.geo_location], geo[prev.geo_location]
            r = math.radians
            km = (
                2
                * 6371
                * math.asin(
                    math.sqrt(
                        math.sin(r(lat - plat) / 2) ** 2
                        + math.cos(r(plat)) * math.cos(r(lat)) * math.sin(r(lon - plon) / 2) ** 2
                    )
                )
            )
            out += [km, km / max((x.ts - prev.ts) / 3.6e9, 1 / 60)]
        else:
            out += [0.0, 0.0]
    if x.ip_address is None:
        out += [0] * 7
    else:
        w = window(m10, lambda y: y.ip_address == x.ip_address)
        out.append(len(w))
        out.append(len({y.user_id for y in w} - {None}))
        out.append(sum(y.message.startswith("Login failed") for y in w))
        out.append(sum(level(y) >= 3 for y in w))
        net = window(
            m10, lambda y: y.ip_address is not None and network(y.ip_address) == network(x.ip_address)
        )
        out.append(len({y.user_id for y in net} - {None}))
        out.append(len({y.ip_address for y in net}))
        out.append(sum(y.message.startswith("Login failed") for y in net))
    svc = lambda y: y.source_service == x.source_service  # noqa: E731
    w1, w24 = window(m1, svc), window(day, svc)
    minutes = max((x.ts - min(y.ts for y in w24)) / 6e7, 1)
    out.append(len(w1) / (len(w24) / minutes))
    out.append(sum(level(y) >= 3 for y in w1) / len(w1))
    out.append(sum(level(y) == 2 for y in w1) / len(w1))
    out.append(len({y.ip_address for y in w1} - {None}))
    rts = sorted(metric(y, "response_time_ms") for y in w1 if metric(y, "response_time_ms") is not None)
    if rts:
        pos = (len(rts) - 1) * 0.95
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(rts[lo] + (pos - lo) * (rts[hi] - rts[lo]))
    else:
        out.append(0.0)
    for name, pick, default in (
        ("timeout_rate", max, 0.0),
        ("error_rate", max, 0.0),
        ("cache_hit_rate", min, 1.0),
        ("replication_lag_s", max, 0.0),
        ("requests_per_second", max, 0.0),
        ("files_modified", max, 0.0),
    ):
        vals = [metric(y, name) for y in w1 if metric(y, name) is not None]
        out.append(pick(vals) if vals else default)
    return [float(v) for v in out]
