"""Scoring a large matrix in row blocks on threads: rows are scored independently, so the result is the
same (bit for bit) whatever the blocks and however many threads."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


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
