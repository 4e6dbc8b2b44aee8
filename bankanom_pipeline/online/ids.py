"""Integer ids for the text keys of each kind (template, country, user, IP, network, session, service):
the kernel's arrays are indexed by them. Ids of entities that left the state are reused."""

from __future__ import annotations

import numpy as np
import polars as pl

from bankanom_pipeline.online.layout import ID_LIMIT


class Ids:
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
            if i >= ID_LIMIT:
                raise OverflowError(f"more than {ID_LIMIT} entities of one kind in the state")
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
