"""Deterministic synthetic bank transactions with labelled fraud patterns.

The output has exactly the layout of the public Kaggle "bank transactions for fraud detection" CSV
(``CSV_COLUMNS``); the labels (``TransactionID, is_fraud, pattern, instance_id``) are a separate frame.

Normal traffic comes from accounts with habits: a home city, age and occupation that fit together, a few
usual devices, IPs and merchants, a channel mix, a lognormal amount habit, a transaction rate, a daily
activity curve, and a balance that debits lower and credits (salary, deposits) raise. A few accounts
travel (a day or more after their last transaction at home), so a foreign city alone is not fraud.

Fraud instances (``PATTERNS``) each belong to one account and sit among its normal traffic. Everything
is vectorised numpy/polars; one ``numpy`` generator seeded by ``seed`` makes the output reproducible.

Account ids are ``AC`` + the seed's digits + five digits (``AC7`` + ``01234`` for seed 7): the seed is a
bank's customer base, and a delivery generated with another seed is other customers by construction
(issue 26's held-out protocol, "new accounts and seed"). One 1..99,999 space shared by every seed would
give about 5% of a 5,000-account delivery the id of another seed's customer, whose history the new
customer would inherit (other devices, IPs, city, channels: a takeover's signature). The seed in the id
needs no bookkeeping in callers, where a ``first_account`` range (like ``first_id``) would make every
caller keep its deliveries' ranges apart; the ids stay Kaggle-like (``AC`` + digits, 8 to 26
characters). Deliveries of one seed share ids: with the same arguments they are the same customers,
with another account count they are not (the habits are drawn from the same stream), so deliveries
meant as other customers take another seed.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from bankanom_pipeline import settings

CSV_COLUMNS: list[str] = [
    "TransactionID",
    "AccountID",
    "TransactionAmount",
    "TransactionDate",
    "TransactionType",
    "Location",
    "DeviceID",
    "IP Address",
    "MerchantID",
    "Channel",
    "CustomerAge",
    "CustomerOccupation",
    "TransactionDuration",
    "LoginAttempts",
    "AccountBalance",
    "PreviousTransactionDate",
]
LABEL_COLUMNS: list[str] = ["TransactionID", "is_fraud", "pattern", "instance_id"]
PATTERNS: tuple[str, ...] = (
    "amount_spike",
    "rapid_fire",
    "new_device_location",
    "impossible_travel",
    "login_attempts",
    "balance_drain",
    "odd_hours",
    "unusual_channel",
)
CHANNELS: tuple[str, ...] = ("ATM", "Online", "Branch")
OCCUPATIONS: tuple[str, ...] = ("Doctor", "Student", "Retired", "Engineer", "Other")
CITIES_PATH = settings.sql_root() / "seeds" / "transaction_cities.csv"

MERCHANTS = 150
DAY = 86_400
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_SEED = 2**63 - 1  # AccountIDs stay within 26 characters
IMPOSSIBLE_TRAVEL_KM = 1_000.0

_P = {name: i for i, name in enumerate(PATTERNS)}
# Rows per fraud instance, inclusive bounds, in PATTERNS order.
_SIZE_LO = np.array([1, 5, 1, 1, 1, 2, 1, 1])
_SIZE_HI = np.array([1, 12, 3, 1, 1, 4, 2, 1])
# Share of activity per hour of day: daytime-only accounts (07:00-22:00, nothing 00:00-05:59) and the
# few night owls, who also transact at night (so a night transaction alone is not fraud).
_DAYTIME = np.array([0, 0, 0, 0, 0, 0, 0.4, 2, 4, 5, 5, 6, 7, 6, 5, 5, 5, 6, 7, 6, 5, 3, 2, 0.5])
_NIGHT_OWL = _DAYTIME + np.array([1.5, 1.2, 1, 0.8, 0.6, 0.5] + [0] * 14 + [1, 1.5, 2, 2.5])
_HOUR_CDF = np.stack([np.cumsum(c) / c.sum() for c in (_DAYTIME, _NIGHT_OWL)])


def load_cities(path: Path = CITIES_PATH) -> pl.DataFrame:
    """The city seed: ``location, lat, lon``."""
    return pl.read_csv(path, schema_overrides={"lat": pl.Float64, "lon": pl.Float64})


def haversine_km(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Great-circle distance in km (broadcasting numpy arrays or scalars)."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


@dataclass
class _Accounts:
    number: np.ndarray  # the AccountID's last five digits, 1..99,999 (the seed's digits come first)
    home: np.ndarray  # city index
    age: np.ndarray
    occupation: np.ndarray
    devices: np.ndarray  # (n, 3), first n_devices used
    n_devices: np.ndarray
    ips: np.ndarray  # (n, 3) as 32-bit integers
    n_ips: np.ndarray
    merchants: np.ndarray  # (n, 8) distinct 1..MERCHANTS, first n_merchants used
    n_merchants: np.ndarray
    channel_cum: np.ndarray  # (n, 3) cumulative channel probabilities
    uses_channel: np.ndarray  # (n, 3) bool
    median: np.ndarray  # habitual debit, cents
    sigma: np.ndarray
    credit_share: np.ndarray
    credit_median: np.ndarray  # cents
    rate: np.ndarray  # transactions per day
    night_owl: np.ndarray
    start_balance: np.ndarray  # cents

    @property
    def n(self) -> int:
        return len(self.number)


def _random_ips(rng: np.random.Generator, shape) -> np.ndarray:
    """Public-looking IPv4 addresses as integers: first octet 1-223 without 10 and 127, last 1-254."""
    first = rng.integers(1, 222, shape)
    first = first + (first >= 10) + (first >= 126)  # skip 10 and 127
    return (first << 24) | (rng.integers(0, 65_536, shape) << 8) | rng.integers(1, 255, shape)


def _make_accounts(rng: np.random.Generator, n: int, n_cities: int) -> _Accounts:
    occupation = rng.choice(len(OCCUPATIONS), n, p=[0.1, 0.15, 0.15, 0.2, 0.4])
    age_lo = np.select([occupation == 1, occupation == 2], [18, 60], 25)
    age_hi = np.select([occupation == 1, occupation == 2], [26, 90], 65)
    primary = rng.choice(3, n, p=[0.3, 0.45, 0.25])
    secondary = (primary + rng.integers(1, 3, n)) % 3
    third = 3 - primary - secondary
    kind = rng.choice(3, n, p=[0.45, 0.4, 0.15])  # one, two or all three channels
    weights = np.zeros((n, 3))
    rows = np.arange(n)
    weights[rows, primary] = np.select([kind == 0, kind == 1], [1.0, 0.75], 0.6)
    weights[rows, secondary] = np.select([kind == 0, kind == 1], [0.0, 0.25], 0.2)
    weights[rows, third] = np.where(kind == 2, 0.2, 0.0)
    median = np.exp(rng.uniform(np.log(15), np.log(400), n)) * 100
    sigma = rng.uniform(0.4, 0.9, n)
    credit_share = rng.uniform(0.15, 0.25, n)
    # Deposits outweigh spending on average, so balances drift up slowly.
    credit_mean = (
        (1 - credit_share) / credit_share * median * np.exp(sigma**2 / 2) * rng.uniform(1.05, 1.3, n)
    )
    start = np.maximum(np.exp(rng.uniform(np.log(500), np.log(30_000), n)) * 100, 5 * median)
    return _Accounts(
        number=rng.choice(99_999, n, replace=False) + 1,
        home=rng.integers(0, n_cities, n),
        age=rng.integers(age_lo, age_hi + 1),
        occupation=occupation,
        devices=rng.integers(0, 1_000_000, (n, 3)),
        n_devices=rng.choice([1, 2, 3], n, p=[0.5, 0.35, 0.15]),
        ips=_random_ips(rng, (n, 3)),
        n_ips=rng.choice([1, 2, 3], n, p=[0.55, 0.3, 0.15]),
        merchants=np.argsort(rng.random((n, MERCHANTS)), axis=1)[:, :8] + 1,
        n_merchants=rng.integers(3, 9, n),
        channel_cum=np.cumsum(weights, axis=1),
        uses_channel=weights > 0,
        median=median,
        sigma=sigma,
        credit_share=credit_share,
        credit_median=credit_mean * np.exp(-(0.35**2) / 2),
        rate=np.exp(rng.uniform(np.log(0.3), np.log(4), n)),
        night_owl=rng.random(n) < 0.1,
        start_balance=np.round(start).astype(np.int64),
    )


def _slot(rng: np.random.Generator, counts: np.ndarray, favourite: float) -> np.ndarray:
    """Index into each row's 1..k usual items: the first with probability ``favourite``."""
    other = 1 + (rng.random(len(counts)) * (counts - 1)).astype(np.int64)
    return np.where((rng.random(len(counts)) < favourite) | (counts == 1), 0, other)


def _seconds_of_day(rng: np.random.Generator, night_owl: np.ndarray) -> np.ndarray:
    hour = np.where(
        night_owl,
        np.searchsorted(_HOUR_CDF[1], rng.random(len(night_owl)), side="right"),
        np.searchsorted(_HOUR_CDF[0], rng.random(len(night_owl)), side="right"),
    )
    return np.minimum(hour, 23) * 3600 + rng.integers(0, 3600, len(night_owl))


def _cents(values: np.ndarray) -> np.ndarray:
    return np.maximum(np.round(values), 50).astype(np.int64)


def _usual(rng: np.random.Generator, acc: _Accounts, a: np.ndarray) -> dict[str, np.ndarray]:
    """Normal-looking attributes for transactions of accounts ``a``: usual device, IP, merchant, home
    city, a channel from the account's mix, and a habitual debit amount."""
    n = len(a)
    merchant_slot = (rng.random(n) ** 1.6 * acc.n_merchants[a]).astype(np.int64)
    u = 1.0 - rng.random(n)  # in (0, 1]: a zero-weight channel is never drawn
    cum = acc.channel_cum[a]
    duration = np.clip(np.round(rng.lognormal(np.log(75), 0.55, n)), 10, 300).astype(np.int64)
    long = rng.random(n) < 0.01
    return {
        "acct": a,
        "device": acc.devices[a, _slot(rng, acc.n_devices[a], 0.75)],
        "ip": acc.ips[a, _slot(rng, acc.n_ips[a], 0.8)],
        "merchant": acc.merchants[a, merchant_slot],
        "city": acc.home[a],
        "channel": (u > cum[:, 0]).astype(np.int64) + (u > cum[:, 1]),
        "duration": np.where(long, rng.integers(301, 600, n), duration),
        "login": 1 + (rng.random(n) < 0.02).astype(np.int64),
        "amt": _cents(rng.lognormal(np.log(acc.median[a]), acc.sigma[a])),
        "credit": np.zeros(n, dtype=bool),
    }


def _groups(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of ``sizes`` rows: the group of each row and its position inside the group."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.cumsum(sizes) - sizes
    return group, np.arange(int(sizes.sum())) - starts[group]


def _normal_rows(
    rng: np.random.Generator, acc: _Accounts, n: int, horizon: int, n_cities: int
) -> dict[str, np.ndarray]:
    """``n`` normal transactions, sorted by account then time; ``travel`` marks trips away from home."""
    floor = min(3, n // acc.n)
    counts = floor + rng.multinomial(n - floor * acc.n, acc.rate / acc.rate.sum())
    a = np.repeat(np.arange(acc.n), counts)
    t = rng.integers(0, horizon // DAY, n) * DAY + _seconds_of_day(rng, acc.night_owl[a])
    t = t[np.lexsort((t, a))]
    rows = _usual(rng, acc, a)
    credit = rng.random(n) < acc.credit_share[a]
    rows["credit"] = credit
    rows["amt"] = np.where(credit, _cents(rng.lognormal(np.log(acc.credit_median[a]), 0.35)), rows["amt"])
    rows["t"] = t
    # Trips: a burst of activity (consecutive gaps under 12 h) that starts a day or more after the last
    # transaction at home happens in another city, with local merchants and sometimes a hotel network.
    same = np.zeros(n, dtype=bool)
    same[1:] = a[1:] == a[:-1]
    gap = np.zeros(n, dtype=np.int64)
    gap[1:] = np.diff(t)
    segment = np.cumsum(~same | (gap >= DAY // 2)) - 1
    starts = np.flatnonzero(same & (gap >= DAY))
    starts = starts[rng.random(len(starts)) < 0.1]
    trip = np.zeros(segment[-1] + 1 if n else 0, dtype=bool)
    trip[segment[starts]] = True
    trip_city = (acc.home[a[starts]] + rng.integers(1, n_cities, len(starts))) % n_cities
    city_of_segment = np.zeros(len(trip), dtype=np.int64)
    city_of_segment[segment[starts]] = trip_city
    hotel = np.zeros(len(trip), dtype=bool)
    hotel[segment[starts]] = rng.random(len(starts)) < 0.3
    travel = trip[segment]
    rows["city"] = np.where(travel, city_of_segment[segment], rows["city"])
    rows["merchant"] = np.where(travel, rng.integers(1, MERCHANTS + 1, n), rows["merchant"])
    rows["ip"] = np.where(hotel[segment], _random_ips(rng, n), rows["ip"])
    rows["travel"] = travel
    return rows


def _plan(rng: np.random.Generator, rows: int, fraud_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Fraud instances as (pattern, rows), exactly ``round(rows * fraud_share)`` rows in all: the patterns
    take turns (shuffled each round) while they fit, single-transaction patterns fill the rest."""
    target = round(rows * fraud_share)
    rounds = target // 8 + 1
    patterns = np.argsort(rng.random((rounds, len(PATTERNS))), axis=1).ravel()
    sizes = rng.integers(_SIZE_LO[patterns], _SIZE_HI[patterns] + 1)
    keep = np.cumsum(sizes) <= target
    patterns, sizes = patterns[keep], sizes[keep]
    single = np.flatnonzero(_SIZE_HI == 1)
    rest = rng.permutation(np.resize(single, target - int(sizes.sum())))
    return np.r_[patterns, rest].astype(np.int64), np.r_[sizes, np.ones(len(rest), dtype=np.int64)]


def _new_values(known: np.ndarray, draw) -> np.ndarray:
    """One value per row of ``known`` (n, k) that differs from every value in that row."""
    values = draw(len(known))
    clash = (known == values[:, None]).any(axis=1)
    while clash.any():
        values[clash] = draw(int(clash.sum()))
        clash = (known == values[:, None]).any(axis=1)
    return values


def _fraud_rows(
    rng: np.random.Generator,
    acc: _Accounts,
    normal: dict[str, np.ndarray],
    patterns: np.ndarray,
    sizes: np.ndarray,
    horizon: int,
    distance: np.ndarray,
) -> dict[str, np.ndarray]:
    """The rows of the fraud instances (one account each), placed among the account's normal traffic;
    balance-drain amounts stay provisional until balances are settled."""
    n_cities = len(distance)
    na = normal["acct"]
    counts = np.bincount(na, minlength=acc.n)
    # The median amount of each account's normal transactions: the base of the fraud amounts.
    if len(na):
        median = pl.DataFrame({"a": na, "amt": normal["amt"]}).group_by("a").agg(pl.col("amt").median())
        base = acc.median.copy()
        base[median["a"].to_numpy()] = median["amt"].to_numpy()
    else:
        base = acc.median.copy()
    # Anchors for impossible travel: a normal transaction at home with no other one in the next 6 minutes.
    t = normal["t"]
    last = np.r_[na[1:] != na[:-1], True] if len(na) else np.zeros(0, dtype=bool)
    gap_next = np.where(last, horizon, np.r_[np.diff(t), 0])
    anchor_ok = ~normal["travel"] & (gap_next > 360) & (t + 360 < horizon)
    anchors = np.flatnonzero(anchor_ok)
    anchor_count = np.bincount(na[anchors], minlength=acc.n)

    # One account per instance, a different one for each while there are enough.
    instance_acct = np.zeros(len(patterns), dtype=np.int64)
    used = np.zeros(acc.n, dtype=bool)
    eligible = {
        _P["impossible_travel"]: anchor_count > 0,
        _P["odd_hours"]: ~acc.night_owl,
        _P["unusual_channel"]: ~acc.uses_channel.all(axis=1),
    }
    order = [_P["impossible_travel"], _P["odd_hours"], _P["unusual_channel"]]
    order += [p for p in range(len(PATTERNS)) if p not in order]
    for p in order:
        which = np.flatnonzero(patterns == p)
        if not len(which):
            continue
        ok = (counts > 0) & eligible.get(p, True)
        if not ok.any():
            ok = counts > 0 if (counts > 0).any() else np.ones(acc.n, dtype=bool)
        pool = np.flatnonzero(ok & ~used)
        if len(pool) >= len(which):
            chosen = rng.choice(pool, len(which), replace=False)
        else:
            chosen = rng.choice(np.flatnonzero(ok), len(which), replace=True)
        used[chosen] = True
        instance_acct[which] = chosen

    instance, position = _groups(sizes)
    pattern = patterns[instance]
    a = instance_acct[instance]
    n = len(a)
    rows = _usual(rng, acc, a)
    rows["pattern"] = pattern
    rows["instance"] = instance
    rows["drain_weight"] = np.where(pattern == _P["balance_drain"], rng.uniform(0.5, 1.5, n), 0.0)

    # Time: a start per instance at a usual hour of the account, then gaps per pattern.
    ia = instance_acct
    t0 = rng.integers(0, horizon // DAY, len(ia)) * DAY + _seconds_of_day(rng, acc.night_owl[ia])
    is_p = {name: pattern == i for i, name in enumerate(PATTERNS)}
    gap = np.select(
        [is_p["rapid_fire"], is_p["new_device_location"], is_p["balance_drain"], is_p["odd_hours"]],
        [
            rng.integers(5, 240, n),
            rng.integers(60, 1800, n),
            rng.integers(60, 900, n),
            rng.integers(60, 1800, n),
        ],
        0,
    )
    gap = np.where(position == 0, 0, gap)
    offset = np.cumsum(gap)
    offset = offset - (offset - gap)[position == 0][instance]
    span = np.zeros(len(ia), dtype=np.int64)
    np.maximum.at(span, instance, offset)
    t0 = np.minimum(t0, horizon - 1 - span)
    odd = patterns == _P["odd_hours"]  # 01:00-04:00 start, the second at most 30 minutes later
    t0 = np.where(odd, t0 // DAY * DAY + rng.integers(3600, 4 * 3600, len(ia)), t0)
    # Impossible travel: 5-60 minutes after a transaction at home, in a city over 1,000 km away.
    travel = np.flatnonzero(patterns == _P["impossible_travel"])
    far_city = np.zeros(len(ia), dtype=np.int64)
    if len(travel):
        acct = ia[travel]
        has = anchor_count[acct] > 0
        if has.any():
            first_anchor = np.searchsorted(na[anchors], acct[has])
            pick = anchors[
                first_anchor + (rng.random(int(has.sum())) * anchor_count[acct[has]]).astype(np.int64)
            ]
            upper = np.minimum(3600, np.minimum(gap_next[pick] - 60, horizon - 1 - t[pick]))
            t0[travel[has]] = t[pick] + rng.integers(300, upper + 1)
        far = distance[acc.home[acct]] > IMPOSSIBLE_TRAVEL_KM * 1.05
        far_city[travel] = np.argmax(rng.random((len(acct), n_cities)) * far, axis=1)
    rows["t"] = t0[instance] + offset

    amount = np.select(
        [
            is_p["amount_spike"],
            is_p["rapid_fire"],
            is_p["new_device_location"],
            is_p["impossible_travel"],
            is_p["odd_hours"],
            is_p["unusual_channel"],
        ],
        [
            np.ceil(base[a] * rng.uniform(8, 30, n)),
            base[a] * rng.uniform(0.5, 2, n),
            base[a] * rng.uniform(2, 5, n),
            base[a] * rng.uniform(1.5, 4, n),
            base[a] * rng.uniform(2, 4, n),
            base[a] * rng.uniform(1.5, 3, n),
        ],
        rows["amt"],
    )
    rows["amt"] = _cents(amount)  # balance_drain amounts are set when balances are known

    # New device, IP and city (one of each per instance) for new_device_location.
    new_device = _new_values(acc.devices[ia], lambda k: rng.integers(0, 1_000_000, k))
    new_ip = _new_values(acc.ips[ia], lambda k: _random_ips(rng, k))
    other_city = (acc.home[ia] + rng.integers(1, n_cities, len(ia))) % n_cities
    ndl = is_p["new_device_location"]
    rows["device"] = np.where(ndl, new_device[instance], rows["device"])
    rows["ip"] = np.where(ndl, new_ip[instance], rows["ip"])
    rows["city"] = np.select(
        [ndl, is_p["impossible_travel"]], [other_city[instance], far_city[instance]], rows["city"]
    )
    # Rapid fire: quick sessions at many merchants.
    rapid = is_p["rapid_fire"]
    rows["merchant"] = np.where(rapid, rng.integers(1, MERCHANTS + 1, n), rows["merchant"])
    rows["duration"] = np.where(rapid, rng.integers(10, 40, n), rows["duration"])
    rows["login"] = np.where(is_p["login_attempts"], rng.integers(3, 6, n), rows["login"])
    # Unusual channel: one the account has never used.
    unused = np.argmax(rng.random((n, 3)) * ~acc.uses_channel[a] + ~acc.uses_channel[a], axis=1)
    rows["channel"] = np.where(is_p["unusual_channel"], unused, rows["channel"])
    return rows


def _settle_balances(
    acct: np.ndarray,
    amt: np.ndarray,
    credit: np.ndarray,
    normal: np.ndarray,
    start: np.ndarray,
    drain_rows: np.ndarray,
    drain_instance: np.ndarray,
    drain_weight: np.ndarray,
    drain_fraction: np.ndarray,
    drain_floor: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balances after each transaction (rows sorted by account, then time), in cents.

    Balances never go below zero: at an account's first shortfall the latest normal debits up to it
    (the offending one first, when it is normal) become credits, just enough to cover it, or the
    starting balance rises when there are none. Balance-drain debits take 80-100% of the balance before
    the drain (at least ``drain_floor``, made the same way). Repeats until nothing changes.
    Returns (balances, amounts, credit flags)."""
    amt, credit = amt.copy(), credit.copy()
    start = start.copy()
    m = len(acct)
    index = np.arange(m)
    first_row = np.maximum.accumulate(np.where(np.r_[True, acct[1:] != acct[:-1]], index, 0)) if m else index
    # Drain rows grouped by instance, in time order: cumulative weights per instance.
    d_order = np.lexsort((drain_rows, drain_instance))
    d_rows, d_inst, d_w = drain_rows[d_order], drain_instance[d_order], drain_weight[d_order]
    d_first = np.r_[True, d_inst[1:] != d_inst[:-1]] if len(d_inst) else np.zeros(0, dtype=bool)
    d_last = np.r_[d_inst[1:] != d_inst[:-1], True] if len(d_inst) else np.zeros(0, dtype=bool)
    d_group = np.cumsum(d_first) - 1
    d_start_rows = d_rows[d_first]
    w_total = np.bincount(d_group, weights=d_w)
    cum_hi = np.cumsum(d_w)
    cum_hi = (cum_hi - (cum_hi - d_w)[d_first][d_group]) / w_total[d_group] if len(d_w) else cum_hi
    cum_hi = np.where(d_last, 1.0, cum_hi)
    cum_lo = np.where(d_first, 0.0, np.r_[0.0, cum_hi[:-1]])
    fraction = drain_fraction[d_inst[d_first]] if len(d_inst) else np.zeros(0)
    floor = drain_floor[d_inst[d_first]] if len(d_inst) else np.zeros(0, dtype=np.int64)
    for _ in range(10_000):
        signed = np.where(credit, amt, -amt)
        running = np.cumsum(signed)
        balance = running - (running[first_row] - signed[first_row]) + start[acct]
        before = balance[d_start_rows] - signed[d_start_rows]
        if len(d_rows):
            total = np.floor(np.maximum(before, 0) * fraction)
            parts = (np.floor(total[d_group] * cum_hi) - np.floor(total[d_group] * cum_lo)).astype(np.int64)
            if (parts != amt[d_rows]).any():
                amt[d_rows] = parts
                continue
        negative = np.flatnonzero(balance < 0)
        short = np.flatnonzero(before < floor)
        last = np.r_[negative, d_start_rows[short] - 1]
        deficit = np.r_[-balance[negative], (floor - before)[short]]
        account = np.r_[acct[negative], acct[d_start_rows[short]]]
        first = np.r_[first_row[negative], first_row[d_start_rows[short]]]
        if not len(last):
            return balance, amt, credit
        order = np.lexsort((last, account))
        keep = order[np.unique(account[order], return_index=True)[1]]
        last, deficit, account, first = last[keep], deficit[keep], account[keep], first[keep]
        debit = normal & ~credit
        cover = np.cumsum(np.where(debit, 2 * amt, 0))
        before_first = np.where(first > 0, cover[np.maximum(first - 1, 0)], 0)
        available = np.where(last >= first, cover[np.maximum(last, 0)] - before_first, 0)
        enough = available >= deficit
        j = np.where(
            enough, np.searchsorted(cover, cover[np.maximum(last, 0)] - deficit, side="right"), first
        )
        start[account[~enough]] += (deficit - available)[~enough]
        flip = last >= j
        marks = np.zeros(m + 1, dtype=np.int64)
        np.add.at(marks, j[flip], 1)
        np.add.at(marks, last[flip] + 1, -1)
        credit |= (np.cumsum(marks)[:m] > 0) & debit
    raise RuntimeError("balances did not settle")


def generate(
    rows: int,
    *,
    seed: int = 7,
    start: dt.date = dt.date(2026, 1, 1),
    days: int = 30,
    accounts: int | None = None,
    fraud_share: float = 0.007,
    first_id: int = 1,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(transactions in CSV_COLUMNS order, all columns as in the CSV: strings for dates/ids, floats, ints;
    labels: TransactionID, is_fraud, pattern, instance_id), ``rows`` of each, deterministic in the
    arguments. Times fall in [start, start + days). TransactionIDs count up from ``first_id``, so files
    meant for one warehouse (where an id is unique) take disjoint ranges. AccountIDs carry ``seed`` (the
    module's docstring): two seeds never share an account."""
    if first_id < 0:
        raise ValueError("first_id must be >= 0")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be in 0..{MAX_SEED}")
    if rows < 0:
        raise ValueError("rows must be >= 0")
    if days < 1:
        raise ValueError("days must be >= 1")
    if not 0 <= fraud_share <= 0.5:
        raise ValueError("fraud_share must be in [0, 0.5]")
    n_accounts = accounts if accounts is not None else max(20, round(rows / 40))
    if not 1 <= n_accounts <= 99_999:
        raise ValueError("accounts must be in 1..99999")
    rng = np.random.default_rng(seed)
    cities = load_cities()
    lat, lon = cities["lat"].to_numpy(), cities["lon"].to_numpy()
    distance = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    horizon = days * DAY
    acc = _make_accounts(rng, n_accounts, len(cities))
    patterns, sizes = _plan(rng, rows, fraud_share)
    normal = _normal_rows(rng, acc, rows - int(sizes.sum()), horizon, len(cities))
    fraud = _fraud_rows(rng, acc, normal, patterns, sizes, horizon, distance)
    instance_acct = np.zeros(len(patterns), dtype=np.int64)
    instance_acct[fraud["instance"]] = fraud["acct"]
    n_normal = len(normal["t"])
    normal["pattern"] = np.full(n_normal, -1)
    normal["instance"] = np.full(n_normal, -1)
    normal["drain_weight"] = np.zeros(n_normal)
    keys = ["acct", "t", "amt", "credit", "city", "device", "ip", "merchant", "channel", "duration", "login"]
    keys += ["pattern", "instance", "drain_weight"]
    data = {k: np.concatenate([normal[k], fraud[k]]) for k in keys}

    # Balances per account in time order.
    by_account = np.lexsort((np.arange(rows), data["t"], data["acct"]))
    data = {k: v[by_account] for k, v in data.items()}
    drain_rows = np.flatnonzero(data["pattern"] == _P["balance_drain"])
    drain_instance = data["instance"][drain_rows]
    balance, data["amt"], data["credit"] = _settle_balances(
        data["acct"],
        data["amt"],
        data["credit"],
        data["pattern"] < 0,
        acc.start_balance,
        drain_rows,
        drain_instance,
        data["drain_weight"][drain_rows],
        rng.uniform(0.82, 0.99, len(patterns)),
        np.maximum(10_000, np.round(5 * acc.median[instance_acct])).astype(np.int64),
    )
    data["balance"] = balance
    account_start = np.r_[True, data["acct"][1:] != data["acct"][:-1]] if rows else np.zeros(0, dtype=bool)
    earlier = data["t"] - 3600 - rng.integers(0, 7 * DAY, rows)
    data["previous"] = np.where(account_start, earlier, np.r_[0, data["t"][:-1]])

    chronological = np.lexsort((np.arange(rows), data["acct"], data["t"]))
    data = {k: v[chronological] for k, v in data.items()}
    return _render(data, acc, cities["location"], start, first_id, seed)


def _render(
    data: dict[str, np.ndarray], acc: _Accounts, cities: pl.Series, start: dt.date, first_id: int, seed: int
):
    rows = len(data["t"])
    epoch = int(dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC).timestamp())
    width = max(6, len(str(first_id + rows - 1)))
    a = data["acct"]
    ip = data["ip"]
    frame = pl.DataFrame(
        {
            "seq": np.arange(first_id, first_id + rows),
            "account": acc.number[a],
            "amount": data["amt"] / 100,
            "t": data["t"] + epoch,
            "credit": data["credit"],
            "device": data["device"],
            "o1": ip >> 24,
            "o2": (ip >> 16) & 255,
            "o3": (ip >> 8) & 255,
            "o4": ip & 255,
            "merchant": data["merchant"],
            "age": acc.age[a],
            "duration": data["duration"],
            "login": data["login"],
            "balance": data["balance"] / 100,
            "previous": data["previous"] + epoch,
        },
        schema_overrides={"seq": pl.Int64, "account": pl.Int64, "device": pl.Int64, "merchant": pl.Int64},
    )

    def padded(prefix: str, column: str, digits: int) -> pl.Expr:
        return pl.lit(prefix) + pl.col(column).cast(pl.String).str.zfill(digits)

    def stamp(column: str) -> pl.Expr:
        return pl.from_epoch(pl.col(column), time_unit="s").dt.strftime(DATE_FORMAT)

    transactions = frame.select(
        padded("TX", "seq", width).alias("TransactionID"),
        padded(f"AC{seed}", "account", 5).alias("AccountID"),
        pl.col("amount").alias("TransactionAmount"),
        stamp("t").alias("TransactionDate"),
        pl.when(pl.col("credit")).then(pl.lit("Credit")).otherwise(pl.lit("Debit")).alias("TransactionType"),
        cities.gather(data["city"]).alias("Location"),
        padded("D", "device", 6).alias("DeviceID"),
        pl.concat_str([pl.col(f"o{i}").cast(pl.String) for i in range(1, 5)], separator=".").alias(
            "IP Address"
        ),
        padded("M", "merchant", 3).alias("MerchantID"),
        pl.Series(CHANNELS).gather(data["channel"]).alias("Channel"),
        pl.col("age").cast(pl.Int64).alias("CustomerAge"),
        pl.Series(OCCUPATIONS).gather(acc.occupation[a]).alias("CustomerOccupation"),
        pl.col("duration").cast(pl.Int64).alias("TransactionDuration"),
        pl.col("login").cast(pl.Int64).alias("LoginAttempts"),
        pl.col("balance").alias("AccountBalance"),
        stamp("previous").alias("PreviousTransactionDate"),
    )
    labels = _labels(transactions["TransactionID"], data["pattern"], data["instance"])
    return transactions, labels


def _labels(ids: pl.Series, pattern: np.ndarray, instance: np.ndarray) -> pl.DataFrame:
    """Instances are numbered per pattern from 1 in the order of their first transaction."""
    fraud = np.flatnonzero(pattern >= 0)
    number = np.zeros(len(pattern), dtype=np.int64)
    if len(fraud):
        instances, first = np.unique(instance[fraud], return_index=True)
        by_time = np.argsort(first)
        inst_pattern = pattern[fraud][first][by_time]
        ordinal = np.zeros(len(instances), dtype=np.int64)
        for p in np.unique(inst_pattern):
            which = inst_pattern == p
            ordinal[which] = np.arange(1, which.sum() + 1)
        lookup = np.zeros(instance.max() + 1, dtype=np.int64)
        lookup[instances[by_time]] = ordinal
        number[fraud] = lookup[instance[fraud]]
    names = pl.Series(PATTERNS).gather(np.maximum(pattern, 0))
    is_fraud = pl.Series(pattern >= 0)
    frame = pl.DataFrame({"TransactionID": ids, "is_fraud": is_fraud, "name": names, "number": number})
    return frame.select(
        "TransactionID",
        "is_fraud",
        pl.when(pl.col("is_fraud")).then(pl.col("name")).alias("pattern"),
        pl.when(pl.col("is_fraud"))
        .then(pl.concat_str([pl.col("name"), pl.lit("-"), pl.col("number").cast(pl.String).str.zfill(4)]))
        .alias("instance_id"),
    )


def _write_csv(frame: pl.DataFrame, path: Path) -> None:
    """Write beside ``path`` under a hidden temporary name, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        frame.write_csv(temporary, float_precision=2)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write(out: Path, labels_out: Path | None, **generate_kwargs) -> tuple[int, int]:
    """Generate and write the transactions CSV (and the labels CSV when ``labels_out``), each atomically.
    Returns (rows, fraud rows)."""
    transactions, labels = generate(**generate_kwargs)
    _write_csv(transactions, Path(out))
    if labels_out is not None:
        _write_csv(labels, Path(labels_out))
    return transactions.height, int(labels["is_fraud"].sum())
