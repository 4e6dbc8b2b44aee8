"""Generated log lines as numpy columns, before rendering.

A ``Block`` holds lines column-wise (string fields as vocabulary codes; metrics as NaN-padded columns or
by group of lines). ``Lines`` is one time range: the normal lines, drawn already in time order, and the
(few) anomalous lines in a block of their own; their merged time order is kept as row positions instead
of gathering every column into one sorted block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat

import numpy as np
import polars as pl

CORE = ("ts", "service", "level", "template", "user", "ip", "geo", "r1", "corr")
_CORE_DTYPES = {
    "ts": np.int64,
    "service": np.int32,
    "level": np.int32,
    "template": np.int32,
    "user": np.int64,
    "ip": np.uint32,
    "geo": np.int32,
    "r1": np.int64,
    "corr": np.int64,
}
# anomaly-only columns and their value on lines without one
EXTRA_MISSING = {
    "scenario": -1,
    "instance_no": 0,
    "instance_uid": 0,
    "confidence": np.nan,
    "payload": -1,
    "correlation_event": -1,
}


class Vocab:
    """Strings as small integer codes, so that columns stay numeric until rendering (-1 = null)."""

    def __init__(self, values=()):
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        for value in values:
            self.code(value)

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        if value not in self.index:
            self.index[value] = len(self.values)
            self.values.append(value)
        return self.index[value]

    def codes(self, values: np.ndarray) -> np.ndarray:
        """Codes of an array of strings (None = null); new strings get codes in order of appearance."""
        values = list(values)
        for value in dict.fromkeys(values):  # distinct values, first appearance first
            self.code(value)
        return np.fromiter(map(self.index.get, values, repeat(-1)), dtype=np.int32, count=len(values))


@dataclass
class Group:
    """Lines of a block (``rows``, increasing) that carry the same metrics, with their values."""

    rows: np.ndarray
    metrics: dict[str, np.ndarray]

    def window(self, start: int, stop: int) -> Group:
        """The group's lines among block rows start..stop-1, renumbered from start."""
        low, high = np.searchsorted(self.rows, (start, stop))
        return Group(self.rows[low:high] - start, {k: v[low:high] for k, v in self.metrics.items()})


@dataclass
class Block:
    """Columns of generated lines. String columns hold vocabulary codes; ``extra`` holds the anomaly
    columns (EXTRA_MISSING) of blocks that have them. Metrics are either ``metrics``, columns with NaN
    where a line lacks the field, or, if ``groups`` is set, stored by group of lines (no NaN padding)."""

    ts: np.ndarray
    service: np.ndarray
    level: np.ndarray
    template: np.ndarray
    user: np.ndarray
    ip: np.ndarray  # uint32, 0 = none
    geo: np.ndarray
    r1: np.ndarray  # random number behind transaction/order/session ids
    corr: np.ndarray  # correlation key: lines with one key share a correlation_id
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    groups: list[Group] | None = None

    def __len__(self) -> int:
        return len(self.ts)

    def take(self, rows) -> Block:
        """The lines at ``rows`` (an index array, or a slice if the block has groups)."""
        groups = None
        if self.groups is not None:
            start, stop, _ = rows.indices(len(self))
            groups = [g for g in (g.window(start, stop) for g in self.groups) if len(g.rows)]
        return Block(
            **{name: getattr(self, name)[rows] for name in CORE},
            metrics={k: v[rows] for k, v in self.metrics.items()},
            extra={k: v[rows] for k, v in self.extra.items()},
            groups=groups,
        )

    def sorted(self) -> Block:
        return self.take(np.argsort(self.ts, kind="stable"))

    def split(self, cut_ms: int) -> tuple[Block, Block]:
        """Lines before ``cut_ms`` and the rest, for a block sorted by time."""
        return self.split_at(int(np.searchsorted(self.ts, cut_ms)))

    def split_at(self, row: int) -> tuple[Block, Block]:
        return self.take(slice(0, row)), self.take(slice(row, None))

    def dense_metrics(self) -> dict[str, np.ndarray]:
        """Metrics as NaN-padded columns, whichever way they are stored."""
        if self.groups is None:
            return self.metrics
        columns: dict[str, np.ndarray] = {}
        for group in self.groups:
            for name, values in group.metrics.items():
                columns.setdefault(name, np.full(len(self), np.nan))[group.rows] = values
        return columns

    def set(self, name: str, rows, values: np.ndarray) -> None:
        """Store a metric for some lines (NaN for the others)."""
        column = self.metrics.get(name)
        if column is None:
            column = self.metrics[name] = np.full(len(self.ts), np.nan)
        column[rows] = values

    def columns(self, with_extra: bool) -> dict[str, np.ndarray]:
        extra = {k: self.extra.get(k, np.full(len(self), v)) for k, v in EXTRA_MISSING.items()}
        metrics = self.dense_metrics()
        return {
            **{name: getattr(self, name) for name in CORE},
            **{f"m_{k}": metrics[k] for k in sorted(metrics)},
            **(dict(sorted(extra.items())) if with_extra else {}),
        }

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> Block:
        """A block of a generator frame (see ``Lines.frame``), e.g. to render a filtered frame."""
        core = {name: frame[name].to_numpy().astype(dtype) for name, dtype in _CORE_DTYPES.items()}
        metrics = {c[2:]: frame[c].cast(pl.Float64).to_numpy() for c in frame.columns if c.startswith("m_")}
        extra = {}
        if "scenario" in frame.columns:
            for name, missing in EXTRA_MISSING.items():
                column = frame[name].fill_null(missing) if name in frame.columns else None
                dtype = np.float64 if name == "confidence" else np.int64
                extra[name] = (
                    np.full(frame.height, missing, dtype)
                    if column is None
                    else column.to_numpy().astype(dtype)
                )
        return cls(**core, metrics=metrics, extra=extra)


def concat_blocks(blocks: list[Block]) -> Block:
    """One block of several; metrics and extras missing in some take their "absent" values there."""
    if len(blocks) == 1:
        return blocks[0]
    bounds = np.cumsum([0] + [len(b) for b in blocks])

    def column(values: dict, name: str, missing) -> np.ndarray:
        present = [b for b in blocks if name in values(b)]
        out = np.full(bounds[-1], missing, dtype=values(present[0])[name].dtype)
        for i, block in enumerate(blocks):
            if name in values(block):
                out[bounds[i] : bounds[i + 1]] = values(block)[name]
        return out

    return Block(
        **{a: np.concatenate([getattr(b, a) for b in blocks]) for a in CORE},
        metrics={
            name: column(lambda b: b.metrics, name, np.nan)
            for name in sorted({name for b in blocks for name in b.metrics})
        },
        extra={
            key: column(lambda b: b.extra, key, EXTRA_MISSING[key])
            for key in sorted({key for b in blocks for key in b.extra})
        },
    )


@dataclass
class Lines:
    """Lines of a time range: normal ones and anomalous ones, each block sorted by time. At equal
    timestamps normal lines come first."""

    normal: Block
    anomalous: Block | None = None
    _positions: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.normal) + (len(self.anomalous) if self.anomalous is not None else 0)

    def parts(self) -> list[tuple[Block, np.ndarray]]:
        """Each block with the position of each of its lines in the merged time order."""
        if self.anomalous is None or not len(self.anomalous):
            return [(self.normal, np.arange(len(self.normal)))]
        if self._positions is None:
            # search the few anomalous lines among the normal ones; the normal lines take the rest
            anomalous = np.searchsorted(self.normal.ts, self.anomalous.ts, "right")
            anomalous += np.arange(len(anomalous))
            normal = np.ones(len(self), bool)
            normal[anomalous] = False
            self._positions = (np.flatnonzero(normal), anomalous)
        return [(self.normal, self._positions[0]), (self.anomalous, self._positions[1])]

    def split(self, cut_ms: int) -> tuple[Lines, Lines]:
        """Lines before ``cut_ms`` and the rest."""
        normal = self.normal.split(cut_ms)
        if self.anomalous is None:
            return Lines(normal[0]), Lines(normal[1])
        anomalous = self.anomalous.split(cut_ms)
        return Lines(normal[0], anomalous[0]), Lines(normal[1], anomalous[1])

    def head(self, n: int) -> Lines:
        """The first ``n`` lines in time order."""
        return self.split_count(n)[0]

    def split_count(self, n: int) -> tuple[Lines, Lines]:
        """The first ``n`` lines in time order and the rest."""
        if n >= len(self):
            return self, Lines(self.normal.take(slice(len(self.normal), None)), None)
        cut = [int(np.searchsorted(position, n)) for _, position in self.parts()]
        normal = self.normal.split_at(cut[0])
        if self.anomalous is None or len(cut) == 1:
            return Lines(normal[0], self.anomalous), Lines(normal[1], self.anomalous)
        anomalous = self.anomalous.split_at(cut[1])
        return Lines(normal[0], anomalous[0]), Lines(normal[1], anomalous[1])

    def frame(self) -> pl.DataFrame:
        """All lines in time order as one frame (extras only if the range has an anomalous block)."""
        with_extra = self.anomalous is not None
        merged: dict[str, np.ndarray] = {}
        for block, position in self.parts():
            for name, values in block.columns(with_extra).items():
                if name not in merged:
                    merged[name] = np.full(len(self), _absent(name), dtype=values.dtype)
                merged[name][position] = values
        ordered = [*CORE, *sorted(k for k in merged if k.startswith("m_")), *sorted(EXTRA_MISSING)]
        return pl.DataFrame(
            [pl.Series(name, merged[name], nan_to_null=True) for name in ordered if name in merged]
        )


def _absent(name: str) -> float | int:
    if name.startswith("m_"):
        return np.nan
    return EXTRA_MISSING.get(name, 0)
