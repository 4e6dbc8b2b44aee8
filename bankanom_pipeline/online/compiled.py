"""The compiled online engine (docs/online.md, "Compiled engine"): a batch of events is prepared with
polars and numpy (derived keys, metrics, integer ids, order, duplicates; row by row for a few ``Event``s),
then run through the numba kernel (``kernel.run``) one event at a time in the batch's ``(ts, event_id)``
order. ``peek`` reads the state without changing it (``kernel.peek``); ``checkpoint``/``restore`` write
and read it (format 4).

Events before the high-water mark by at most the lateness allowed are ``late``: read from the events
before them in the order and spliced into the state at their place, as the Python engine does. It is to
replace ``engine.OnlineEngine``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import orjson
import polars as pl

from bankanom_pipeline.online import kernel as k
from bankanom_pipeline.online.aggregates import metric_row
from bankanom_pipeline.online.events import (
    LEVELS,
    METRICS,
    BadEvent,
    Event,
    geo_seed,
    metric_values,
    network,
    session,
    template,
)
from bankanom_pipeline.online.schema import FEATURES, HORIZON

# The SQL's regular expressions (events.py holds them for Python's re; these are the same patterns for
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
KINDS = ("template", "country", "user", "ip", "network", "session", "service")

# The digest of the feature SQL this engine implements (bankanom_pipeline/online/version.py computes the
# SQL's own). Declared, not imported: a change of the SQL fails tests/test_online_engine.py until the
# engine is changed to match and this is updated, and replay proves them equal again.
ENGINE_FEATURE_SET_VERSION = "9e879fd6d84d"


@dataclass
class Batch:
    """What one call did: each row's status (index into ``kernel.STATUSES``), its feature vector (a row
    for every event; meaningful where the status is ``ingested``) and its event id."""

    status: np.ndarray
    features: np.ndarray
    event_ids: list


class _Ids:
    """Text keys of one kind to small integer ids, with ids of entities that left the state reused."""

    __slots__ = ("free", "ids", "names", "used")

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.names: list[str | None] = []
        self.free: list[int] = []
        self.used = np.zeros(0, dtype=bool)

    def map(self, column: pl.Series, keys: bool = False):
        """Each row's id (-1 for null); new keys get ids. ``keys``: also the distinct keys and their ids."""
        ids = self.ids
        keys_ = column.drop_nulls().unique()
        values = []
        for v in keys_.to_list():
            i = ids.get(v)
            values.append(self._new(v) if i is None else i)
        mapped = pl.Series(values, dtype=pl.Int64)
        out = column.replace_strict(keys_, mapped, default=-1, return_dtype=pl.Int64).to_numpy()
        self.used[out[out >= 0]] = True
        if keys:
            return out, keys_, mapped.to_numpy()
        return out

    def one(self, value: str | None) -> int:
        """One key's id (-1 for None); a new key gets one."""
        if value is None:
            return -1
        i = self.ids.get(value)
        if i is None:
            i = self._new(value)
        self.used[i] = True
        return i

    def _new(self, value: str) -> int:
        if self.free:
            i = self.free.pop()
            self.names[i] = value
        else:
            i = len(self.names)
            if i >= k.ID_LIMIT:
                raise OverflowError(f"more than {k.ID_LIMIT} entities of one kind in the state")
            self.names.append(value)
            if i >= len(self.used):
                grown = np.zeros(max(2 * len(self.used), 1024), dtype=bool)
                grown[: len(self.used)] = self.used
                self.used = grown
        self.ids[value] = i
        return i

    def release_some(self, candidates: np.ndarray, tails: np.ndarray) -> None:
        """``release`` of the ``candidates`` only (ids >= 0 whose tail is -1)."""
        if len(candidates) < 64:  # a few events' (the API's): numpy's calls would cost more than the loop
            gone = {i for i in candidates.tolist() if i >= 0 and tails[i] == -1 and self.used[i]}
        else:
            candidates = candidates[candidates >= 0]
            candidates = candidates[tails[candidates] == -1]
            gone = {int(i) for i in candidates if self.used[i]}
        for i in gone:
            del self.ids[self.names[i]]
            self.names[i] = None
            self.free.append(i)
            self.used[i] = False

    def release(self, empty: np.ndarray) -> None:
        """Forget the ids whose entities hold no event (``empty``: a mask over ids)."""
        n = min(len(empty), len(self.used))
        gone = np.flatnonzero(empty[:n] & self.used[:n])
        for i in gone.tolist():
            del self.ids[self.names[i]]
            self.names[i] = None
            self.free.append(i)
        self.used[gone] = False


_NO_SEQS = np.zeros(0, dtype=np.int64)


def _rows(n: int, width: int, minus: tuple[int, ...]) -> np.ndarray:
    a = np.zeros((n, width), dtype=np.int64)
    a[:, list(minus)] = -1
    return a


class CompiledEngine:
    """Events through the compiled kernel: ``ingest_frame`` (a polars frame of
    ``validated_logs`` columns, metrics as JSON text) or ``ingest_many`` (``Event``s)."""

    FEATURES = FEATURES
    FEATURE_SET_VERSION = ENGINE_FEATURE_SET_VERSION
    DEFAULT_LATENESS_S = 3600.0

    def __init__(self, *, allowed_lateness_s: float = DEFAULT_LATENESS_S, capacity: int = 1 << 16):
        if not (allowed_lateness_s >= 0 and math.isfinite(allowed_lateness_s)):
            raise ValueError(f"allowed_lateness_s must be a finite number >= 0, not {allowed_lateness_s!r}")
        self.allowed_lateness_s = float(allowed_lateness_s)
        lateness = round(allowed_lateness_s * 1_000_000)
        cap = 1 << max(10, (capacity - 1).bit_length())
        self.G = np.zeros(k.NG, dtype=np.int64)
        self.G[k.G_MASK] = cap - 1
        self.G[k.G_LATENESS] = lateness
        self.G[k.G_RETENTION] = HORIZON + lateness
        self.G[[k.G_Q_LO, k.G_Q_TAIL, k.G_ALL_LO, k.G_ALL_TAIL]] = -1
        self.R = np.zeros((cap, k.NR), dtype=np.int64)
        self.RF = np.zeros((cap, k.NF), dtype=np.float64)
        self.ring_eid = np.empty(cap, dtype=object)
        self.T = _rows(0, k.NC, (k.C_LO, k.C_TAIL))
        self.Q = _rows(0, k.NC, (k.C_LO, k.C_TAIL))
        self.CL = np.zeros(0, dtype=np.int64)
        self.U = _rows(
            0, k.NU, (k.U_TAIL, k.U_LO10, k.U_LO30, k.U_LO60, k.U_LO24, k.U_LOC, k.U_ATAIL, k.U_ALO)
        )
        self.UF = np.zeros((0, k.NUF))
        self.S = _rows(0, k.NS, (k.S_TAIL, k.S_LO))
        self.A = _rows(0, k.NI, (k.I_TAIL, k.I_LO))
        self.N = _rows(0, k.NN, (k.N_TAIL, k.N_LO))
        self.V = _rows(0, k.NV, (k.V_TAIL, k.V_LO1, k.V_LO24))
        self.VX = np.zeros((0, 6))
        self.VR = np.zeros((0, 64))
        from numba import types
        from numba.typed import Dict

        self.pairs = Dict.empty(types.int64, types.int64)
        self.ids = {kind: _Ids() for kind in KINDS}
        self.seen: dict[str, int] = {}  # retained events' ids -> seq
        self.hwm_eid: str | None = None
        self._geo = geo_seed()
        self._lat = {g: v[0] for g, v in self._geo.items()}
        self._lon = {g: v[1] for g, v in self._geo.items()}
        self.prepare_seconds = 0.0  # CPU seconds of the last batch's prepare and kernel (benchmarks)
        self.kernel_seconds = 0.0

    @property
    def counters(self) -> dict[str, int]:
        G = self.G
        return {
            "ingested": int(G[k.G_INGESTED]),
            "late": int(G[k.G_LATE]),
            "duplicate": int(G[k.G_DUPLICATE]),
            "too_late": int(G[k.G_TOO_LATE]),
            "invalid": int(G[k.G_INVALID]),
            "new_user": int(G[k.G_NEW_USER]),
            "new_service": int(G[k.G_NEW_SERVICE]),
            "new_ip": int(G[k.G_NEW_IP]),
        }

    def ingest_batch(self, events: list[Event]) -> Batch:
        if len(events) < ROWS_BELOW:
            return self._ingest(time.process_time(), *self.prepare_events(events))
        return self.ingest_frame(frame_of(events))

    def ingest_frame(self, frame: pl.DataFrame) -> Batch:
        return self._ingest(time.process_time(), *self.prepare(frame))

    def _ingest(self, began: float, B, BF, out, eids) -> Batch:
        n = B.shape[0]
        self._reserve(n, B[:, k.B_SVC])
        status = np.zeros(n, dtype=np.int8)
        seqs = np.zeros(n, dtype=np.int64)
        oldest, swept = int(self.G[k.G_OLDEST]), int(self.G[k.G_SWEPT])
        self.G[k.G_HWM_ROW] = -1
        middle = time.process_time()
        k.run(B, BF, out, status, seqs, self.G, self.R, self.RF, self.T, self.Q, self.CL, self.U, self.UF,
              self.S, self.A, self.N, self.V, self.VX, self.VR, self.pairs)  # fmt: skip
        end = time.process_time()
        self._after(B, status, seqs, eids, oldest, swept)
        done = time.process_time()
        self.prepare_seconds = middle - began + done - end
        self.kernel_seconds = end - middle
        return Batch(status, out, eids)

    def checkpoint(self, path) -> None:
        write_checkpoint(self, path)

    @classmethod
    def restore(cls, path) -> CompiledEngine:
        return read_checkpoint(path, cls)

    def peek_frame(self, frame: pl.DataFrame) -> Batch:
        """The features each row would get if ingested now (rows do not see each other); the state is
        not changed. Status per row as ``ingest_frame`` gives it (``ingested``: features computed), except
        that duplicates are not looked for."""
        return self._peek(*self.prepare(frame))

    def _peek(self, B, BF, out, eids) -> Batch:
        self._reserve(B.shape[0], B[:, k.B_SVC])
        status = np.zeros(B.shape[0], dtype=np.int8)
        k.peek(
            B,
            BF,
            out,
            status,
            self.G,
            self.R,
            self.RF,
            self.T,
            self.Q,
            self.U,
            self.S,
            self.A,
            self.N,
            self.V,
        )
        self._release(B)
        return Batch(status, out, eids)

    def peek(self, event: Event) -> tuple[float, ...]:
        """``event``'s features if ingested now. Raises ``BadEvent`` for an invalid event and ``ValueError``
        for one older than the newest by more than the lateness allowed (``too_late``)."""
        batch = self._peek(*self.prepare_events([event]))
        status = k.STATUSES[batch.status[0]]
        if status == "invalid":
            raise BadEvent("invalid", f"event {event.event_id} is refused")
        if status == "too_late":
            raise ValueError(
                f"event {event.event_id} is older than the newest event by more than the lateness allowed"
            )
        return tuple(batch.features[0].tolist())

    # ------------------------------------------------------------------ prepare

    def prepare(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """The batch's kernel inputs: int rows ``B``, float rows ``BF``, the feature rows with their
        per-event metric columns filled, and the event ids."""
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"a batch needs the columns {', '.join(missing)}")
        n = frame.height
        valid = frame.select(pl.all_horizontal(pl.col(c).is_not_null() for c in _REQUIRED)).to_series()
        M, bad = self._metrics(frame["metrics"], frame["event_id"])
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
        B = np.empty((n, k.NB), dtype=np.int64)
        B[:, k.B_TS] = frame["ts"].fill_null(0).to_numpy()
        ids = self.ids
        B[:, k.B_TPL] = ids["template"].map(derived["template"])
        B[:, k.B_CTRY] = ids["country"].map(country)
        B[:, k.B_USER] = ids["user"].map(frame["user_id"])
        ip = frame["ip_address"]
        ip_ids, addresses, address_ids = ids["ip"].map(ip, keys=True)
        B[:, k.B_IP] = ip_ids
        # the network of each distinct address, then of each row
        networks = ids["network"].map(addresses.str.extract(_NETWORK, 1).fill_null(""))
        of_address = np.full(int(address_ids.max(initial=-1)) + 2, -1, dtype=np.int64)
        of_address[address_ids] = networks
        B[:, k.B_NET] = of_address[ip_ids]  # -1 (no address) reads the last item: -1
        B[:, k.B_SES] = ids["session"].map(derived["session"])
        B[:, k.B_SVC] = ids["service"].map(frame["source_service"])
        B[:, k.B_LVL] = level
        B[:, k.B_FAIL] = derived["failed"].fill_null(False).to_numpy()
        B[:, k.B_VPN] = derived["vpn"].fill_null(False).to_numpy()
        B[:, k.B_QUIET] = quiet
        # the order inside the kernel: ranks of the ids together with the high-water mark's, and with
        # those of the retained events sharing a microsecond with a row that may be late
        eid = frame["event_id"]
        tie_seqs = self._ties(B[:, k.B_TS][valid])
        tie_ids = pl.Series(self.ring_eid[tie_seqs & int(self.G[k.G_MASK])].tolist(), dtype=pl.String)
        ranked = pl.concat([pl.Series([self.hwm_eid], dtype=pl.String), eid, tie_ids])
        ranks = ranked.rank("dense").fill_null(0).to_numpy().astype(np.int64)
        self.G[k.G_HWM_RANK] = ranks[0]
        B[:, k.B_RANK] = ranks[1 : n + 1]
        self.R[tie_seqs & int(self.G[k.G_MASK]), k.R_RANK] = ranks[n + 1 :]
        eids = eid.to_list()
        seen = self.seen
        B[:, k.B_DUPSEQ] = [seen.get(e, -1) for e in eids] if seen else -1
        B[:, k.B_DUPPREV] = -1
        if eid.is_duplicated().any():  # the earlier row of the batch with the same id
            rows = pl.DataFrame({"event_id": eid, "row": np.arange(n)})
            previous = rows.select(pl.col("row").shift(1).over("event_id").fill_null(-1)).to_series()
            B[:, k.B_DUPPREV] = np.where(eid.is_null().to_numpy(), -1, previous.to_numpy())
        B[:, k.B_VALID] = valid
        BF = np.empty((n, k.NF))
        BF[:, k.F_REC] = np.nan_to_num(M[:, _M["records_accessed"]], nan=0.0)
        BF[:, k.F_BYT] = np.nan_to_num(M[:, _M["bytes_out"]], nan=0.0)
        BF[:, k.F_LAT] = (
            geo.replace_strict(self._lat, default=None, return_dtype=pl.Float64).fill_null(np.nan).to_numpy()
        )
        BF[:, k.F_LON] = (
            geo.replace_strict(self._lon, default=None, return_dtype=pl.Float64).fill_null(np.nan).to_numpy()
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            BF[:, k.F_X] = np.log(1 + M[:, _M["amount"]])
        BF[:, k.F_RT] = M[:, _M["response_time_ms"]]
        for j, m in enumerate(_GAUGES):
            BF[:, k.F_G + j] = M[:, m]
        out = np.zeros((n, len(FEATURES)))
        out[:, 6:28] = _metric_rows(M)
        return B, BF, out, eids

    def prepare_events(self, events: list[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """``prepare`` row by row, for a few ``Event``s (the API's and the stream's): polars costs
        milliseconds per call whatever the batch's size. The same values from events.py's functions
        (the SQL's regexes, which test_online_replay checks against DuckDB); the tests run both paths."""
        n = len(events)
        B = np.zeros((n, k.NB), dtype=np.int64)
        # an invalid row names no entity and no earlier event
        B[:, [k.B_TPL, k.B_CTRY, k.B_USER, k.B_IP, k.B_NET, k.B_SES, k.B_SVC, k.B_DUPSEQ, k.B_DUPPREV]] = -1
        BF = np.zeros((n, k.NF))
        out = np.zeros((n, len(FEATURES)))
        ids = self.ids
        seen = self.seen
        earlier: dict[str, int] = {}
        mask = int(self.G[k.G_MASK])
        tie_seqs = self._ties([e.ts for e in events if e.ts.__class__ is int])
        tie_ids = self.ring_eid[tie_seqs & mask].tolist() if len(tie_seqs) else []
        order = sorted(
            {e.event_id for e in events if e.event_id.__class__ is str} | {self.hwm_eid or ""} | set(tie_ids)
        )
        rank = {eid: i + 1 for i, eid in enumerate(order)}
        self.G[k.G_HWM_RANK] = rank.get(self.hwm_eid or "", 0)
        if tie_ids:
            self.R[tie_seqs & mask, k.R_RANK] = [rank[e] for e in tie_ids]
        eids = []
        geo_seed_ = self._geo
        for i, e in enumerate(events):
            eid, ts, service, log_level, message, _, user, ip, geo, metrics = e
            eids.append(eid)
            row = B[i]
            try:
                _check(e)
                m = metric_values(str(eid), metrics)
            except BadEvent:
                continue  # B_VALID stays 0
            row[k.B_VALID] = 1
            row[k.B_TS] = ts
            row[k.B_RANK] = rank[eid]
            row[k.B_DUPSEQ] = seen.get(eid, -1)
            row[k.B_DUPPREV] = earlier.get(eid, -1)
            earlier[eid] = i
            level = LEVELS.get(log_level, 4)
            country = None if geo is None else geo.split("-", 1)[0]
            row[k.B_TPL] = ids["template"].one(template(message))
            row[k.B_CTRY] = ids["country"].one(country)
            row[k.B_USER] = ids["user"].one(user)
            row[k.B_IP] = ids["ip"].one(ip)
            row[k.B_NET] = -1 if ip is None else ids["network"].one(network(ip))
            row[k.B_SES] = ids["session"].one(session(message) if user is not None else None)
            row[k.B_SVC] = ids["service"].one(service)
            row[k.B_LVL] = level
            row[k.B_FAIL] = message.startswith("Login failed")
            row[k.B_VPN] = message.startswith("VPN connection")
            row[k.B_QUIET] = level <= 1 and bool(country)
            f = BF[i]
            f[k.F_REC] = 0.0 if m[17] is None else m[17]
            f[k.F_BYT] = 0.0 if m[18] is None else m[18]
            located = None if geo is None else geo_seed_.get(geo)
            f[k.F_LAT], f[k.F_LON] = (np.nan, np.nan) if located is None else located
            f[k.F_X] = np.nan if m[9] is None else math.log(1 + m[9])
            f[k.F_RT] = np.nan if m[0] is None else m[0]
            for j, g in enumerate(_GAUGES):
                f[k.F_G + j] = np.nan if m[g] is None else m[g]
            out[i, 6:28] = metric_row(m)
        return B, BF, out, eids

    def _ties(self, ts: np.ndarray | list[int]) -> np.ndarray:
        """The ``seq``s of the retained events at the same microsecond as a row of ``ts`` that is not
        after the high-water mark's time: a late row's place among them is decided by id. ``ts`` a list
        for a few events (numpy's calls would cost more than the loop)."""
        G = self.G
        if not G[k.G_HAS_HWM]:
            return _NO_SEQS
        hwm = int(G[k.G_HWM_TS])
        if isinstance(ts, list):
            wanted = sorted({t for t in ts if t <= hwm})
            if not wanted:
                return _NO_SEQS
            return k.ties(G, self.R, np.array(wanted, dtype=np.int64))
        wanted = np.unique(ts[ts <= hwm])
        if not len(wanted):
            return _NO_SEQS
        return k.ties(G, self.R, wanted)

    def _metrics(self, text: pl.Series, eid: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """The 23 known metrics (NaN: absent) and which rows ``metric_values`` refuses. The JSON
        decoder reads ``true`` as 1.0 and stops at a text value, so those rows (and every row of a
        batch it refuses) are read by ``metric_values`` instead."""
        n = len(text)
        bad = np.zeros(n, dtype=bool)
        slow = (
            text.str.contains(r"\btrue\b|\bfalse\b") | ~text.str.strip_chars_start().str.starts_with("{")
        ).fill_null(False)
        try:
            decoded = (
                pl.DataFrame({"m": text}).select(pl.col("m").str.json_decode(_METRIC_SCHEMA)).unnest("m")
            )
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

    def _reserve(self, n: int, services: np.ndarray) -> None:
        """Grow the ring and the entity arrays so that the batch fits."""
        G = self.G
        live = int(G[k.G_NEXT] - G[k.G_RECLAIM]) + n
        cap = len(self.R)
        if live > cap:
            new = cap
            while new < live:
                new *= 2
            seqs = np.arange(G[k.G_RECLAIM], G[k.G_NEXT], dtype=np.int64)
            R = np.zeros((new, k.NR), dtype=np.int64)
            RF = np.zeros((new, k.NF))
            eid = np.empty(new, dtype=object)
            R[seqs & (new - 1)] = self.R[seqs & (cap - 1)]
            RF[seqs & (new - 1)] = self.RF[seqs & (cap - 1)]
            eid[seqs & (new - 1)] = self.ring_eid[seqs & (cap - 1)]
            self.R, self.RF, self.ring_eid = R, RF, eid
            G[k.G_MASK] = new - 1
        ids = self.ids
        self.T = _grow(self.T, len(ids["template"].names), (k.C_LO, k.C_TAIL))
        self.Q = _grow(self.Q, len(ids["country"].names), (k.C_LO, k.C_TAIL))
        if len(self.CL) < len(self.Q):
            self.CL = np.concatenate([self.CL, np.full(len(self.Q) - len(self.CL), -1, dtype=np.int64)])
        n_users = len(ids["user"].names)
        self.U = _grow(
            self.U, n_users, (k.U_TAIL, k.U_LO10, k.U_LO30, k.U_LO60, k.U_LO24, k.U_LOC, k.U_ATAIL, k.U_ALO)
        )
        if len(self.UF) < len(self.U):
            self.UF = np.concatenate([self.UF, np.zeros((len(self.U) - len(self.UF), k.NUF))])
        self.S = _grow(self.S, len(ids["session"].names), (k.S_TAIL, k.S_LO))
        self.A = _grow(self.A, len(ids["ip"].names), (k.I_TAIL, k.I_LO))
        self.N = _grow(self.N, len(ids["network"].names), (k.N_TAIL, k.N_LO))
        self.V = _grow(self.V, len(ids["service"].names), (k.V_TAIL, k.V_LO1, k.V_LO24))
        if len(self.VX) < len(self.V):
            self.VX = np.concatenate([self.VX, np.full((len(self.V) - len(self.VX), 6), np.nan)])
        # each service's sorted response times: room for its minute and its events in this batch
        per_service = np.bincount(services[services >= 0], minlength=len(self.V))
        need = int((self.V[:, k.V_NRT] + per_service[: len(self.V)]).max(initial=0)) + 1
        rows, width = self.VR.shape
        wanted = max(rows, min(len(self.V), 2 * len(ids["service"].names) + 8))
        if rows < len(ids["service"].names) or width < need:
            VR = np.zeros((wanted, max(width, 2 * need) if width < need else width))
            VR[:rows, :width] = self.VR
            self.VR = VR

    def _after(self, B, status: np.ndarray, seqs: np.ndarray, eids: list, oldest: int, swept: int) -> None:
        """After a batch: the retained ids for duplicates, the high-water mark's id, the ids of entities
        left with no event freed."""
        G = self.G
        mask = int(G[k.G_MASK])
        seen = self.seen
        ring_eid = self.ring_eid
        for seq in range(oldest, int(G[k.G_OLDEST])):
            # (an id whose event expired by time, sent again, maps to its newer seq: kept)
            eid = ring_eid[seq & mask]
            if seen.get(eid) == seq:
                del seen[eid]
        accepted = np.flatnonzero((status == k.ST_INGESTED) | (status == k.ST_LATE))
        if len(accepted):
            s = seqs[accepted]
            names = [eids[i] for i in accepted.tolist()]
            ring_eid[s & mask] = names
            seen.update(zip(names, s.tolist(), strict=True))
        row = int(G[k.G_HWM_ROW])
        if row >= 0:
            self.hwm_eid = eids[row]
        self._release(None if G[k.G_SWEPT] != swept else B)

    def _release(self, B: np.ndarray | None = None) -> None:
        """Free the ids of entities with no event in the state: every kind's after a sweep (``B`` None),
        else only the ids the batch ``B`` named (new keys of refused or peeked events)."""
        for kind, col, tails in (
            ("template", k.B_TPL, self.T[:, k.C_TAIL]),
            ("country", k.B_CTRY, self.CL),
            ("user", k.B_USER, self.U[:, k.U_TAIL]),
            ("session", k.B_SES, self.S[:, k.S_TAIL]),
            ("ip", k.B_IP, self.A[:, k.I_TAIL]),
            ("network", k.B_NET, self.N[:, k.N_TAIL]),
            ("service", k.B_SVC, self.V[:, k.V_TAIL]),
        ):
            if B is None:
                self.ids[kind].release(tails == -1)
            else:
                self.ids[kind].release_some(B[:, col], tails)


def _check(e: Event) -> None:
    """The types the engine needs (``OnlineEngine._prepare``'s checks), or ``BadEvent``."""
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


def _grow(a: np.ndarray, rows: int, minus: tuple[int, ...]) -> np.ndarray:
    if rows <= len(a):
        return a
    grown = _rows(max(rows, 2 * len(a), 256), a.shape[1], minus)
    grown[: len(a)] = a
    return grown


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


def warm() -> float:
    """Compile (or load from numba's cache) every kernel function: a few events through a throwaway
    engine, one of them late, then a peek. Returns the CPU seconds it took. numba keeps what it compiles
    in ``__pycache__`` beside kernel.py (or, where that is not writable, the user's cache folder, or
    ``NUMBA_CACHE_DIR``): scripts/test.sh runs this once before the test tiers, so that the test workers
    load the cache rather than each compiling (20-40 CPU-s)."""
    began = time.process_time()
    engine = CompiledEngine()
    t = 1_780_000_000_000_000
    events = [
        Event(
            f"w{i}",
            t + i * 1_000_000,
            "auth",
            "INFO",
            "ok",
            None,
            "USR-1",
            "10.0.0.1",
            "US-CA",
            {"amount": 3.0},
        )
        for i in range(3)
    ]
    engine.ingest_batch(events[1:])
    engine.ingest_batch(events[:1])  # late
    engine.peek(events[0]._replace(event_id="w9"))
    engine.ingest_frame(frame_of(events))  # the frame's prepare (duplicates)
    return time.process_time() - began


# ---------------------------------------------------------------------- checkpoint (format 4)

# format 2 was the Python engine's (its tracks, not these arrays); 3 was this engine's before
# its lists were doubly linked (never released)
CHECKPOINT_VERSION = 4
_ARRAYS = ("G", "T", "Q", "CL", "U", "UF", "S", "A", "N", "V", "VX", "VR")


def write_checkpoint(engine: CompiledEngine, path) -> None:
    """The compiled engine's whole state: checkpoint.py's header line (format, version 4, feature set,
    high-water mark, zlib body's length and sha256), then the body: an 8-byte manifest length, a JSON
    manifest (each kind's keys by id, the retained events' ids, the high-water mark's id, where each
    array lies), and the arrays as little-endian bytes: the ring's live rows in ``seq`` order, the entity
    arrays, the distinct counters as two int64 arrays. No pickle. Written to a temporary name, fsynced
    and renamed."""
    import hashlib
    import os
    import zlib
    from pathlib import Path

    from bankanom_pipeline.online.checkpoint import FORMAT

    path = Path(path)
    G = engine.G
    mask = int(G[k.G_MASK])
    first, oldest, end = int(G[k.G_RECLAIM]), int(G[k.G_OLDEST]), int(G[k.G_NEXT])
    slots = np.arange(first, end, dtype=np.int64) & mask
    arrays = {name: getattr(engine, name) for name in _ARRAYS}
    arrays["R"], arrays["RF"] = engine.R[slots], engine.RF[slots]
    arrays["pair_keys"] = np.fromiter(engine.pairs.keys(), dtype=np.int64, count=len(engine.pairs))
    arrays["pair_counts"] = np.fromiter(engine.pairs.values(), dtype=np.int64, count=len(engine.pairs))
    parts, where, size = [], {}, 0
    for name, a in arrays.items():
        data = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        where[name] = [a.dtype.kind + str(a.dtype.itemsize), list(a.shape), size]
        parts.append(data)
        size += len(data)
    manifest = orjson.dumps(
        {
            "allowed_lateness_s": engine.allowed_lateness_s,
            "capacity": len(engine.R),
            "hwm_eid": engine.hwm_eid,
            "retained": list(engine.ring_eid[np.arange(oldest, end, dtype=np.int64) & mask]),
            "keys": {kind: ids.names for kind, ids in engine.ids.items()},
            "arrays": where,
        }
    )
    body = zlib.compress(b"".join([len(manifest).to_bytes(8, "little"), manifest, *parts]), 1)
    hwm = [int(G[k.G_HWM_TS]), engine.hwm_eid] if G[k.G_HAS_HWM] else None
    header = orjson.dumps(
        {
            "format": FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "feature_set_version": engine.FEATURE_SET_VERSION,
            "high_water_mark": hwm,
            "compression": "zlib",
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("wb") as handle:
        handle.write(header + b"\n")
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_checkpoint(path, cls: type[CompiledEngine] = CompiledEngine) -> CompiledEngine:
    """A compiled engine from ``write_checkpoint``'s file; ``CheckpointError`` (naming the cause) for
    another format or version, another feature set, a corrupt or cut body, or a malformed state."""
    import hashlib
    import zlib
    from pathlib import Path

    from bankanom_pipeline.online.checkpoint import CheckpointError, _header

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read the checkpoint {path}: {error}") from None
    header, body = _header(path, data)
    version = header.get("format_version")
    if version != CHECKPOINT_VERSION:
        before = (
            " (format 2 is the Python engine's, before the compiled engine)" if version in (1, 2, 3) else ""
        )
        raise CheckpointError(
            f"{path} has checkpoint format {version}{before}, this engine reads {CHECKPOINT_VERSION}: it "
            "cannot be converted; the state is rebuilt from the events (the stream replays its event store "
            "when no checkpoint of its own is readable, and the next published snapshot writes a new one)"
        )
    if header.get("feature_set_version") != cls.FEATURE_SET_VERSION:
        raise CheckpointError(
            f"{path} holds state of feature set {header.get('feature_set_version')}, this engine implements "
            f"{cls.FEATURE_SET_VERSION}: rebuild the state by replaying the events (bankanom replay)"
        )
    if len(body) != header.get("bytes") or hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise CheckpointError(
            f"{path} is corrupt: its body does not match the length and sha256 of its header"
        )
    try:
        return _restore(memoryview(zlib.decompress(body)), cls)
    except (KeyError, TypeError, ValueError, IndexError, zlib.error) as error:
        raise CheckpointError(f"{path} has a malformed state: {error!r}") from None


def _restore(body: memoryview, cls: type[CompiledEngine]) -> CompiledEngine:
    size = int.from_bytes(body[:8], "little")
    manifest = orjson.loads(body[8 : 8 + size])
    blobs = body[8 + size :]
    arrays = {}
    for name, (code, shape, offset) in manifest["arrays"].items():
        dtype = np.dtype("<" + code)
        count = int(np.prod(shape))
        if offset + count * dtype.itemsize > len(blobs):
            raise ValueError(f"array {name} lies beyond the body")
        arrays[name] = (
            np.frombuffer(blobs, dtype=dtype, count=count, offset=offset)
            .reshape(shape)
            .astype(dtype.newbyteorder("="), copy=True)
        )
    engine = cls(allowed_lateness_s=manifest["allowed_lateness_s"], capacity=manifest["capacity"])
    for name in _ARRAYS:
        setattr(engine, name, arrays[name])
    G = engine.G
    cap = len(engine.R)
    if G[k.G_MASK] != cap - 1:
        raise ValueError("the ring's capacity does not match its mask")
    first, oldest, end = int(G[k.G_RECLAIM]), int(G[k.G_OLDEST]), int(G[k.G_NEXT])
    if not (0 <= first <= oldest <= end) or end - first > cap or len(arrays["R"]) != end - first:
        raise ValueError("the ring's bounds do not match its rows")
    slots = np.arange(first, end, dtype=np.int64) & (cap - 1)
    engine.R[slots], engine.RF[slots] = arrays["R"], arrays["RF"]
    retained = manifest["retained"]
    if len(retained) != end - oldest:
        raise ValueError("the retained event ids do not match the ring")
    engine.ring_eid[slots[oldest - first :]] = retained
    engine.seen = dict(zip(retained, range(oldest, end), strict=True))
    engine.hwm_eid = manifest["hwm_eid"]
    for (kind, ids), rows in zip(
        engine.ids.items(),
        (engine.T, engine.CL, engine.U, engine.A, engine.N, engine.S, engine.V),
        strict=True,
    ):
        names = manifest["keys"][kind]
        if len(names) > len(rows):
            raise ValueError(f"more {kind} keys than rows")
        ids.names = names
        ids.ids = {name: i for i, name in enumerate(names) if name is not None}
        ids.free = [i for i, name in enumerate(names) if name is None]
        ids.used = np.zeros(max(len(names), 1024), dtype=bool)
        ids.used[[i for i, name in enumerate(names) if name is not None]] = True
    for key, count in zip(arrays["pair_keys"].tolist(), arrays["pair_counts"].tolist(), strict=True):
        engine.pairs[key] = count
    return engine


if __name__ == "__main__":
    print(f"numba kernel ready: {warm():.1f} CPU-s")
