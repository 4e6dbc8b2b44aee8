"""Prepare (docs/online.md, "Batches and prepare"): a batch of events turned into the kernel's input, the
int rows ``B`` and float rows ``BF`` (columns: layout.py), the feature rows with their per-event metric
columns filled, and the event ids. ``prepare_frame`` vectorises a polars frame of ``validated_logs``
columns (derived keys, metrics, integer ids, order, duplicates); ``prepare_rows`` does the same row by row
for a few ``Event``s, from events.py's functions (polars costs milliseconds per call whatever the size).
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import polars as pl

from bankanom_pipeline.online import layout as lay
from bankanom_pipeline.online.aggregates import metric_row
from bankanom_pipeline.online.events import (
    LEVELS,
    METRICS,
    BadEvent,
    Event,
    metric_values,
    network,
    session,
    template,
)
from bankanom_pipeline.online.kernel import ties
from bankanom_pipeline.online.schema import FEATURES

# polars' Rust regex engine, which like RE2 is leftmost-first and reads $ as the end of the text)
_ID = r"(USR|TXN|ORD|SES|CUS)-[0-9A-Za-z]+|svc-[a-z]+|[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+"
_NUMBER = r"[0-9]+(\.[0-9]+)?"
_SESSION = r"SES-[0-9A-Za-z]+"
_NETWORK = r"^(.*)[.:][^.:]*$"

COLUMNS = (
    "event_id",
    "ts",
    "source_service",
    "log_level",
    "message",
    "user_id",
    "ip_address",
    "geo_location",
    "metrics",
)
_REQUIRED = ("event_id", "ts", "source_service", "log_level", "message")
_METRIC_SCHEMA = pl.Struct({name: pl.Float64 for name in METRICS})
_M = {name: i for i, name in enumerate(METRICS)}
# the gauges' metrics in the kernel's order: timeout, error_rate, cache, lag, rps, files
_GAUGES = tuple(_M[n] for n in ("timeout_rate", "error_rate", "cache_hit_rate", "replication_lag_s", "requests_per_second", "files_modified"))  # fmt: skip
# batches of fewer Events than this are prepared row by row (prepare_events), larger ones with polars
ROWS_BELOW = 64

_NO_SEQS = np.zeros(0, dtype=np.int64)


def prepare_frame(engine, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """The batch's kernel inputs: int rows ``B``, float rows ``BF``, the feature rows with their
    per-event metric columns filled, and the event ids."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"a batch needs the columns {', '.join(missing)}")
    n = frame.height
    valid = frame.select(pl.all_horizontal(pl.col(c).is_not_null() for c in _REQUIRED)).to_series()
    M, bad = _metrics(frame["metrics"], frame["event_id"])
    valid = valid.to_numpy() & ~bad
    geo = frame["geo_location"]
    derived = frame.select(
        pl.col("message").str.replace_all(_ID, "<id>").str.replace_all(_NUMBER, "#").alias("template"),
        pl.col("geo_location").str.splitn("-", 2).struct.field("field_0").alias("country"),
        pl.when(pl.col("user_id").is_not_null())
        .then(pl.col("message").str.extract(_SESSION, 0))
        .alias("session"),
        pl.col("log_level").replace_strict(LEVELS, default=4, return_dtype=pl.Int64).alias("level"),
        pl.col("message").str.starts_with("Login failed").alias("failed"),
        pl.col("message").str.starts_with("VPN connection").alias("vpn"),
    )
    level = derived["level"].to_numpy()
    country = derived["country"]
    quiet = ((level <= 1) & (country.is_not_null() & (country != "")).to_numpy()).astype(np.int64)
    B = np.empty((n, lay.NB), dtype=np.int64)
    B[:, lay.B_TS] = frame["ts"].fill_null(0).to_numpy()
    ids = engine.ids
    B[:, lay.B_TPL] = ids["template"].map(derived["template"])
    B[:, lay.B_CTRY] = ids["country"].map(country)
    B[:, lay.B_USER] = ids["user"].map(frame["user_id"])
    ip = frame["ip_address"]
    ip_ids, addresses, address_ids = ids["ip"].map(ip, keys=True)
    B[:, lay.B_IP] = ip_ids
    # the network of each distinct address, then of each row
    networks = ids["network"].map(addresses.str.extract(_NETWORK, 1).fill_null(""))
    of_address = np.full(int(address_ids.max(initial=-1)) + 2, -1, dtype=np.int64)
    of_address[address_ids] = networks
    B[:, lay.B_NET] = of_address[ip_ids]  # -1 (no address) reads the last item: -1
    B[:, lay.B_SES] = ids["session"].map(derived["session"])
    B[:, lay.B_SVC] = ids["service"].map(frame["source_service"])
    B[:, lay.B_LVL] = level
    B[:, lay.B_FAIL] = derived["failed"].fill_null(False).to_numpy()
    B[:, lay.B_VPN] = derived["vpn"].fill_null(False).to_numpy()
    B[:, lay.B_QUIET] = quiet
    # the order inside the kernel: ranks of the ids together with the high-water mark's, and with
    # those of the retained events sharing a microsecond with a row that may be late
    eid = frame["event_id"]
    tie_seqs = _ties(engine, B[:, lay.B_TS][valid])
    tie_ids = pl.Series(engine.ring_eid[tie_seqs & int(engine.G[lay.G_MASK])].tolist(), dtype=pl.String)
    ranked = pl.concat([pl.Series([engine.hwm_eid], dtype=pl.String), eid, tie_ids])
    ranks = ranked.rank("dense").fill_null(0).to_numpy().astype(np.int64)
    engine.G[lay.G_HWM_RANK] = ranks[0]
    B[:, lay.B_RANK] = ranks[1 : n + 1]
    engine.R[tie_seqs & int(engine.G[lay.G_MASK]), lay.R_RANK] = ranks[n + 1 :]
    eids = eid.to_list()
    seen = engine.seen
    B[:, lay.B_DUPSEQ] = [seen.get(e, -1) for e in eids] if seen else -1
    B[:, lay.B_DUPPREV] = -1
    if eid.is_duplicated().any():  # the earlier row of the batch with the same id
        rows = pl.DataFrame({"event_id": eid, "row": np.arange(n)})
        previous = rows.select(pl.col("row").shift(1).over("event_id").fill_null(-1)).to_series()
        B[:, lay.B_DUPPREV] = np.where(eid.is_null().to_numpy(), -1, previous.to_numpy())
    B[:, lay.B_VALID] = valid
    BF = np.empty((n, lay.NF))
    BF[:, lay.F_REC] = np.nan_to_num(M[:, _M["records_accessed"]], nan=0.0)
    BF[:, lay.F_BYT] = np.nan_to_num(M[:, _M["bytes_out"]], nan=0.0)
    BF[:, lay.F_LAT] = (
        geo.replace_strict(engine._lat, default=None, return_dtype=pl.Float64).fill_null(np.nan).to_numpy()
    )
    BF[:, lay.F_LON] = (
        geo.replace_strict(engine._lon, default=None, return_dtype=pl.Float64).fill_null(np.nan).to_numpy()
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        BF[:, lay.F_X] = np.log(1 + M[:, _M["amount"]])
    BF[:, lay.F_RT] = M[:, _M["response_time_ms"]]
    for j, m in enumerate(_GAUGES):
        BF[:, lay.F_G + j] = M[:, m]
    out = np.zeros((n, len(FEATURES)))
    out[:, 6:28] = _metric_rows(M)
    return B, BF, out, eids


def prepare_rows(engine, events: list[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """``prepare`` row by row, for a few ``Event``s (the API's and the stream's): polars costs
    milliseconds per call whatever the batch's size. The same values from events.py's functions
    (the SQL's regexes, which test_online_replay checks against DuckDB); the tests run both paths."""
    n = len(events)
    B = np.zeros((n, lay.NB), dtype=np.int64)
    # an invalid row names no entity and no earlier event
    B[
        :,
        [
            lay.B_TPL,
            lay.B_CTRY,
            lay.B_USER,
            lay.B_IP,
            lay.B_NET,
            lay.B_SES,
            lay.B_SVC,
            lay.B_DUPSEQ,
            lay.B_DUPPREV,
        ],
    ] = -1
    BF = np.zeros((n, lay.NF))
    out = np.zeros((n, len(FEATURES)))
    ids = engine.ids
    seen = engine.seen
    earlier: dict[str, int] = {}
    mask = int(engine.G[lay.G_MASK])
    tie_seqs = _ties(engine, [e.ts for e in events if e.ts.__class__ is int])
    tie_ids = engine.ring_eid[tie_seqs & mask].tolist() if len(tie_seqs) else []
    order = sorted(
        {e.event_id for e in events if e.event_id.__class__ is str} | {engine.hwm_eid or ""} | set(tie_ids)
    )
    rank = {eid: i + 1 for i, eid in enumerate(order)}
    engine.G[lay.G_HWM_RANK] = rank.get(engine.hwm_eid or "", 0)
    if tie_ids:
        engine.R[tie_seqs & mask, lay.R_RANK] = [rank[e] for e in tie_ids]
    eids = []
    geo_seed_ = engine._geo
    for i, e in enumerate(events):
        eid, ts, service, log_level, message, _, user, ip, geo, metrics = e
        eids.append(eid)
        row = B[i]
        try:
            check(e)
            m = metric_values(str(eid), metrics)
        except BadEvent:
            continue  # B_VALID stays 0
        row[lay.B_VALID] = 1
        row[lay.B_TS] = ts
        row[lay.B_RANK] = rank[eid]
        row[lay.B_DUPSEQ] = seen.get(eid, -1)
        row[lay.B_DUPPREV] = earlier.get(eid, -1)
        earlier[eid] = i
        level = LEVELS.get(log_level, 4)
        country = None if geo is None else geo.split("-", 1)[0]
        row[lay.B_TPL] = ids["template"].one(template(message))
        row[lay.B_CTRY] = ids["country"].one(country)
        row[lay.B_USER] = ids["user"].one(user)
        row[lay.B_IP] = ids["ip"].one(ip)
        row[lay.B_NET] = -1 if ip is None else ids["network"].one(network(ip))
        row[lay.B_SES] = ids["session"].one(session(message) if user is not None else None)
        row[lay.B_SVC] = ids["service"].one(service)
        row[lay.B_LVL] = level
        row[lay.B_FAIL] = message.startswith("Login failed")
        row[lay.B_VPN] = message.startswith("VPN connection")
        row[lay.B_QUIET] = level <= 1 and bool(country)
        f = BF[i]
        f[lay.F_REC] = 0.0 if m[17] is None else m[17]
        f[lay.F_BYT] = 0.0 if m[18] is None else m[18]
        located = None if geo is None else geo_seed_.get(geo)
        f[lay.F_LAT], f[lay.F_LON] = (np.nan, np.nan) if located is None else located
        f[lay.F_X] = np.nan if m[9] is None else math.log(1 + m[9])
        f[lay.F_RT] = np.nan if m[0] is None else m[0]
        for j, g in enumerate(_GAUGES):
            f[lay.F_G + j] = np.nan if m[g] is None else m[g]
        out[i, 6:28] = metric_row(m)
    return B, BF, out, eids


def _ties(engine, ts: np.ndarray | list[int]) -> np.ndarray:
    """The ``seq``s of the retained events at the same microsecond as a row of ``ts`` that is not
    after the high-water mark's time: a late row's place among them is decided by id. ``ts`` a list
    for a few events (numpy's calls would cost more than the loop)."""
    G = engine.G
    if not G[lay.G_HAS_HWM]:
        return _NO_SEQS
    hwm = int(G[lay.G_HWM_TS])
    if isinstance(ts, list):
        wanted = sorted({t for t in ts if t <= hwm})
        if not wanted:
            return _NO_SEQS
        return ties(G, engine.RT, np.array(wanted, dtype=np.int64))
    wanted = np.unique(ts[ts <= hwm])
    if not len(wanted):
        return _NO_SEQS
    return ties(G, engine.RT, wanted)


def _metrics(text: pl.Series, eid: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The 23 known metrics (NaN: absent) and which rows ``metric_values`` refuses. The JSON
    decoder reads ``true`` as 1.0 and stops at a text value, so those rows (and every row of a
    batch it refuses) are read by ``metric_values`` instead."""
    n = len(text)
    bad = np.zeros(n, dtype=bool)
    slow = (
        text.str.contains(r"\btrue\b|\bfalse\b") | ~text.str.strip_chars_start().str.starts_with("{")
    ).fill_null(False)
    try:
        decoded = pl.DataFrame({"m": text}).select(pl.col("m").str.json_decode(_METRIC_SCHEMA)).unnest("m")
        M = decoded.to_numpy().astype(np.float64)
        if M.shape != (n, len(METRICS)):  # every row null
            M = np.full((n, len(METRICS)), np.nan)
    except pl.exceptions.PolarsError:
        M = np.full((n, len(METRICS)), np.nan)
        slow = text.is_not_null()
    rows = np.flatnonzero(slow.to_numpy())
    if len(rows):
        texts, ids = text.gather(rows).to_list(), eid.gather(rows).to_list()
        for r, t, e in zip(rows.tolist(), texts, ids, strict=True):
            try:
                values = metric_values(str(e), orjson.loads(t))
            except (BadEvent, orjson.JSONDecodeError, AttributeError):
                bad[r] = True
                continue
            M[r] = [np.nan if v is None else v for v in values]
    return M, bad


# ------------------------------------------------------------------ state


def check(e: Event) -> None:
    """The types the engine needs (what the kernel's input needs), or ``BadEvent``."""
    eid, ts, service, log_level, message, _, user, ip, geo, metrics = e
    if ts.__class__ is not int:
        raise BadEvent("bad_timestamp", f"{eid}: ts must be epoch microseconds (int)")
    if not (eid.__class__ is service.__class__ is log_level.__class__ is message.__class__ is str):
        raise BadEvent(
            "missing_field", f"{eid}: event_id, source_service, log_level and message must be text"
        )
    for value in (user, ip, geo):
        if value is not None and value.__class__ is not str:
            raise BadEvent("bad_type", f"{eid}: user_id, ip_address and geo_location must be text or null")
    if metrics is not None and metrics.__class__ is not dict:
        raise BadEvent("bad_metrics", f"{eid}: metrics must be an object")


def _metric_rows(M: np.ndarray) -> np.ndarray:
    """features_events' per-event metric columns (``aggregates.metric_row``) of the metric rows ``M``."""
    out = np.empty((len(M), 22))
    for j in range(12):
        out[:, j] = np.nan_to_num(M[:, j], nan=1.0 if j == 4 else 0.0)
    active, most = M[:, 12], M[:, 13]
    with np.errstate(invalid="ignore", divide="ignore"):
        pool = active / most
    out[:, 12] = np.where(np.isnan(active) | np.isnan(most) | (most == 0), 0.0, pool)
    out[:, 13] = np.nan_to_num(M[:, 14], nan=0.0)
    out[:, 14] = np.nan_to_num(M[:, 15], nan=1.0)
    for j in range(16, 23):
        out[:, j - 1] = np.nan_to_num(M[:, j], nan=0.0)
    return out


def _json(metrics: dict | None) -> str | None:
    """``metrics`` as JSON text. A non-finite number or an integer beyond 64 bits (which orjson does not
    write) is written as Python's json writes it (``NaN``, ``Infinity``, all digits), so prepare sees
    it and refuses the event as the Python engine does."""
    if metrics is None:
        return None
    try:
        if all(v.__class__ is not float or math.isfinite(v) for v in metrics.values()):
            return orjson.dumps(metrics).decode()
    except (orjson.JSONEncodeError, AttributeError):
        pass
    import json

    return json.dumps(metrics)


def frame_of(events: list[Event]) -> pl.DataFrame:
    """A batch frame of ``Event``s (metrics back to JSON text: one way to read them)."""
    return pl.DataFrame(
        {
            "event_id": [e.event_id for e in events],
            "ts": pl.Series([e.ts for e in events], dtype=pl.Int64),
            "source_service": [e.source_service for e in events],
            "log_level": [e.log_level for e in events],
            "message": [e.message for e in events],
            "user_id": pl.Series([e.user_id for e in events], dtype=pl.String),
            "ip_address": pl.Series([e.ip_address for e in events], dtype=pl.String),
            "geo_location": pl.Series([e.geo_location for e in events], dtype=pl.String),
            "metrics": pl.Series([_json(e.metrics) for e in events], dtype=pl.String),
        }
    )
