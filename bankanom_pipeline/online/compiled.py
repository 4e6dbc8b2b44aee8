"""The compiled online engine (docs/online.md, "Compiled engine"): a batch of events is prepared with
polars and numpy (``prepare.py``: derived keys, metrics, integer ids, order, duplicates; row by row for a
few ``Event``s), then run through the numba kernel (``kernel.run``) one event at a time in the batch's
``(ts, event_id)`` order. ``peek`` reads the state without changing it (``kernel.peek``);
``checkpoint``/``restore`` write and read it (``checkpoint.py``, format 5). This module owns the state's
arrays (their columns: ``layout.py``): it grows them before a batch and frees the ids of entities left
with no event after it.

Events before the high-water mark by at most the lateness allowed are ``late``: read from the events
before them in the order and spliced into the state at their place.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from bankanom_pipeline.online import kernel
from bankanom_pipeline.online import layout as lay
from bankanom_pipeline.online.checkpoint import read_checkpoint, write_checkpoint
from bankanom_pipeline.online.events import (
    BadEvent,
    Event,
    geo_seed,
)
from bankanom_pipeline.online.ids import Ids
from bankanom_pipeline.online.prepare import ROWS_BELOW, frame_of, prepare_frame, prepare_rows
from bankanom_pipeline.online.schema import FEATURES, HORIZON

KINDS = ("template", "country", "user", "ip", "network", "session", "service")

# The digest of the feature SQL this engine implements (bankanom_pipeline/online/version.py computes the
# SQL's own). Declared, not imported: a change of the SQL fails tests/test_online_engine.py until the
# engine is changed to match and this is updated, and replay proves them equal again.
ENGINE_FEATURE_SET_VERSION = "9e879fd6d84d"


@dataclass
class Batch:
    """What one call did: each row's status (index into ``layout.STATUSES``), its feature vector (a row
    for every event; meaningful where the status is ``ingested``) and its event id."""

    status: np.ndarray
    features: np.ndarray
    event_ids: list


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
        self.G = np.zeros(lay.NG, dtype=np.int64)
        self.G[lay.G_MASK] = cap - 1
        self.G[lay.G_LATENESS] = lateness
        self.G[lay.G_RETENTION] = HORIZON + lateness
        self.G[[lay.G_Q_LO, lay.G_Q_TAIL, lay.G_ALL_LO, lay.G_ALL_TAIL]] = -1
        self.RT = np.zeros(cap, dtype=np.int64)
        self.R = np.zeros((cap, lay.NR), dtype=np.int32)
        self.RF = np.zeros((cap, lay.NF), dtype=np.float64)
        self.ring_eid = np.empty(cap, dtype=object)
        self.T = _rows(0, lay.NC, (lay.C_LO, lay.C_TAIL))
        self.Q = _rows(0, lay.NC, (lay.C_LO, lay.C_TAIL))
        self.CL = np.zeros(0, dtype=np.int64)
        self.U = _rows(
            0,
            lay.NU,
            (lay.U_TAIL, lay.U_LO10, lay.U_LO30, lay.U_LO60, lay.U_LO24, lay.U_LOC, lay.U_ATAIL, lay.U_ALO),
        )
        self.UF = np.zeros((0, lay.NUF))
        self.S = _rows(0, lay.NS, (lay.S_TAIL, lay.S_LO))
        self.A = _rows(0, lay.NI, (lay.I_TAIL, lay.I_LO))
        self.N = _rows(0, lay.NN, (lay.N_TAIL, lay.N_LO))
        self.V = _rows(0, lay.NV, (lay.V_TAIL, lay.V_LO1, lay.V_LO24))
        self.VX = np.zeros((0, 6))
        self.VR = np.zeros((0, 64))
        from numba import types
        from numba.typed import Dict

        self.pairs = Dict.empty(types.int64, types.int64)
        self.ids = {kind: Ids() for kind in KINDS}
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
            "ingested": int(G[lay.G_INGESTED]),
            "late": int(G[lay.G_LATE]),
            "duplicate": int(G[lay.G_DUPLICATE]),
            "too_late": int(G[lay.G_TOO_LATE]),
            "invalid": int(G[lay.G_INVALID]),
            "new_user": int(G[lay.G_NEW_USER]),
            "new_service": int(G[lay.G_NEW_SERVICE]),
            "new_ip": int(G[lay.G_NEW_IP]),
        }

    def ingest_batch(self, events: list[Event]) -> Batch:
        if len(events) < ROWS_BELOW:
            return self._ingest(time.process_time(), *self.prepare_events(events))
        return self.ingest_frame(frame_of(events))

    def ingest_frame(self, frame: pl.DataFrame) -> Batch:
        return self._ingest(time.process_time(), *self.prepare(frame))

    def _ingest(self, began: float, B, BF, out, eids) -> Batch:
        n = B.shape[0]
        self._reserve(n, B[:, lay.B_SVC])
        status = np.zeros(n, dtype=np.int8)
        seqs = np.zeros(n, dtype=np.int64)
        oldest, swept = int(self.G[lay.G_OLDEST]), int(self.G[lay.G_SWEPT])
        self.G[lay.G_HWM_ROW] = -1
        middle = time.process_time()
        kernel.run(B, BF, out, status, seqs, self.G, self.R, self.RT, self.RF, self.T, self.Q, self.CL, self.U, self.UF,
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
        self._reserve(B.shape[0], B[:, lay.B_SVC])
        status = np.zeros(B.shape[0], dtype=np.int8)
        kernel.peek(
            B,
            BF,
            out,
            status,
            self.G,
            self.R,
            self.RT,
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
        status = lay.STATUSES[batch.status[0]]
        if status == "invalid":
            raise BadEvent("invalid", f"event {event.event_id} is refused")
        if status == "too_late":
            raise ValueError(
                f"event {event.event_id} is older than the newest event by more than the lateness allowed"
            )
        return tuple(batch.features[0].tolist())

    # ------------------------------------------------------------------ prepare

    def prepare(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """The batch's kernel inputs (``prepare.prepare_frame``)."""
        return prepare_frame(self, frame)

    def prepare_events(self, events: list[Event]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """``prepare`` row by row, for a few ``Event``s (``prepare.prepare_rows``)."""
        return prepare_rows(self, events)

    # ------------------------------------------------------------------ state

    def _reserve(self, n: int, services: np.ndarray) -> None:
        """Grow the ring and the entity arrays so that the batch fits."""
        G = self.G
        live = int(G[lay.G_NEXT] - G[lay.G_RECLAIM]) + n
        cap = len(self.R)
        if live > cap:
            new = cap
            while new < live:
                new *= 2
            if new > lay.MAX_CAPACITY:
                raise OverflowError(
                    f"more than {lay.MAX_CAPACITY} events in the state (the ring's links are int32)"
                )
            seqs = np.arange(G[lay.G_RECLAIM], G[lay.G_NEXT], dtype=np.int64)
            old, at = seqs & (cap - 1), seqs & (new - 1)
            R = np.zeros((new, lay.NR), dtype=np.int32)
            RT = np.zeros(new, dtype=np.int64)
            RF = np.zeros((new, lay.NF))
            eid = np.empty(new, dtype=object)
            R[at], RT[at], RF[at], eid[at] = self.R[old], self.RT[old], self.RF[old], self.ring_eid[old]
            self.R, self.RT, self.RF, self.ring_eid = R, RT, RF, eid
            G[lay.G_MASK] = new - 1
        ids = self.ids
        self.T = _grow(self.T, len(ids["template"].names), (lay.C_LO, lay.C_TAIL))
        self.Q = _grow(self.Q, len(ids["country"].names), (lay.C_LO, lay.C_TAIL))
        if len(self.CL) < len(self.Q):
            self.CL = np.concatenate([self.CL, np.full(len(self.Q) - len(self.CL), -1, dtype=np.int64)])
        n_users = len(ids["user"].names)
        self.U = _grow(
            self.U,
            n_users,
            (lay.U_TAIL, lay.U_LO10, lay.U_LO30, lay.U_LO60, lay.U_LO24, lay.U_LOC, lay.U_ATAIL, lay.U_ALO),
        )
        if len(self.UF) < len(self.U):
            self.UF = np.concatenate([self.UF, np.zeros((len(self.U) - len(self.UF), lay.NUF))])
        self.S = _grow(self.S, len(ids["session"].names), (lay.S_TAIL, lay.S_LO))
        self.A = _grow(self.A, len(ids["ip"].names), (lay.I_TAIL, lay.I_LO))
        self.N = _grow(self.N, len(ids["network"].names), (lay.N_TAIL, lay.N_LO))
        self.V = _grow(self.V, len(ids["service"].names), (lay.V_TAIL, lay.V_LO1, lay.V_LO24))
        if len(self.VX) < len(self.V):
            self.VX = np.concatenate([self.VX, np.full((len(self.V) - len(self.VX), 6), np.nan)])
        # each service's sorted response times: room for its minute and its events in this batch
        per_service = np.bincount(services[services >= 0], minlength=len(self.V))
        need = int((self.V[:, lay.V_NRT] + per_service[: len(self.V)]).max(initial=0)) + 1
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
        mask = int(G[lay.G_MASK])
        seen = self.seen
        ring_eid = self.ring_eid
        for seq in range(oldest, int(G[lay.G_OLDEST])):
            # (an id whose event expired by time, sent again, maps to its newer seq: kept)
            eid = ring_eid[seq & mask]
            if seen.get(eid) == seq:
                del seen[eid]
        accepted = np.flatnonzero((status == lay.ST_INGESTED) | (status == lay.ST_LATE))
        if len(accepted):
            s = seqs[accepted]
            names = [eids[i] for i in accepted.tolist()]
            ring_eid[s & mask] = names
            seen.update(zip(names, s.tolist(), strict=True))
        row = int(G[lay.G_HWM_ROW])
        if row >= 0:
            self.hwm_eid = eids[row]
        self._release(None if G[lay.G_SWEPT] != swept else B)

    def _release(self, B: np.ndarray | None = None) -> None:
        """Free the ids of entities with no event in the state: every kind's after a sweep (``B`` None),
        else only the ids the batch ``B`` named (new keys of refused or peeked events)."""
        for kind, col, tails in (
            ("template", lay.B_TPL, self.T[:, lay.C_TAIL]),
            ("country", lay.B_CTRY, self.CL),
            ("user", lay.B_USER, self.U[:, lay.U_TAIL]),
            ("session", lay.B_SES, self.S[:, lay.S_TAIL]),
            ("ip", lay.B_IP, self.A[:, lay.I_TAIL]),
            ("network", lay.B_NET, self.N[:, lay.N_TAIL]),
            ("service", lay.B_SVC, self.V[:, lay.V_TAIL]),
        ):
            if B is None:
                self.ids[kind].release(tails == -1)
            else:
                self.ids[kind].release_some(B[:, col], tails)


def _grow(a: np.ndarray, rows: int, minus: tuple[int, ...]) -> np.ndarray:
    if rows <= len(a):
        return a
    grown = _rows(max(rows, 2 * len(a), 256), a.shape[1], minus)
    grown[: len(a)] = a
    return grown


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


if __name__ == "__main__":
    print(f"numba kernel ready: {warm():.1f} CPU-s")
