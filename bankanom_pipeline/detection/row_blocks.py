"""Scoring a large matrix in row blocks on threads, and batches of rows side by side: rows are scored
independently, so the result is the same (bit for bit) whatever the blocks and however many threads."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")


def threads() -> int:
    """The cores this process may use (the scheduler's affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_row_blocks(fn: Callable[[np.ndarray], np.ndarray], matrix: np.ndarray, block: int) -> np.ndarray:
    """``fn`` of each block of ``block`` rows, concatenated in row order; the blocks run on one thread
    per core (``fn`` must spend its time in code that releases the GIL: sklearn's tree traversal,
    scipy's cKDTree, numpy)."""
    starts = range(0, len(matrix), block)
    if len(starts) <= 1 or threads() == 1:
        return np.concatenate([fn(matrix[s : s + block]) for s in starts]) if len(starts) else fn(matrix)
    with ThreadPoolExecutor(min(threads(), len(starts))) as pool:
        return np.concatenate(list(pool.map(lambda s: fn(matrix[s : s + block]), starts)))


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> Iterator[R]:
    """``fn`` of each item, in the items' order, ``workers`` (default: one per core) at a time on
    threads. Items are taken from ``items`` only as a worker frees up, so at most ``workers`` + 1 of
    them are in memory (a day read in batches stays bounded). For batches whose scoring holds a core
    alone part of the time (ECOD's lookups, building feature matrices, calibrating): the next batch
    runs on the other core meanwhile."""
    workers = threads() if workers is None else workers
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[R]] = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
