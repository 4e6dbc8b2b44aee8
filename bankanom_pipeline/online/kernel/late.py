"""Late events (docs/online.md, "How features are computed"): an event before the high-water mark, by at most
the lateness allowed, is read from the events before its place in the order (read.py) and then written to
the ring at the next ``seq`` and spliced into each of its lists at its place (the lists are doubly linked;
a list is in ``(ts, rank)`` order, the ring in arrival order). A running window counts the late event
unless it falls before the predecessor of the window's first event (which had left the window): one that
falls between them is counted and, if it is before the window's bound, taken out again by the next
advance, which every reading of the aggregates does first. Each kind's splice is a function of its own,
compiled into ``late`` (``inline="always"``).
"""

from __future__ import annotations

import math

import numpy as np

from bankanom_pipeline.online.kernel.formulas import better
from bankanom_pipeline.online.kernel.jit import jit
from bankanom_pipeline.online.kernel.lists import after, inc, insert, joins, key, whole, write_row
from bankanom_pipeline.online.kernel.read import read_before
from bankanom_pipeline.online.layout import (
    B_CTRY,
    B_FAIL,
    B_IP,
    B_LVL,
    B_NET,
    B_QUIET,
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
    F_BYT,
    F_G,
    F_LAT,
    F_REC,
    F_RT,
    F_X,
    G_ALL_LO,
    G_ALL_N,
    G_ALL_TAIL,
    G_LATENESS,
    G_MASK,
    G_NEW_IP,
    G_NEW_SERVICE,
    G_NEW_USER,
    G_NEXT,
    G_Q_LO,
    G_Q_N,
    G_Q_TAIL,
    G_RECLAIM,
    GAUGE_IS_MIN,
    I_DU,
    I_E,
    I_F,
    I_LO,
    I_N,
    I_TAIL,
    L_ALL,
    L_AMT,
    L_IP,
    L_NET,
    L_QC,
    L_QUIET,
    L_SES,
    L_SVC,
    L_TPL,
    L_USER,
    N_DI,
    N_DU,
    N_F,
    N_LO,
    N_TAIL,
    P_IU,
    P_NIP,
    P_NU,
    P_SIP,
    P_UC24,
    P_UC60,
    P_UIP24,
    P_UIP60,
    P_VIP,
    S_DIP,
    S_LO,
    S_TAIL,
    U_ALO,
    U_AN,
    U_ATAIL,
    U_DC60,
    U_DIP60,
    U_F10,
    U_FR10,
    U_FR30,
    U_LO10,
    U_LO24,
    U_LO30,
    U_LO60,
    U_LOC,
    U_N10,
    U_N24,
    U_TAIL,
    U_V60,
    UF_B30,
    UF_R10,
    V_DIP,
    V_ERR,
    V_LO1,
    V_LO24,
    V_N1,
    V_N24,
    V_NRT,
    V_TAIL,
    V_WARN,
    V_XN,
)


@jit(inline="always")
def _counts(B, i, G, R, RT, mask, T, Q, CL, s, t, rank, reclaim):
    tpl, ctry = B[i, B_TPL], B[i, B_CTRY]
    q = insert(R, RT, mask, G[G_ALL_TAIL], L_ALL, s, t, rank, reclaim)
    if q == -1:
        G[G_ALL_TAIL] = s
    c, lo = joins(R, RT, mask, G[G_ALL_LO], q, s, t, rank)
    G[G_ALL_LO] = lo
    G[G_ALL_N] += c
    q = insert(R, RT, mask, T[tpl, C_TAIL], L_TPL, s, t, rank, reclaim)
    if q == -1:
        T[tpl, C_TAIL] = s
    c, lo = joins(R, RT, mask, T[tpl, C_LO], q, s, t, rank)
    T[tpl, C_LO] = lo
    T[tpl, C_N] += c
    if B[i, B_QUIET]:
        q = insert(R, RT, mask, G[G_Q_TAIL], L_QUIET, s, t, rank, reclaim)
        if q == -1:
            G[G_Q_TAIL] = s
        c, lo = joins(R, RT, mask, G[G_Q_LO], q, s, t, rank)
        G[G_Q_LO] = lo
        G[G_Q_N] += c
        q = insert(R, RT, mask, Q[ctry, C_TAIL], L_QC, s, t, rank, reclaim)
        if q == -1:
            Q[ctry, C_TAIL] = s
        c, lo = joins(R, RT, mask, Q[ctry, C_LO], q, s, t, rank)
        Q[ctry, C_LO] = lo
        Q[ctry, C_N] += c
    if ctry >= 0:
        CL[ctry] = s  # the largest seq naming it


@jit(inline="always")
def _user(B, BF, i, G, R, RT, mask, U, UF, S, pairs, s, t, rank, reclaim):
    ctry, u, ip, ses = B[i, B_CTRY], B[i, B_USER], B[i, B_IP], B[i, B_SES]
    failed = B[i, B_FAIL]
    vpn = B[i, B_VPN]
    if U[u, U_TAIL] == -1:
        G[G_NEW_USER] += 1
    q = insert(R, RT, mask, U[u, U_TAIL], L_USER, s, t, rank, reclaim)
    if q == -1:
        U[u, U_TAIL] = s
    rec = BF[i, F_REC]
    byt = BF[i, F_BYT]
    c, lo = joins(R, RT, mask, U[u, U_LO10], q, s, t, rank)
    U[u, U_LO10] = lo
    if c:
        U[u, U_N10] += 1
        U[u, U_F10] += failed
        UF[u, UF_R10] += rec
        if not whole(rec):
            U[u, U_FR10] += 1
    c, lo = joins(R, RT, mask, U[u, U_LO30], q, s, t, rank)
    U[u, U_LO30] = lo
    if c:
        UF[u, UF_B30] += byt
        if not whole(byt):
            U[u, U_FR30] += 1
    c, lo = joins(R, RT, mask, U[u, U_LO60], q, s, t, rank)
    U[u, U_LO60] = lo
    if c:
        U[u, U_V60] += vpn
        if ip >= 0 and inc(pairs, key(P_UIP60, u, ip)) == 1:
            U[u, U_DIP60] += 1
        if ctry >= 0 and inc(pairs, key(P_UC60, u, ctry)) == 1:
            U[u, U_DC60] += 1
    c, lo = joins(R, RT, mask, U[u, U_LO24], q, s, t, rank)
    U[u, U_LO24] = lo
    if c:
        U[u, U_N24] += 1
        inc(pairs, key(P_UIP24, u, ip))
        inc(pairs, key(P_UC24, u, ctry))
    if not math.isnan(BF[i, F_LAT]):
        j = U[u, U_LOC]
        if j < reclaim or not after(R, RT, mask, j, t, rank):
            U[u, U_LOC] = s
    if not math.isnan(BF[i, F_X]):
        q = insert(R, RT, mask, U[u, U_ATAIL], L_AMT, s, t, rank, reclaim)
        if q == -1:
            U[u, U_ATAIL] = s
        c, lo = joins(R, RT, mask, U[u, U_ALO], q, s, t, rank)
        U[u, U_ALO] = lo
        U[u, U_AN] += c
    if ses >= 0:
        q = insert(R, RT, mask, S[ses, S_TAIL], L_SES, s, t, rank, reclaim)
        if q == -1:
            S[ses, S_TAIL] = s
        c, lo = joins(R, RT, mask, S[ses, S_LO], q, s, t, rank)
        S[ses, S_LO] = lo
        if c and ip >= 0 and inc(pairs, key(P_SIP, ses, ip)) == 1:
            S[ses, S_DIP] += 1


@jit(inline="always")
def _address(B, i, G, R, RT, mask, A, N, pairs, s, t, rank, reclaim):
    user, ip, net = B[i, B_USER], B[i, B_IP], B[i, B_NET]
    failed = B[i, B_FAIL]
    if A[ip, I_TAIL] == -1:
        G[G_NEW_IP] += 1
    q = insert(R, RT, mask, A[ip, I_TAIL], L_IP, s, t, rank, reclaim)
    if q == -1:
        A[ip, I_TAIL] = s
    c, lo = joins(R, RT, mask, A[ip, I_LO], q, s, t, rank)
    A[ip, I_LO] = lo
    if c:
        A[ip, I_N] += 1
        A[ip, I_F] += failed
        A[ip, I_E] += 1 if B[i, B_LVL] >= 3 else 0
        if user >= 0 and inc(pairs, key(P_IU, ip, user)) == 1:
            A[ip, I_DU] += 1
    q = insert(R, RT, mask, N[net, N_TAIL], L_NET, s, t, rank, reclaim)
    if q == -1:
        N[net, N_TAIL] = s
    c, lo = joins(R, RT, mask, N[net, N_LO], q, s, t, rank)
    N[net, N_LO] = lo
    if c:
        N[net, N_F] += failed
        if user >= 0 and inc(pairs, key(P_NU, net, user)) == 1:
            N[net, N_DU] += 1
        if inc(pairs, key(P_NIP, net, ip)) == 1:
            N[net, N_DI] += 1


@jit(inline="always")
def _service(B, BF, i, G, R, RT, mask, V, VX, VR, pairs, s, t, rank, reclaim):
    ip, svc = B[i, B_IP], B[i, B_SVC]
    level = B[i, B_LVL]
    if V[svc, V_TAIL] == -1:
        G[G_NEW_SERVICE] += 1
    q = insert(R, RT, mask, V[svc, V_TAIL], L_SVC, s, t, rank, reclaim)
    if q == -1:
        V[svc, V_TAIL] = s
    c, lo = joins(R, RT, mask, V[svc, V_LO24], q, s, t, rank)
    V[svc, V_LO24] = lo
    V[svc, V_N24] += c
    c, lo = joins(R, RT, mask, V[svc, V_LO1], q, s, t, rank)
    V[svc, V_LO1] = lo
    if c:
        V[svc, V_N1] += 1
        V[svc, V_ERR] += 1 if level >= 3 else 0
        V[svc, V_WARN] += 1 if level == 2 else 0
        if ip >= 0 and inc(pairs, key(P_VIP, svc, ip)) == 1:
            V[svc, V_DIP] += 1
        rt = BF[i, F_RT]
        if not math.isnan(rt):
            nrt = V[svc, V_NRT]
            jr = np.searchsorted(VR[svc, :nrt], rt, side="right")
            for k in range(nrt, jr, -1):
                VR[svc, k] = VR[svc, k - 1]
            VR[svc, jr] = rt
            V[svc, V_NRT] = nrt + 1
        for k in range(6):
            v = BF[i, F_G + k]
            current = VX[svc, k]
            if not math.isnan(v):
                if better(v, current, GAUGE_IS_MIN[k]):
                    VX[svc, k] = v
                    V[svc, V_XN + k] = 1
                elif v == current:
                    V[svc, V_XN + k] += 1


@jit
def late(B, BF, i, o, G, R, RT, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs):
    """Row ``i``, before the high-water mark: its features (``read_before``), then the event written to
    the ring at the next ``seq``, spliced into its lists and counted into the running windows that hold
    it."""
    read_before(B, BF, i, o, G, R, RT, RF, T, Q, U, S, A, N, V)
    mask = G[G_MASK]
    reclaim = G[G_RECLAIM]
    s = G[G_NEXT]
    t = B[i, B_TS]
    rank = B[i, B_RANK]
    write_row(B, BF, i, R, RT, RF, mask, s)
    _counts(B, i, G, R, RT, mask, T, Q, CL, s, t, rank, reclaim)
    if B[i, B_USER] >= 0:
        _user(B, BF, i, G, R, RT, mask, U, UF, S, pairs, s, t, rank, reclaim)
    if B[i, B_IP] >= 0:
        _address(B, i, G, R, RT, mask, A, N, pairs, s, t, rank, reclaim)
    _service(B, BF, i, G, R, RT, mask, V, VX, VR, pairs, s, t, rank, reclaim)


@jit
def ties(G, RT, wanted):
    """The ``seq``s of the events in the ring whose time is in ``wanted`` (sorted): those a late row of
    the same microsecond is ordered against, by id (the caller ranks their ids with the batch's). Walks
    back from the newest event; an event more than the lateness allowed older than the earliest wanted
    time ends the walk (every earlier event is older than the high-water mark at its arrival)."""
    mask = G[G_MASK]
    stop = wanted[0] - G[G_LATENESS]
    found = np.zeros(0, dtype=np.int64)
    n = 0
    j = G[G_NEXT] - 1
    while j >= G[G_RECLAIM]:
        tj = RT[j & mask]
        if tj < stop:
            break
        k = np.searchsorted(wanted, tj)
        if k < len(wanted) and wanted[k] == tj:
            if n == len(found):
                grown = np.empty(max(16, 2 * n), dtype=np.int64)
                grown[:n] = found[:n]
                found = grown
            found[n] = j
            n += 1
        j -= 1
    return found[:n].copy()
