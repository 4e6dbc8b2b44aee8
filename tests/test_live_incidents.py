"""Live incidents (bankanom_pipeline/live/incidents.py) against batch ``build_incidents`` on the same
flagged events: equal where the rules allow, different exactly where docs/live-incidents.md says."""

import datetime as dt
import sqlite3

import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.explain import normal_values
from bankanom_pipeline.detection.incident_ids import incident_id
from bankanom_pipeline.detection.incidents import (
    INCIDENT_COLUMNS,
    build_incidents,
    connected_groups,
    default_incident_config,
    link_keys,
)
from bankanom_pipeline.detection.scoring import IF, deviations, explain
from bankanom_pipeline.live.incidents import LiveIncidents, read_incidents
from tests.test_explain import detectors as train_detectors
from tests.test_incidents import T0, event, frame

RARE = "Upstream timeout calling /v#/payments after #ms"
CONFIG = default_incident_config()


@pytest.fixture(scope="module")
def models():
    return train_detectors(default_detection_config(), 1)


def us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def busy_day(seed: int, n: int = 240, rare: bool = True) -> pl.DataFrame:
    """Flagged events over three hours: users, IPs in a few /24s, correlation chains, infrastructure lines
    and (``rare``) a rare template on two services, with random features and scores."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = rng.integers(0, 5 if rare else 4)
        minute = float(np.round(rng.uniform(0, 180), 3))
        score = float(np.round(rng.uniform(0.9, 1.0), 4))
        extra = {"ip_distinct_users_10m": float(rng.integers(0, 5)), "failed_attempts": float(rng.normal())}
        if kind == 0:
            rows.append(
                event(f"u{i:03d}", minute, user=f"USR-{rng.integers(0, 25)}", ip=None, score=score, **extra)
            )
        elif kind == 1:
            ip = f"45.1.{rng.integers(0, 4)}.{rng.integers(1, 250)}"
            rows.append(event(f"n{i:03d}", minute, user=None, ip=ip, score=score, **extra))
        elif kind == 2:
            corr = f"C-{rng.integers(0, 15)}"
            rows.append(
                event(f"c{i:03d}", minute, service="api-gateway", ip="10.9.9.9", corr=corr, score=score)
            )
        elif kind == 3:
            rows.append(
                event(
                    f"p{i:03d}",
                    minute,
                    service="postgres-db",
                    ip="10.1.0.1",
                    template="Replica lag #s",
                    score=score,
                )
            )
        else:
            service = ["api-gateway", "transaction-service"][rng.integers(0, 2)]
            user = f"USR-{rng.integers(0, 25)}"
            rows.append(
                event(
                    f"t{i:03d}",
                    minute,
                    service=service,
                    user=user,
                    ip=None,
                    template=RARE,
                    template_rarity=6.0,
                    score=score,
                )
            )
    day = frame(rows)
    noise = rng.normal(0, 1, (len(rows), 10))
    names = default_detection_config().feature_names
    return day.with_columns(pl.Series(name, noise[:, j % 10] + j) for j, name in enumerate(names[:20]))


def closed(day: pl.DataFrame) -> pl.DataFrame:
    """The day and a lone event two hours after its last one: in order, every group of the day has then
    closed, so live has decided every rare-template link, as batch does at the end of the day."""
    last = (day["ts"].max() - T0).total_seconds() / 60
    lone = frame([event("zz-closing", last + 120, user="USR-closing", ip=None)])
    return pl.concat([day, lone.select(day.columns)], how="vertical_relaxed")


def batch(day: pl.DataFrame, models) -> pl.DataFrame:
    """What the ``incidents`` asset builds from the day (day_incidents.build_day's call)."""
    space = models[IF].space
    built, members = build_incidents(
        day,
        deviations(day, models),
        space.names,
        lambda rows: explain(day[rows], models),
        normals=normal_values(space),
    )
    return built, members


def live(day: pl.DataFrame, models, size: int, restart_at: int | None = None, con=None, **kw):
    """Feed the day in (ts, event_id) order, ``size`` events a batch, committing each batch's writes;
    with ``restart_at``, a new LiveIncidents restores from the tables after that many events."""
    con = con or sqlite3.connect(":memory:")
    con.executescript(LiveIncidents.SCHEMA)
    state = LiveIncidents(**kw)
    ordered = day.sort("ts", "event_id")
    for start in range(0, ordered.height, size):
        if restart_at is not None and start >= restart_at:
            state = LiveIncidents(**kw)
            state.restore(con, models)
            restart_at = None
        commit(con, state.update(ordered[start : start + size], None, models, now=1000.0 + start))
    commit(con, state.settle(models, now=5000.0))
    return con, state


def commit(con, writes):
    cur = con.cursor()
    cur.execute("BEGIN")
    writes(cur)
    cur.execute("COMMIT")


def groups(members: pl.DataFrame) -> set[frozenset]:
    got = members.group_by("incident_id").agg(pl.col("event_id"))
    return {frozenset(x) for x in got["event_id"].to_list()}


def comparable(incidents: pl.DataFrame) -> pl.DataFrame:
    return incidents.select(INCIDENT_COLUMNS).sort("incident_id")


def test_a_day_without_rare_templates_is_the_batch_day_whatever_the_batch_size(models):
    day = closed(busy_day(3, rare=False))
    expected, expected_members = batch(day, models)
    for size in (3, 40, day.height):
        con, _ = live(day, models, size)
        got, members = read_incidents(con)
        assert groups(members) == groups(expected_members), size
        assert comparable(got).equals(comparable(expected)), size


def collapsing(day: pl.DataFrame) -> int:
    """Rare-template events whose entity group is small when they arrive (in order) and grows past
    template_link_max_group later, with another template event of their key within the gap: the events a
    link taken at arrival would have glued to a group batch keeps apart."""
    ordered = day.sort("partition_date", "ts", "event_id")
    ts = ordered["ts"].dt.epoch("us").to_numpy()
    keys = link_keys(ordered, CONFIG)
    entity_keys = [k for k in keys if k[0] != "service_template"]
    final = connected_groups(ts, entity_keys)
    final_size = np.bincount(final)[final]
    template = next(codes for kind, codes, _ in keys if kind == "service_template")
    gap = CONFIG.grouping.gap_minutes.service_template * 60_000_000
    small = CONFIG.grouping.template_link_max_group
    count = 0
    for i in np.flatnonzero((template >= 0) & (final_size > small)):
        arrived = connected_groups(ts[: i + 1], [(k, c[: i + 1], g) for k, c, g in entity_keys])
        near = (template == template[i]) & (np.abs(ts - ts[i]) <= gap)
        count += bool((np.bincount(arrived)[arrived[i]] <= small) and near.sum() > 1)
    return count


@pytest.mark.parametrize("seed", [5, 11])
def test_live_groups_are_batch_groups_with_rare_templates_at_every_update_size(models, seed):
    """Template links wait until both sides' entity groups have closed, then link iff both are at most
    template_link_max_group events, as batch decides at the end of the day: with in-order delivery the
    live incidents are batch's, ids and every column included (docs/live-incidents.md)."""
    day = closed(busy_day(seed))
    assert collapsing(day) > 0, "the day should hold the case a link taken at arrival gets wrong"
    expected, expected_members = batch(day, models)
    ordered = day.sort("partition_date", "ts", "event_id")
    entity = connected_groups(
        ordered["ts"].dt.epoch("us").to_numpy(),
        [k for k in link_keys(ordered, CONFIG) if k[0] != "service_template"],
    )
    entity_groups = {
        frozenset(g)
        for g in ordered.with_columns(g=entity).group_by("g").agg("event_id")["event_id"].to_list()
    }
    assert entity_groups != groups(expected_members), "the day should take template links"
    for size in (1, 9, 40, day.height):
        con, state = live(day, models, size)
        got, members = read_incidents(con)
        assert groups(members) == groups(expected_members), size
        assert comparable(got).equals(comparable(expected)), size
        assert state.waiting_template_events() == 0


def test_a_template_link_waits_until_both_entity_groups_have_closed(models):
    """Each event opens its entity group's incident in the commit that scores it; the template link is
    taken once both entity groups have closed at most template_link_max_group events: a1's group grows
    past it (no link, as in batch), b1 and c1 stay alone and merge under the older id."""
    rows = [
        event("a1", 0, service="api-gateway", user="USR-1", template=RARE, template_rarity=6.0),
        event("b1", 1, service="api-gateway", user="USR-2", template=RARE, template_rarity=6.0),
        event("c1", 2.5, service="api-gateway", user="USR-3", template=RARE, template_rarity=6.0),
        event("a2", 2, user="USR-1"),
        event("a3", 3, user="USR-1"),
    ]
    day = closed(frame(rows))
    _, expected_members = batch(day, models)
    want = {frozenset({"a1", "a2", "a3"}), frozenset({"b1", "c1"}), frozenset({"zz-closing"})}
    assert groups(expected_members) == want
    con = sqlite3.connect(":memory:")
    con.executescript(LiveIncidents.SCHEMA)
    state = LiveIncidents()
    ordered = day.sort("ts", "event_id")
    for i in range(ordered.height - 1):  # one event a commit: each opens its own incident at once
        commit(con, state.update(ordered[i : i + 1], None, models, now=float(i)))
        shown = groups(read_incidents(con)[1])
        assert frozenset({ordered["event_id"][i]}) in shown or ordered["event_id"][i] in ("a2", "a3")
    assert groups(read_incidents(con)[1]) == {
        frozenset({"a1", "a2", "a3"}),
        frozenset({"b1"}),
        frozenset({"c1"}),
    }
    assert state.waiting_template_events() == 2  # b1 and c1; a1 was forgotten when its group grew
    commit(con, state.update(ordered[-1:], None, models, now=10.0))
    assert groups(read_incidents(con)[1]) == want
    everything, _ = read_incidents(con, merged=True)
    older, newer = incident_id("b1", us(T0) + 60_000_000), incident_id("c1", us(T0) + 150_000_000)
    assert everything.filter(pl.col("incident_id") == newer)["merged_into"].to_list() == [older]


def test_closed_groups_wait_for_template_neighbours_a_bounded_time(models):
    """Lone rare-template events 5 minutes apart (never within the template gap) on 5 hours: memory
    holds the open groups and the closed ones a waiting template event could still reach: at most
    ``keep_us`` of event time (docs/live-incidents.md)."""
    rows = [
        event(
            f"t{i:03d}", i * 5.0, service="api-gateway", user=f"USR-{i}", template=RARE, template_rarity=6.0
        )
        for i in range(60)
    ]
    con, state = live(frame(rows), models, 1)
    assert state.keep_us == (30 + 30 + 3) * 60_000_000
    assert state.held_events() <= state.keep_us / 60_000_000 / 5 + 1
    # here the oldest waiting event is the open groups' oldest, and nothing closed is within 3 minutes
    assert state.held_events() == state.hold_us / 60_000_000 / 5 + 1
    assert read_incidents(con)[0].height == 60


def test_open_incidents_leave_out_closed_groups_held_for_a_template_link(models):
    """Lone rare-template events 2 minutes apart (within the 3-minute template gap) for 2 hours: the
    ones of the last 30 minutes are open, each alone and waiting for its group to close; the older ones
    are decided and linked into one closed chain, held because the oldest waiting event can still reach
    it. The stream's open-incident count (its gauge in /metrics) counts only the open ones."""
    rows = [
        event(
            f"t{i:03d}", i * 2.0, service="api-gateway", user=f"USR-{i}", template=RARE, template_rarity=6.0
        )
        for i in range(60)
    ]
    con, state = live(frame(rows), models, 1)
    open_now = sum(1 for i in range(60) if i * 2.0 >= 59 * 2.0 - 30)
    assert state.open_incidents() == open_now == state.waiting_template_events() == 16
    assert read_incidents(con)[0].height == open_now + 1  # the decided chain, one incident
    assert state.held_events() == 60  # the chain is still within reach of the oldest waiting event


def test_ids_and_incidents_survive_a_restart(models):
    """A restart in the middle of template links held back (template events waiting, closed groups kept
    for them) ends with the incidents of a run without one, which are batch's."""
    day = closed(busy_day(7))
    expected, expected_members = batch(day, models)
    con_once, _ = live(day, models, 10)
    ordered = day.sort("ts", "event_id")
    for restart_at in (40, 130, 200):
        before = LiveIncidents()
        for start in range(0, restart_at, 10):
            before.update(ordered[start : start + 10], None, models, now=1.0)
        assert before.waiting_template_events() > 0  # links held back at the restart
        con_twice, _ = live(day, models, 10, restart_at=restart_at)
        a, am = read_incidents(con_once, merged=True)
        b, bm = read_incidents(con_twice, merged=True)
        assert groups(am) == groups(bm)
        assert comparable(a).equals(comparable(b))
        assert a["merged_into"].to_list() == b["merged_into"].to_list()
        got, members = read_incidents(con_twice)
        assert groups(members) == groups(expected_members), restart_at
        assert comparable(got).equals(comparable(expected)), restart_at


def test_merge_keeps_the_older_id_and_hides_the_other(models):
    rows = [
        event("a1", 0, user="USR-1", ip=None),
        event("b1", 1, user="USR-2", ip="9.9.9.9"),
        event("c1", 3, user="USR-1", ip="9.9.9.9"),  # joins both
    ]
    con = sqlite3.connect(":memory:")
    con.executescript(LiveIncidents.SCHEMA)
    state = LiveIncidents()
    day = frame(rows)
    commit(con, state.update(day[:2], None, models, now=1.0))
    first, _ = read_incidents(con)
    assert sorted(first["incident_id"]) == sorted(
        [incident_id("a1", us(T0)), incident_id("b1", us(T0) + 60_000_000)]
    )
    commit(con, state.update(day[2:], None, models, now=2.0))
    shown, members = read_incidents(con)
    everything, _ = read_incidents(con, merged=True)
    older = incident_id("a1", us(T0))
    assert shown["incident_id"].to_list() == [older]
    assert groups(members) == {frozenset({"a1", "b1", "c1"})}
    gone = everything.filter(pl.col("merged_into").is_not_null()).row(0, named=True)
    assert gone["incident_id"] == incident_id("b1", us(T0) + 60_000_000) and gone["merged_into"] == older
    assert shown["opened_at"].to_list() == [1.0] and shown["updated_at"].to_list() == [2.0]
    # the batch run names the incident the same way
    built, _ = batch(day, models)
    assert built["incident_id"].to_list() == [older]


def test_a_late_event_before_the_first_keeps_the_visible_id(models):
    day = frame([event("a2", 5, user="USR-1"), event("a1", 1, user="USR-1")])
    con = sqlite3.connect(":memory:")
    con.executescript(LiveIncidents.SCHEMA)
    state = LiveIncidents()
    commit(con, state.update(day[:1], None, models, now=1.0))
    commit(con, state.update(day[1:], None, models, now=2.0))
    got, _members = read_incidents(con)
    assert got["incident_id"].to_list() == [incident_id("a2", us(T0) + 5 * 60_000_000)]
    assert got["first_event_id"].to_list() == ["a2"] and got["event_count"].to_list() == [2]
    built, _ = batch(day, models)  # batch names it after a1: reconciliation matches them by events
    assert built["incident_id"].to_list() == [incident_id("a1", us(T0) + 60_000_000)]


def test_an_incident_crossing_midnight_keeps_its_first_day(models):
    late = dt.datetime(2026, 1, 5, 23, 58, tzinfo=dt.UTC)
    rows = [event("m1", 0, user="USR-1"), event("m2", 4, user="USR-1")]
    for r, t in zip(rows, (late, late + dt.timedelta(minutes=4)), strict=True):
        r["ts"], r["partition_date"] = t, t.date()
    day = frame(rows)
    con, _ = live(day, models, 1)
    got, _members = read_incidents(con)
    assert got["incident_id"].to_list() == [incident_id("m1", us(late))]
    assert got["partition_date"].to_list() == [dt.date(2026, 1, 5)] and got["event_count"].to_list() == [2]
    assert read_incidents(con, day="2026-01-05")[0].height == 1
    built, _ = batch(day, models)  # batch partitions split at midnight
    assert built["incident_id"].to_list() == [
        incident_id("m1", us(late)),
        incident_id("m2", us(late) + 240_000_000),
    ]


def test_memory_holds_open_groups_only_and_closed_rows_stay(models):
    rows = [event(f"e{i:03d}", i * 2.0, user=f"USR-{i}", ip=None) for i in range(150)]  # 5 hours, lone
    con, state = live(frame(rows), models, 5)
    hold_minutes = state.hold_us / 60_000_000
    assert state.held_events() <= hold_minutes / 2 + 5  # the last ~30 minutes' lone events
    assert read_incidents(con)[0].height == 150


def one_large_group(n: int, seed: int = 5) -> pl.DataFrame:
    """``n`` flagged events a second apart that link into one incident: 15 users on one address, and
    one user on 20 addresses, over two services, random scores and features."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        service = ("auth-service", "api-gateway")[i % 2]
        score = float(np.round(rng.uniform(0.9, 1.0), 4))
        extra = {"failed_attempts": float(rng.normal(3, 1)), "hour_of_day": float(rng.integers(0, 24))}
        if i % 2:
            rows.append(
                event(f"g{i:05d}", i / 60, service, user=f"USR-{i % 15}", ip="45.1.0.7", score=score, **extra)
            )
        else:
            rows.append(
                event(
                    f"g{i:05d}",
                    i / 60,
                    service,
                    user="USR-1",
                    ip=f"45.1.0.{i % 20 + 10}",
                    score=score,
                    **extra,
                )
            )
    return frame(rows)


FIGURES = ["incident_id", "partition_date", "start_ts", "end_ts", "event_count", "services", "users", "ips",
           "user_count", "ip_count", "max_score", "severity", "reported"]  # fmt: skip
RCA = ["origin_service", "origin_entity", "scenario_id", "scenario_confidence", "top_features"]


def test_a_large_groups_figures_follow_every_batch_and_its_root_cause_waits(models):
    """Past ``large_group`` events a group's figures come from its running aggregates at every batch,
    equal to batch's on the events so far; its root cause is the last pass's until the wait is over,
    and at settle every column is batch's."""
    day = one_large_group(60)
    con = sqlite3.connect(":memory:")
    con.executescript(LiveIncidents.SCHEMA)
    state = LiveIncidents(large_group=10, large_group_every_s=5.0)
    for i in range(0, 60, 5):
        commit(con, state.update(day[i : i + 5], None, models, now=100.0 + i * 0.05))  # 3 s in all
        got = comparable(read_incidents(con)[0])
        want = comparable(batch(day[: i + 5], models)[0])
        assert got.height == want.height == 1
        assert got.select(FIGURES).equals(want.select(FIGURES)), i
        assert got["mean_score"][0] == pytest.approx(want["mean_score"][0], rel=1e-12)
        assert str(got["event_count"][0]) + " flagged event(s)" in got["summary"][0]
    # the last pass ran at 10 events (the most not waiting): its root cause is shown
    at_ten = comparable(batch(day[:10], models)[0])
    assert got.select(RCA).equals(at_ten.select(RCA))
    commit(con, state.settle(models, now=104.0))
    assert comparable(read_incidents(con)[0]).equals(comparable(batch(day, models)[0]))


def test_the_root_cause_of_a_large_group_waits_in_proportion_to_its_cost(models):
    """A pass costs in proportion to the group; it runs again once ``large_group_every_s`` is over and
    its last cost over ``rca_share`` too, so the passes take a bounded share of the stream."""
    day = one_large_group(40)
    at_twenty = comparable(batch(day[:20], models)[0])
    assert not at_twenty.select(RCA).equals(comparable(batch(day, models)[0]).select(RCA))
    for share, rebuilt in ((1.0, True), (1e-9, False)):
        con = sqlite3.connect(":memory:")
        con.executescript(LiveIncidents.SCHEMA)
        state = LiveIncidents(large_group=10, large_group_every_s=5.0, rca_share=share)
        commit(con, state.update(day[:20], None, models, now=100.0))  # a pass on 20 events
        commit(con, state.update(day[20:40], None, models, now=110.0))  # 10 s later
        got = comparable(read_incidents(con)[0])
        full = comparable(batch(day, models)[0])
        if rebuilt:
            assert got.equals(full)
        else:
            assert got.select(FIGURES).equals(full.select(FIGURES))
            assert got.select(RCA).equals(at_twenty.select(RCA))


def test_a_batch_joining_a_large_group_costs_the_batch_not_the_group(models, monkeypatch):
    """A group of 3,000 events: after it passed ``large_group``, batches joining it within the wait
    give build_incidents none of its events (no pass), and nothing copies its member list."""
    import bankanom_pipeline.live.incidents as live_incidents

    seen = []
    real = live_incidents.build_incidents

    def counting(flagged, *args, **kw):
        seen.append(flagged.height)
        return real(flagged, *args, **kw)

    monkeypatch.setattr(live_incidents, "build_incidents", counting)
    day = one_large_group(3_000)
    con = sqlite3.connect(":memory:")
    con.executescript(LiveIncidents.SCHEMA)
    state = LiveIncidents(large_group=500, large_group_every_s=5.0)
    commit(con, state.update(day[:2_000], None, models, now=100.0))
    assert seen == [2_000]
    for i in range(2_000, 3_000, 100):
        commit(con, state.update(day[i : i + 100], None, models, now=100.0 + (i - 2_000) / 1_000))
    assert seen == [2_000]  # ten batches within the wait: no pass over the group
    got = comparable(read_incidents(con)[0])
    assert got["event_count"].to_list() == [3_000]
    commit(con, state.settle(models, now=200.0))
    assert seen == [2_000, 3_000]
    assert comparable(read_incidents(con)[0]).equals(comparable(batch(day, models)[0]))


def test_a_redelivered_event_is_ignored(models):
    day = frame([event("a1", 0, user="USR-1"), event("a2", 1, user="USR-1")])
    con = sqlite3.connect(":memory:")
    con.executescript(LiveIncidents.SCHEMA)
    state = LiveIncidents()
    commit(con, state.update(day, None, models, now=1.0))
    commit(con, state.update(day[1:], None, models, now=2.0))
    assert read_incidents(con)[0]["event_count"].to_list() == [2]


def test_a_large_groups_root_cause_pass_runs_beside_the_batches(models):
    """With ``background`` a due pass of a large group runs in a thread on the members it had when it
    started; the batch that starts it writes the aggregates' row at once, and the first batch after the
    pass ends writes its root cause. A merge or a pass in the batch since makes a finished pass stale;
    the passes at settle stay in the batch, so the final row is batch's in every column."""
    day = one_large_group(60)
    con = sqlite3.connect(":memory:")
    con.executescript(LiveIncidents.SCHEMA)
    state = LiveIncidents(large_group=10, large_group_every_s=5.0, rca_share=1.0, background=True)
    commit(con, state.update(day[:20], None, models, now=100.0))  # a pass in the batch: a new group
    assert state.background_figures["passes"] == 0
    commit(con, state.update(day[20:40], None, models, now=110.0))  # waited: a pass on 40, aside
    state.wait_for_background()
    assert state.background_figures["passes"] == 1
    at_twenty, at_forty = (comparable(batch(day[:n], models)[0]) for n in (20, 40))
    got = comparable(read_incidents(con)[0])
    assert got.select(RCA).equals(at_twenty.select(RCA))  # that batch did not wait for the pass
    commit(con, state.update(day[40:50], None, models, now=111.0))  # adopted: its figures are at 50
    got = comparable(read_incidents(con)[0])
    assert got.select(RCA).equals(at_forty.select(RCA))
    assert got.select(FIGURES).equals(comparable(batch(day[:50], models)[0]).select(FIGURES))
    assert not at_twenty.select(RCA).equals(at_forty.select(RCA))  # the test can tell them apart
    # a pass started, then a settle rebuilds the group in the batch: the pass's result is stale
    commit(con, state.update(day[50:55], None, models, now=130.0))
    commit(con, state.settle(models, now=131.0))
    state.wait_for_background()
    commit(con, state.update(day[55:], None, models, now=131.5))
    assert state.background_figures["passes"] + state.background_figures["dropped"] == 2
    assert state.background_figures["stale"] == state.background_figures["passes"] - 1
    commit(con, state.settle(models, now=132.0))
    assert comparable(read_incidents(con)[0]).equals(comparable(batch(day, models)[0]))
