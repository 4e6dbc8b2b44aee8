"""The ring's lists and the running windows on them (docs/online.md, "State"): each entity's events are a
doubly linked list through the ring in ``(ts, event_id)`` order (per kind of list, the ``seq`` of the
next event at ``link`` and of the previous at ``link + NL``); a window is a start ``lo`` on a list and
running aggregates. The distinct counters are one typed dict from ``(counter, entity, value)``.
"""

from __future__ import annotations

import math

from bankanom_pipeline.online.kernel.jit import jit
from bankanom_pipeline.online.layout import (
    B_CTRY,
    B_FAIL,
    B_IP,
    B_LVL,
    B_NET,
    B_RANK,
    B_SES,
    B_SVC,
    B_TPL,
    B_TS,
    B_USER,
    B_VPN,
    C_LO,
    C_N,
    C_TAIL,
    G_Q_LO,
    G_Q_N,
    ID_BITS,
    L_QUIET,
    L_TPL,
    NF,
    NL,
    NR,
    R_CTRY,
    R_FAIL,
    R_IP,
    R_LVL,
    R_NET,
    R_RANK,
    R_SES,
    R_SVC,
    R_TPL,
    R_USER,
    R_VPN,
)


@jit(inline="always")
def key(code, entity, value):
    return (code << 56) | (entity << ID_BITS) | (value + 1)


@jit(inline="always")
def inc(pairs, k):
    c = pairs.get(k, 0) + 1
    pairs[k] = c
    return c


@jit(inline="always")
def dec(pairs, k):
    c = pairs[k] - 1
    if c == 0:
        pairs.pop(k)
    else:
        pairs[k] = c
    return c


@jit(inline="always")
def whole(v):
    return v == math.floor(v)


# A link is kept as the offset from its event's ``seq`` to the ``seq`` it names (0: none), in int32: the
# events of one list that link to each other are both in the ring when the link is written, so they are
# less than its capacity apart (at most 2**30, ``compiled.MAX_CAPACITY``), and an offset stays valid when
# the ring grows and in a checkpoint (no rebasing of sequence numbers).


@jit(inline="always")
def nxt(R, mask, j, col):
    """The ``seq`` that event ``j``'s link ``col`` names (-1: none)."""
    d = R[j & mask, col]
    return -1 if d == 0 else j + d


@jit(inline="always")
def set_link(R, mask, j, col, target):
    """Event ``j``'s link ``col`` set to name ``target`` (-1: none)."""
    R[j & mask, col] = 0 if target == -1 else target - j


@jit
def link(R, mask, tail, link_, s):
    """Event ``s`` appended after ``tail`` (-1: the list was empty) on the list ``link_``."""
    if tail >= 0:
        set_link(R, mask, tail, link_, s)
    set_link(R, mask, s, link_ + NL, tail)


@jit
def walk_sum(R, RF, mask, lo, link_, col):
    """The values of ``col`` along a list from ``lo`` to its end, summed oldest first (as ``sum()`` over
    the Python engine's slice)."""
    s = 0.0
    while lo != -1:
        s += RF[lo & mask, col]
        lo = nxt(R, mask, lo, link_)
    return s


@jit
def leaving(R, RT, mask, lo, link_, bound):
    """How many events from ``lo`` along a list are before ``bound`` (what an advance would remove), and
    the first one that is not."""
    n = 0
    while lo != -1 and RT[lo & mask] < bound:
        n += 1
        lo = nxt(R, mask, lo, link_)
    return n, lo


@jit
def advance_count(R, RT, mask, C, e, link_, bound):
    """A counted window (template, quiet country) of entity ``e`` advanced to start at ``bound``."""
    gone, lo = leaving(R, RT, mask, C[e, C_LO], link_, bound)
    C[e, C_N] -= gone
    C[e, C_LO] = lo


@jit
def append_count(R, mask, C, e, link_, s):
    link(R, mask, C[e, C_TAIL], link_, s)
    C[e, C_TAIL] = s
    if C[e, C_LO] == -1:
        C[e, C_LO] = s
    C[e, C_N] += 1


@jit
def advance_quiet(R, RT, mask, G, bound):
    """The global list of quiet events advanced to start at ``bound``."""
    lo = G[G_Q_LO]
    while lo != -1 and RT[lo & mask] < bound:
        G[G_Q_N] -= 1
        lo = nxt(R, mask, lo, L_QUIET)
    G[G_Q_LO] = lo


# -- an event's place in a list, for late events and reads before the newest event


@jit(inline="always")
def after(R, RT, mask, j, t, rank):
    """Whether event ``j`` comes after ``(t, rank)`` in the order (an equal id is not before, as the
    Python engine's ``upper``); ranks of one microsecond's events are comparable within a batch."""
    tj = RT[j & mask]
    return tj > t or (tj == t and R[j & mask, R_RANK] >= rank)


@jit
def place(R, RT, mask, tail, link_, t, rank, reclaim):
    """``(p, q)``: the list's last event before ``(t, rank)`` and its first after (-1: none), walking
    back from the tail over the events after it (at most the lateness allowed of them)."""
    q = -1
    j = tail
    while j >= reclaim and after(R, RT, mask, j, t, rank):
        q = j
        j = nxt(R, mask, j, link_ + NL)
    if j < reclaim:
        j = -1
    return j, q


@jit
def start(R, RT, mask, p, link_, bound, reclaim):
    """The earliest event at or after ``bound`` walking back from ``p`` (-1: none)."""
    first = -1
    j = p
    while j >= reclaim and RT[j & mask] >= bound:
        first = j
        j = nxt(R, mask, j, link_ + NL)
    return first


@jit(inline="always")
def first_from(R, RT, mask, lo, tail, p, link_, bound, reclaim):
    """The first event at or after ``bound`` on a list, up to ``p`` (-1: none). When ``p`` is the list's
    tail (every in-order event's place), forwards from the running window's start ``lo`` over the few
    events that have left the window since it was last advanced (``lo`` is never after that first event:
    the window's bound was at most ``bound``, and a late event spliced in only moves ``lo`` back); else
    walking back from ``p``."""
    if p == tail and lo != -1:
        return leaving(R, RT, mask, lo, link_, bound)[1]
    return start(R, RT, mask, p, link_, bound, reclaim)


@jit
def count_before(R, RT, mask, lo, n, tail, link_, bound, t, rank, reclaim):
    """How many events of a counted window's list (start ``lo``, ``n`` events counted) are at or after
    ``bound`` and before ``(t, rank)``, and the first of them (-1: none): the running count, plus the
    events just before ``lo`` still at or after the bound, less those from ``lo`` before it and those
    after ``(t, rank)``. Each walk covers at most the lateness allowed of events."""
    first = lo
    j = nxt(R, mask, lo, link_ + NL) if lo != -1 else tail
    while j >= reclaim and RT[j & mask] >= bound:
        n += 1
        first = j
        j = nxt(R, mask, j, link_ + NL)
    while first != -1 and RT[first & mask] < bound:
        n -= 1
        first = nxt(R, mask, first, link_)
    j = tail
    while j >= reclaim and after(R, RT, mask, j, t, rank):
        n -= 1
        j = nxt(R, mask, j, link_ + NL)
    if first != -1 and after(R, RT, mask, first, t, rank):
        first = -1
    return n, first


@jit
def insert(R, RT, mask, tail, link_, s, t, rank, reclaim):
    """Splice event ``s`` into a list at its place; returns the event now after it (-1: it is the tail)."""
    p, q = place(R, RT, mask, tail, link_, t, rank, reclaim)
    set_link(R, mask, s, link_, q)
    set_link(R, mask, s, link_ + NL, p)
    if p != -1:
        set_link(R, mask, p, link_, s)
    if q != -1:
        set_link(R, mask, q, link_ + NL, s)
    return q


@jit
def joins(R, RT, mask, lo, q, s, t, rank):
    """Whether a running window starting at ``lo`` counts event ``s`` just spliced before ``q``, and the
    window's start after it: counted unless it falls before the predecessor of the window's first event."""
    if lo == -1:
        return q == -1, s if q == -1 else -1
    if after(R, RT, mask, lo, t, rank):
        return lo == q, s if lo == q else lo
    return True, lo


@jit(inline="always")
def write_row(B, BF, i, R, RT, RF, mask, s):
    """Row ``i``'s values written to the ring at ``seq`` ``s``, its links empty."""
    slot = s & mask
    RT[slot] = B[i, B_TS]
    R[slot, R_TPL] = B[i, B_TPL]
    R[slot, R_CTRY] = B[i, B_CTRY]
    R[slot, R_USER] = B[i, B_USER]
    R[slot, R_IP] = B[i, B_IP]
    R[slot, R_NET] = B[i, B_NET]
    R[slot, R_SES] = B[i, B_SES]
    R[slot, R_SVC] = B[i, B_SVC]
    R[slot, R_LVL] = B[i, B_LVL]
    R[slot, R_FAIL] = B[i, B_FAIL]
    R[slot, R_VPN] = B[i, B_VPN]
    R[slot, R_RANK] = B[i, B_RANK]
    for k in range(L_TPL, NR):
        R[slot, k] = 0  # no link
    for k in range(NF):
        RF[slot, k] = BF[i, k]
