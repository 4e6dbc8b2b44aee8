"""The online feature engine: event by event, the feature vector ``features_events`` holds for the event,
computed point in time (docs/features.md) from each entity's retained events, in plain Python.

How it works, state, memory bounds, bad input and the checkpoint format: docs/online.md.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_left
from collections.abc import Iterable
from pathlib import Path
from sys import intern
from typing import NamedTuple

from bankanom_pipeline.online.aggregates import amount_z, metric_row, p95_sorted
from bankanom_pipeline.online.events import (
    LEVELS,
    BadEvent,
    Event,
    geo_seed,
    metric_values,
    network,
    session,
    template,
)
from bankanom_pipeline.online.schema import (
    DAY,
    FEATURES,
    H1,
    HORIZON,
    M10,
    M30,
    MIN,
    TYPES,
    WINDOWS,
    Features,
)
from bankanom_pipeline.online.tracks import Track
from bankanom_pipeline.online.windows import GAUGES as GAUGE_COLUMNS
from bankanom_pipeline.online.windows import ServiceTrack, WindowedTrack

# how often (in event time) idle entities are looked for and dropped: each look visits every entity (tens
# of thousands, milliseconds), and state holds up to this much event time beyond the retention
SWEEP_EVERY = H1

# at most this many services' minutes in peek's memo (a batch of 1,000 events of 11 services at about
# the same time holds a few dozen)
MINUTES_KEPT = 4096

# The digest of the feature SQL this engine implements (bankanom_pipeline/online/version.py computes the
# SQL's own). Declared, not imported: a change of the SQL fails tests/test_online_engine.py until the
# engine is changed to match and this is updated, and replay proves them equal again.
ENGINE_FEATURE_SET_VERSION = "9e879fd6d84d"

# the service's six gauges: which is a minimum (cache_hit_rate), and each one's value without input
_IS_MIN = (False, False, True, False, False, False)
_GAUGE_DEFAULTS = (0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
_TWO_PI = 2 * math.pi
_DEG = math.pi / 180.0


class Outcome(NamedTuple):
    """What ``ingest`` did with an event: ``status`` is ingested, late (ingested, out of order),
    duplicate, too_late or invalid (refused: ``reason`` says why); ``features`` for ingested and late."""

    status: str
    event_id: str
    features: Features | None = None
    reason: str | None = None


class TooLate(ValueError):
    """The event is older than the engine keeps: its windows are no longer complete."""


class OnlineEngine:
    FEATURES = FEATURES
    FEATURE_SET_VERSION = ENGINE_FEATURE_SET_VERSION

    # An hour of lateness by default: state holds the last 24 h + the allowance, and at the default
    # population's 1.1M events a day an allowance of 24 h would be ~1.4 GB of state against the 1 GiB
    # budget (docs/online.md, "State, retention and memory"). Later events are refused as too_late.
    DEFAULT_LATENESS_S = 3600.0

    def __init__(self, *, allowed_lateness_s: float = DEFAULT_LATENESS_S):
        if not (allowed_lateness_s >= 0 and math.isfinite(allowed_lateness_s)):
            raise ValueError(f"allowed_lateness_s must be a finite number >= 0, not {allowed_lateness_s!r}")
        self.allowed_lateness_s = float(allowed_lateness_s)
        self._lateness = round(allowed_lateness_s * 1_000_000)
        # events older than the newest by more than this are in no window of an event still accepted
        self._retention = HORIZON + self._lateness
        self._hwm: tuple[int, str] | None = None  # the newest (ts, event_id) ingested
        self._swept = 0  # ts of the last sweep of idle entities
        self._all = Track()  # every event: the denominator of template_rarity, and duplicates
        self._seen: set[str] = set()
        self._template: dict[str, Track] = {}
        self._quiet = Track()  # quiet events with a non-empty country
        self._quiet_country: dict[str, Track] = {}
        self._user: dict[str, Track] = {}
        self._amount: dict[str, Track] = {}
        self._session: dict[str, Track] = {}
        self._ip: dict[str, Track] = {}
        self._net: dict[str, Track] = {}
        self._service: dict[str, Track] = {}
        self._geo = geo_seed()
        self._clock: tuple = (None,)
        self._networks: dict[str, str] = {}  # address -> network, emptied at each sweep
        # peek's memo of a service's minute as the slices give it, by (service, start, end index): a batch
        # of peeks at about the same time reads the same minutes again and again. Emptied by every
        # ingest, the one thing that changes the tracks (after a fold an index names other events)
        self._minutes: dict[tuple[str, int, int], tuple] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("ingested", "late", "duplicate", "too_late", "invalid", "new_user", "new_service", "new_ip"), 0
        )

    @property
    def high_water_mark(self) -> tuple[int, str] | None:
        """The newest ``(ts µs, event_id)`` ingested, or None before the first event."""
        return self._hwm

    # ---------------------------------------------------------------- public API

    def ingest(self, event: Event) -> Outcome:
        """Compute ``event``'s features point in time, then fold it into the state."""
        if self._minutes:
            self._minutes.clear()
        try:
            p = self._prepare(event)
        except BadEvent as error:
            self.counters["invalid"] += 1
            return Outcome("invalid", str(event.event_id), None, str(error))
        t, eid = p[0], p[1]
        if eid in self._seen:
            self.counters["duplicate"] += 1
            return Outcome("duplicate", eid)
        hwm = self._hwm
        in_order = hwm is None or (t, eid) > hwm
        if not in_order and t < hwm[0] - self._lateness:
            self.counters["too_late"] += 1
            return Outcome("too_late", eid, None, f"{(hwm[0] - t) / 1e6:.0f} s older than the newest event")
        features = self._compute(p, in_order, in_order)
        self._fold(p, in_order)
        if in_order:
            self._hwm = (t, eid)
            self.counters["ingested"] += 1
            if t - self._swept > SWEEP_EVERY:
                self._sweep(t)
            return Outcome("ingested", eid, features)
        self.counters["late"] += 1
        return Outcome("late", eid, features)

    def ingest_many(self, events: Iterable[Event]) -> list[Outcome]:
        ingest = self.ingest
        return [ingest(e) for e in events]

    def peek(self, event: Event) -> Features:
        """The features ``event`` would get if ingested now; the state is not changed. Raises
        ``BadEvent`` for an invalid event, ``TooLate`` for one older than the lateness allowed."""
        p = self._prepare(event)
        hwm = self._hwm
        in_order = hwm is None or (p[0], p[1]) > hwm
        if not in_order and p[0] < hwm[0] - self._lateness:
            raise TooLate(f"event {p[1]} is older than the newest event by more than the lateness allowed")
        if len(self._minutes) > MINUTES_KEPT:  # peeks without ingests in between, at ever later times
            self._minutes.clear()
        return self._compute(p, in_order, False, self._minutes)

    def checkpoint(self, path: str | Path) -> None:
        from bankanom_pipeline.online.checkpoint import write

        write(self, Path(path))

    @classmethod
    def restore(cls, path: str | Path) -> OnlineEngine:
        from bankanom_pipeline.online.checkpoint import read

        return read(cls, Path(path))

    def memory_bytes(self) -> dict[str, int]:
        """Approximate bytes of the retained state per entity kind (lists and numbers; the strings the
        events share are counted once in ``events``)."""
        out = {}
        for kind, tracks in self._kinds().items():
            if isinstance(tracks, Track):
                out[kind] = tracks.nbytes()
            else:
                out[kind] = sum(t.nbytes() + 100 for t in tracks.values())
        out["events"] = sum(len(e) + 49 for e in self._seen) * 2
        out["total"] = sum(out.values())
        return out

    def entity_counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self._kinds().items()}

    # ---------------------------------------------------------------- internals

    @staticmethod
    def new_track(kind: str) -> Track:
        """An empty track of a kind of entity (``_kinds``' names)."""
        if kind == "service":
            return ServiceTrack(TYPES[kind])
        if kind in WINDOWS:
            return WindowedTrack(TYPES[kind], WINDOWS[kind])
        return Track(TYPES.get(kind, ""))

    def _kinds(self) -> dict[str, Track | dict[str, Track]]:
        return {
            "all": self._all,
            "template": self._template,
            "quiet": self._quiet,
            "quiet_country": self._quiet_country,
            "user": self._user,
            "amount": self._amount,
            "session": self._session,
            "ip": self._ip,
            "network": self._net,
            "service": self._service,
        }

    def _prepare(self, e: Event) -> tuple:
        """The event's derived values, as the SQL derives them."""
        eid, ts, service, log_level, message, _, user, ip, geo, metrics = e
        if ts.__class__ is not int:
            raise BadEvent("bad_timestamp", f"{eid}: ts must be epoch microseconds (int)")
        if not (eid.__class__ is service.__class__ is log_level.__class__ is message.__class__ is str):
            raise BadEvent(
                "missing_field", f"{eid}: event_id, source_service, log_level and message must be text"
            )
        for value in (user, ip, geo):
            if value is not None and value.__class__ is not str:
                raise BadEvent(
                    "bad_type", f"{eid}: user_id, ip_address and geo_location must be text or null"
                )
        if metrics is not None and metrics.__class__ is not dict:
            raise BadEvent("bad_metrics", f"{eid}: metrics must be an object")
        # One copy of each user, address and country however many events name them: the tracks hold a
        # reference per event, and a string parsed from each event's JSON would be a copy per event.
        if user is not None:
            user = intern(user)
        if ip is None:
            net = None
        else:
            ip = intern(ip)
            net = self._networks.get(ip)
            if net is None:
                net = self._networks[ip] = intern(network(ip))
        return (
            ts,
            eid,
            service,
            LEVELS.get(log_level, 4),
            template(message),
            None if geo is None else intern(geo.split("-", 1)[0]),
            user,
            ip,
            net,
            session(message) if user is not None else None,
            None if geo is None else self._geo.get(geo),
            message.startswith("Login failed"),
            message.startswith("VPN connection"),
            metric_values(eid, metrics),
        )

    def _compute(self, p: tuple, in_order: bool, live: bool, minutes: dict | None = None) -> Features:
        """The features of prepared event ``p``: ``in_order`` when it follows every event ingested,
        ``live`` when it will be ingested next (the service's running minute may then slide);
        ``minutes``: peek's memo of services' minutes (valid until the state changes)."""
        t, eid, service, level, tpl, country, user, ip, net, ses, located, failed, vpn, m = p
        failed_i = 1 if failed else 0

        # -- per event: the hour encodings change once a minute
        minute = t // MIN
        clock = self._clock
        if clock[0] != minute:
            moment = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=t)
            hour = moment.hour + moment.minute / 60.0
            clock = self._clock = (
                minute,
                math.sin(_TWO_PI * hour / 24),
                math.cos(_TWO_PI * hour / 24),
                1.0 if moment.isoweekday() >= 6 else 0.0,
            )
        out: list[float] = [float(level), clock[1], clock[2], clock[3]]
        bound_day = t - DAY

        # -- template rarity (24 h, every event)
        n_all = self._all.since(bound_day, t, eid, in_order) + 1
        track = self._template.get(tpl)
        n_tpl = 1 if track is None else track.since(bound_day, t, eid, in_order) + 1
        out.append(-math.log(n_tpl / n_all))

        # -- rare quiet country (24 h, quiet events with a country)
        if level <= 1 and country:
            n_quiet = self._quiet.since(bound_day, t, eid, in_order) + 1
            track = self._quiet_country.get(country)
            n_country = 1 if track is None else track.since(bound_day, t, eid, in_order) + 1
            out.append(max(math.log(0.01 / (n_country / n_quiet)), 0.0))
        else:
            out.append(0.0)

        # -- the event's metrics
        out.extend(metric_row(m))

        # -- user
        if user is None:
            out.extend((0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0))
        else:
            track = self._user.get(user)
            amount = m[9]
            x = None if amount is None else math.log(1 + amount)
            vpn_i = 1 if vpn else 0
            rec = 0.0 if m[17] is None else m[17]
            byt = 0.0 if m[18] is None else m[18]
            if track is None:
                out.extend((1.0, float(failed_i)))
                out.append(0.0 if ip is None else 1.0)
                out.append(0.0 if country is None else 1.0)
                out.extend((float(vpn_i), rec, byt, 1.0, 1.0))
                lo24 = hi = 0
            elif live and track.windows is not None:
                w10, w30, w60, w24 = track.slide(t)
                hi = len(track.ts)
                lo24 = w24.lo
                out.append(float(hi - w10.lo + 1))
                out.append(float(w10.sums[0] + failed_i))
                ips, countries = w60.counters
                out.append(float(len(ips) - (None in ips) + (ip is not None and ip not in ips)))
                out.append(
                    float(
                        len(countries)
                        - (None in countries)
                        + (country is not None and country not in countries)
                    )
                )
                out.append(float(w60.sums[0] + vpn_i))
                out.append(w10.total(track, 1) + rec)
                out.append(w30.total(track, 0) + byt)
                n24 = hi - lo24 + 1
                ips, countries = w24.counters
                out.append((countries.get(country, 0) + 1) / n24)
                out.append((ips.get(ip, 0) + 1) / n24)
            else:
                ts = track.ts
                hi = len(ts) if in_order else track.upper(t, eid)
                lo24 = bisect_left(ts, bound_day, track.head, hi)
                lo60 = bisect_left(ts, t - H1, lo24, hi)
                lo30 = bisect_left(ts, t - M30, lo60, hi)
                lo10 = bisect_left(ts, t - M10, lo30, hi)
                c = track.cols
                out.append(float(hi - lo10 + 1))
                out.append(float(sum(c[2][lo10:hi]) + failed_i))
                ips = set(c[0][lo60:hi])
                ips.add(ip)
                ips.discard(None)
                out.append(float(len(ips)))
                countries = set(c[1][lo60:hi])
                countries.add(country)
                countries.discard(None)
                out.append(float(len(countries)))
                out.append(float(sum(c[3][lo60:hi]) + vpn_i))
                out.append(sum(c[4][lo10:hi]) + rec)
                out.append(sum(c[5][lo30:hi]) + byt)
                n24 = hi - lo24 + 1
                out.append((c[1][lo24:hi].count(country) + 1) / n24)
                out.append((c[0][lo24:hi].count(ip) + 1) / n24)
            # session (24 h): distinct addresses among the session's events
            if ses is None:
                out.append(0.0)
            else:
                strack = self._session.get(ses)
                if strack is None:
                    out.append(0.0 if ip is None else 1.0)
                elif live and strack.windows is not None:
                    (w,) = strack.slide(t)
                    sips = w.counters[0]
                    out.append(float(len(sips) - (None in sips) + (ip is not None and ip not in sips)))
                else:
                    shi = len(strack.ts) if in_order else strack.upper(t, eid)
                    slo = bisect_left(strack.ts, bound_day, strack.head, shi)
                    sips = set(strack.cols[0][slo:shi])
                    sips.add(ip)
                    sips.discard(None)
                    out.append(float(len(sips)))
            # the amount against the user's earlier amounts of the last 24 h
            atrack = None if x is None else self._amount.get(user)
            z = 0.0
            if atrack is not None:
                ahi = len(atrack.ts) if in_order else atrack.upper(t, eid)
                alo = bisect_left(atrack.ts, bound_day, atrack.head, ahi)
                if ahi - alo >= 3:
                    c = atrack.cols
                    z = amount_z(x, ahi - alo, sum(c[0][alo:ahi]), sum(c[1][alo:ahi]))
            out.append(z)
            # travel from the latest earlier located event within 24 h
            km = speed = 0.0
            if located is not None and track is not None:
                c_lat = track.cols[6]
                for i in range(hi - 1, lo24 - 1, -1):
                    plat = c_lat[i]
                    if plat is not None:
                        lat, lon = located
                        plon = track.cols[7][i]
                        km = (
                            2
                            * 6371
                            * math.asin(
                                math.sqrt(
                                    math.sin((lat - plat) * _DEG / 2) ** 2
                                    + math.cos(plat * _DEG)
                                    * math.cos(lat * _DEG)
                                    * math.sin((lon - plon) * _DEG / 2) ** 2
                                )
                            )
                        )
                        speed = km / max((t - track.ts[i]) / 1e6 / 3600.0, 1 / 60.0)
                        break
            out.append(km)
            out.append(speed)

        # -- ip and network (10 min)
        if ip is None:
            out.extend((0.0,) * 7)
        else:
            error_i = 1 if level >= 3 else 0
            track = self._ip.get(ip)
            if track is None:
                out.extend((1.0, 0.0 if user is None else 1.0, float(failed_i), float(error_i)))
            elif live and track.windows is not None:
                (w,) = track.slide(t)
                users = w.counters[0]
                out.append(float(len(track.ts) - w.lo + 1))
                out.append(float(len(users) - (None in users) + (user is not None and user not in users)))
                out.append(float(w.sums[0] + failed_i))
                out.append(float(w.sums[1] + error_i))
            else:
                hi = len(track.ts) if in_order else track.upper(t, eid)
                lo = bisect_left(track.ts, t - M10, track.head, hi)
                c_user, c_failed, c_error = track.cols
                users = set(c_user[lo:hi])
                users.add(user)
                users.discard(None)
                out.append(float(hi - lo + 1))
                out.append(float(len(users)))
                out.append(float(sum(c_failed[lo:hi]) + failed_i))
                out.append(float(sum(c_error[lo:hi]) + error_i))
            track = self._net.get(net)
            if track is None:
                out.extend((0.0 if user is None else 1.0, 1.0, float(failed_i)))
            elif live and track.windows is not None:
                (w,) = track.slide(t)
                users, ips = w.counters
                out.append(float(len(users) - (None in users) + (user is not None and user not in users)))
                out.append(float(len(ips) + (ip not in ips)))
                out.append(float(w.sums[0] + failed_i))
            else:
                hi = len(track.ts) if in_order else track.upper(t, eid)
                lo = bisect_left(track.ts, t - M10, track.head, hi)
                c_user, c_ip, c_failed = track.cols
                users = set(c_user[lo:hi])
                users.add(user)
                users.discard(None)
                ips = set(c_ip[lo:hi])
                ips.add(ip)
                out.append(float(len(users)))
                out.append(float(len(ips)))
                out.append(float(sum(c_failed[lo:hi]) + failed_i))

        # -- service (1 min, and 24 h for the load)
        track = self._service.get(service)
        is_error = 1 if level >= 3 else 0
        is_warn = 1 if level == 2 else 0
        rt, timeout, err_rate, cache, lag, rps, files = m[0], m[3], m[2], m[15], m[14], m[1], m[21]
        if track is None:
            n1 = n24 = 1
            first = t
            errors, warns = is_error, is_warn
            n_ips = 0 if ip is None else 1
            p95 = 0.0 if rt is None else rt
            gauges = (timeout, err_rate, cache, lag, rps, files)
            maxes = [g for g in gauges]
        else:
            ts = track.ts
            if live:
                hi = len(ts)
                lo24 = bisect_left(ts, bound_day, track.head, hi)
                start = t - MIN
                lo = track.lo
                if lo < hi and ts[lo] < start:
                    track.advance(start)
                else:
                    track.bound = start
                lo = track.lo
                minute = (track.errors, track.warns, track.ips, track.rts, track.ext)
            else:
                hi = len(ts) if in_order else track.upper(t, eid)
                lo24 = bisect_left(ts, bound_day, track.head, hi)
                lo = bisect_left(ts, t - MIN, lo24, hi)
                if minutes is None:
                    minute = _minute(track.cols, lo, hi)
                else:
                    key = (service, lo, hi)
                    minute = minutes.get(key)
                    if minute is None:
                        minute = minutes[key] = _minute(track.cols, lo, hi)
            n1 = hi - lo + 1
            n24 = hi - lo24 + 1
            first = ts[lo24] if lo24 < hi else t
            errors, warns, ips, rts, ext = minute
            errors += is_error
            warns += is_warn
            n_ips = len(ips) + (1 if ip is not None and ip not in ips else 0)
            p95 = p95_sorted(rts, rt)
            maxes = []
            gauges = (timeout, err_rate, cache, lag, rps, files)
            for current, own, smallest in zip(ext, gauges, _IS_MIN, strict=True):
                if current is None:
                    maxes.append(own)
                elif own is None or (own >= current if smallest else own <= current):
                    maxes.append(current)
                else:
                    maxes.append(own)
        minutes = max((t - first) / 1e6 / 60.0, 1.0)
        out.append(n1 / (n24 / minutes))
        out.append(errors / n1)
        out.append(warns / n1)
        out.append(float(n_ips))
        out.append(p95)
        for v, default in zip(maxes, _GAUGE_DEFAULTS):  # noqa: B905 - six each
            out.append(default if v is None else v)
        return tuple(out)

    def _fold(self, p: tuple, in_order: bool) -> None:
        t, eid, service, level, tpl, country, user, ip, net, ses, located, failed, vpn, m = p
        failed_i = 1 if failed else 0
        error_i = 1 if level >= 3 else 0
        plain = [self._all]
        track = self._template.get(tpl)
        if track is None:
            track = self._template[tpl] = Track()
        plain.append(track)
        if level <= 1 and country:
            plain.append(self._quiet)
            track = self._quiet_country.get(country)
            if track is None:
                track = self._quiet_country[country] = Track()
            plain.append(track)
        for track in plain:
            if in_order:
                track.ts.append(t)
                track.eid.append(eid)
            else:
                track.insert(track.upper(t, eid), t, eid, ())
        rows: list[tuple[Track, tuple]] = []
        new = self.new_track
        if user is not None:
            track = self._user.get(user)
            if track is None:
                track = self._user[user] = new("user")
                self.counters["new_user"] += 1
            lat, lon = located if located is not None else (None, None)
            amount = m[9]
            if amount is not None:
                la = math.log(1 + amount)
                track_a = self._amount.get(user)
                if track_a is None:
                    track_a = self._amount[user] = Track(TYPES["amount"])
                rows.append((track_a, (la, la * la)))
            rows.append(
                (
                    track,
                    (
                        ip,
                        country,
                        failed_i,
                        1 if vpn else 0,
                        0.0 if m[17] is None else m[17],
                        0.0 if m[18] is None else m[18],
                        lat,
                        lon,
                    ),
                )
            )
            if ses is not None:
                track = self._session.get(ses)
                if track is None:
                    track = self._session[ses] = new("session")
                rows.append((track, (ip,)))
        if ip is not None:
            track = self._ip.get(ip)
            if track is None:
                track = self._ip[ip] = new("ip")
                self.counters["new_ip"] += 1
            rows.append((track, (user, failed_i, error_i)))
            track = self._net.get(net)
            if track is None:
                track = self._net[net] = new("network")
            rows.append((track, (user, ip, failed_i)))
        track = self._service.get(service)
        if track is None:
            track = self._service[service] = new("service")
            self.counters["new_service"] += 1
        rows.append(
            (track, (error_i, 1 if level == 2 else 0, ip, m[0], m[3], m[2], m[15], m[14], m[1], m[21]))
        )
        if in_order:
            for track, values in rows:
                at = len(track.ts)
                track.ts.append(t)
                track.eid.append(eid)
                for col, value in zip(track.cols, values):  # noqa: B905 - the kind's width
                    col.append(value)
                track.add(at)
        else:
            for track, values in rows:
                at = track.upper(t, eid)
                track.insert(at, t, eid, values)
                track.add(at)
        self._seen.add(eid)
        hwm = self._hwm
        bound = (hwm[0] if hwm is not None and hwm[0] > t else t) - self._retention
        for dropped in self._all.expire(bound):
            self._seen.discard(dropped)

    def _sweep(self, now: int) -> None:
        """Drop every entity's events older than the retention, and the entities left with none."""
        self._swept = now
        self._networks.clear()
        bound = now - self._retention
        for tracks in self._kinds().values():
            if isinstance(tracks, Track):
                tracks.expire(bound)
                continue
            empty = []
            for key, track in tracks.items():
                ts = track.ts
                # most entities are either wholly expired or have nothing to expire: neither needs the
                # windows slid
                if not ts or ts[-1] < bound:
                    empty.append(key)
                elif ts[track.head] < bound:
                    track.expire(bound)
            for key in empty:
                del tracks[key]


def _minute(cols: tuple, lo: int, hi: int) -> tuple:
    """A service's events ``lo:hi`` as ``ServiceTrack``'s running minute holds them: errors, warnings,
    the addresses (None left out), the sorted response times and the six gauges' extremes (the first of
    equal ones, as ``max`` and ``min`` pick; None without values). Read, never changed, by the events
    scored against it."""
    ips = set(cols[2][lo:hi])
    ips.discard(None)
    rts = [v for v in cols[3][lo:hi] if v is not None]
    rts.sort()
    ext = []
    for col, smallest in zip(GAUGE_COLUMNS, _IS_MIN, strict=True):
        present = [v for v in cols[col][lo:hi] if v is not None]
        ext.append((min(present) if smallest else max(present)) if present else None)
    return sum(cols[0][lo:hi]), sum(cols[1][lo:hi]), ips, rts, ext
