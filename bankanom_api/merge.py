"""One page of two sorted sources as if they were one: the batch snapshot's rows and the live store's.

Both sources hold disjoint rows (the live side is already reduced to what the batch does not hold),
sorted by the same key, and each can count its rows under the filters, fetch a page of them and give
its first and last row's key. The merged page is exact: the rows at ``offset`` of the union in key
order. When one source's rows all sort before the other's (the usual case: live rows are the newest)
the page is cut from the two in turn, at the cost of a page from each; only when their keys
interleave are the first ``offset + limit`` rows of both read and merged.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Key = tuple


@dataclass(frozen=True)
class Sorted:
    """A source's rows under the request's filters, in key order."""

    total: int
    fetch: Callable[[int, int], list[dict]]  # (limit, offset) -> rows
    first: Callable[[], Key]  # the first row's key (only asked when total > 0)
    last: Callable[[], Key]


def rows_of(items: list[dict], key: Callable[[dict], Key]) -> Sorted:
    """A source held in memory (``items`` already sorted by ``key``)."""
    return Sorted(
        len(items),
        lambda limit, offset: items[offset : offset + limit],
        lambda: key(items[0]),
        lambda: key(items[-1]),
    )


def merged_page(
    a: Sorted, b: Sorted, key: Callable[[dict], Key], limit: int, offset: int
) -> tuple[int, list[dict]]:
    """The total of both and the page at ``offset``."""
    total = a.total + b.total
    if offset >= total:
        return total, []
    if b.total == 0:
        return total, a.fetch(limit, offset)
    if a.total == 0:
        return total, b.fetch(limit, offset)
    if b.last() < a.first():
        return total, _in_turn(b, a, limit, offset)
    if a.last() < b.first():
        return total, _in_turn(a, b, limit, offset)
    n = offset + limit
    merged = heapq.merge(a.fetch(n, 0), b.fetch(n, 0), key=key)
    return total, list(itertools.islice(merged, offset, n))


def _in_turn(first: Sorted, second: Sorted, limit: int, offset: int) -> list[dict]:
    rows = first.fetch(limit, offset) if offset < first.total else []
    if len(rows) < limit:
        rows += second.fetch(limit - len(rows), max(0, offset - first.total))
    return rows


def marked(rows: list[dict], live: bool) -> list[dict[str, Any]]:
    for row in rows:
        row["live"] = live
    return rows
