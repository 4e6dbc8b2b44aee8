"""Reading an event's features from the events before its place in the order, without writing the state
(docs/online.md, "The kernel"): a late event's (before it is spliced in, late.py) and a peek's (``peek``:
any event, against the state as it is). Each window is walked along its entity's list up to the event's
place and summed, counted and collected afresh in the order the running aggregates would hold it (oldest
first), so the values equal the in-order step's. Each entity's read is a function of its own, compiled
into its caller (``inline="always"``).
"""

from __future__ import annotations

import math

import numpy as np

from bankanom_pipeline.online.kernel.formulas import amount_z, better, clock, p95, travel
from bankanom_pipeline.online.kernel.jit import jit
from bankanom_pipeline.online.kernel.lists import count_before, first_from, leaving, nxt, place
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
    B_VALID,
    B_VPN,
    C_LO,
    C_N,
    C_TAIL,
    DAY,
    F_BYT,
    F_G,
    F_LAT,
    F_LON,
    F_REC,
    F_RT,
    F_X,
    G_ALL_LO,
    G_ALL_N,
    G_ALL_TAIL,
    G_HAS_HWM,
    G_HWM_RANK,
    G_HWM_TS,
    G_LATENESS,
    G_MASK,
    G_Q_LO,
    G_Q_N,
    G_Q_TAIL,
    G_RECLAIM,
    GAUGE_DEFAULTS,
    GAUGE_IS_MIN,
    H1,
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
    M10,
    M30,
    MIN,
    N_TAIL,
    NL,
    R_CTRY,
    R_FAIL,
    R_IP,
    R_LVL,
    R_USER,
    R_VPN,
    S_TAIL,
    ST_INGESTED,
    ST_INVALID,
    ST_LATE,
    ST_TOO_LATE,
    U_ALO,
    U_ATAIL,
    U_LO24,
    U_TAIL,
    V_LO1,
    V_LO24,
    V_N1,
    V_N24,
    V_TAIL,
    X_IP,
    X_QUIET,
    X_SVC,
    X_TPL,
    X_USER,
)


@jit(inline="always")
def _counts(B, i, o, G, R, RT, mask, T, Q, t, rank, b24, reclaim):
    """Template rarity and the rare quiet country, from the counted windows."""
    tpl, ctry = B[i, B_TPL], B[i, B_CTRY]
    n_all = count_before(R, RT, mask, G[G_ALL_LO], G[G_ALL_N], G[G_ALL_TAIL], L_ALL, b24, t, rank, reclaim)[0]
    n_tpl = count_before(
        R, RT, mask, T[tpl, C_LO], T[tpl, C_N], T[tpl, C_TAIL], L_TPL, b24, t, rank, reclaim
    )[0]
    o[X_TPL] = -math.log((n_tpl + 1) / (n_all + 1))
    if B[i, B_QUIET]:
        n_quiet = count_before(R, RT, mask, G[G_Q_LO], G[G_Q_N], G[G_Q_TAIL], L_QUIET, b24, t, rank, reclaim)[
            0
        ]
        n_country = count_before(
            R, RT, mask, Q[ctry, C_LO], Q[ctry, C_N], Q[ctry, C_TAIL], L_QC, b24, t, rank, reclaim
        )[0]
        o[X_QUIET] = max(math.log(0.01 / ((n_country + 1) / (n_quiet + 1))), 0.0)
    else:
        o[X_QUIET] = 0.0


@jit(inline="always")
def _user(B, BF, i, o, R, RT, RF, mask, U, S, t, rank, b24, reclaim):
    """The user's windows, its session's addresses, its amount and travel: its last 24 h before the
    event, oldest first."""
    ctry, u, ip, ses = B[i, B_CTRY], B[i, B_USER], B[i, B_IP], B[i, B_SES]
    b10, b30, b60 = t - M10, t - M30, t - H1
    n10 = f10 = v60 = n24 = same_ip = same_country = 0
    r10 = 0.0
    r30 = 0.0
    ips = set()
    countries = set()
    if ip >= 0:
        ips.add(ip)
    if ctry >= 0:
        countries.add(ctry)
    p = place(R, RT, mask, U[u, U_TAIL], L_USER, t, rank, reclaim)[0]
    j = first_from(R, RT, mask, U[u, U_LO24], U[u, U_TAIL], p, L_USER, b24, reclaim)
    loc = -1
    while j != -1:
        r = j & mask
        tj = RT[r]
        n24 += 1
        same_ip += R[r, R_IP] == ip
        same_country += R[r, R_CTRY] == ctry
        if not math.isnan(RF[r, F_LAT]):
            loc = j
        if tj >= b60:
            v60 += R[r, R_VPN]
            if R[r, R_IP] >= 0:
                ips.add(R[r, R_IP])
            if R[r, R_CTRY] >= 0:
                countries.add(R[r, R_CTRY])
        if tj >= b30:
            r30 += RF[r, F_BYT]
        if tj >= b10:
            n10 += 1
            f10 += R[r, R_FAIL]
            r10 += RF[r, F_REC]
        if j == p:
            break
        j = nxt(R, mask, j, L_USER)
    o[X_USER] = float(n10 + 1)
    o[X_USER + 1] = float(f10 + B[i, B_FAIL])
    o[X_USER + 2] = float(len(ips))
    o[X_USER + 3] = float(len(countries))
    o[X_USER + 4] = float(v60 + B[i, B_VPN])
    o[X_USER + 5] = r10 + BF[i, F_REC]
    o[X_USER + 6] = r30 + BF[i, F_BYT]
    o[X_USER + 7] = (same_country + 1) / (n24 + 1)
    o[X_USER + 8] = (same_ip + 1) / (n24 + 1)
    if ses < 0:
        o[X_USER + 9] = 0.0
    else:
        sips = set()
        if ip >= 0:
            sips.add(ip)
        j = place(R, RT, mask, S[ses, S_TAIL], L_SES, t, rank, reclaim)[0]
        while j >= reclaim and RT[j & mask] >= b24:
            if R[j & mask, R_IP] >= 0:
                sips.add(R[j & mask, R_IP])
            j = nxt(R, mask, j, L_SES + NL)
        o[X_USER + 9] = float(len(sips))
    x = BF[i, F_X]
    z = 0.0
    if not math.isnan(x):
        n = 0
        sx = 0.0
        sxx = 0.0
        p = place(R, RT, mask, U[u, U_ATAIL], L_AMT, t, rank, reclaim)[0]
        j = first_from(R, RT, mask, U[u, U_ALO], U[u, U_ATAIL], p, L_AMT, b24, reclaim)
        while j != -1:
            v = RF[j & mask, F_X]
            sx += v
            sxx += v * v
            n += 1
            if j == p:
                break
            j = nxt(R, mask, j, L_AMT)
        if n >= 3:
            z = amount_z(x, n, sx, sxx)
    o[X_USER + 10] = z
    km = 0.0
    speed = 0.0
    lat = BF[i, F_LAT]
    if not math.isnan(lat) and loc != -1:
        km, speed = travel(lat, BF[i, F_LON], RF[loc & mask, F_LAT], RF[loc & mask, F_LON], t, RT[loc & mask])
    o[X_USER + 11] = km
    o[X_USER + 12] = speed


@jit(inline="always")
def _address(B, i, o, R, RT, mask, A, N, t, rank, reclaim):
    """The address's and its network's last 10 minutes before the event."""
    user, ip, net = B[i, B_USER], B[i, B_IP], B[i, B_NET]
    failed = B[i, B_FAIL]
    b10 = t - M10
    n = f = e = 0
    users = set()
    if user >= 0:
        users.add(user)
    j = place(R, RT, mask, A[ip, I_TAIL], L_IP, t, rank, reclaim)[0]
    while j >= reclaim and RT[j & mask] >= b10:
        r = j & mask
        n += 1
        f += R[r, R_FAIL]
        e += 1 if R[r, R_LVL] >= 3 else 0
        if R[r, R_USER] >= 0:
            users.add(R[r, R_USER])
        j = nxt(R, mask, j, L_IP + NL)
    o[X_IP] = float(n + 1)
    o[X_IP + 1] = float(len(users))
    o[X_IP + 2] = float(f + failed)
    o[X_IP + 3] = float(e + (1 if B[i, B_LVL] >= 3 else 0))
    f = 0
    nusers = set()
    if user >= 0:
        nusers.add(user)
    nips = set()
    nips.add(ip)
    j = place(R, RT, mask, N[net, N_TAIL], L_NET, t, rank, reclaim)[0]
    while j >= reclaim and RT[j & mask] >= b10:
        r = j & mask
        f += R[r, R_FAIL]
        if R[r, R_USER] >= 0:
            nusers.add(R[r, R_USER])
        nips.add(R[r, R_IP])
        j = nxt(R, mask, j, L_NET + NL)
    o[X_IP + 4] = float(len(nusers))
    o[X_IP + 5] = float(len(nips))
    o[X_IP + 6] = float(f + failed)


@jit(inline="always")
def _service(B, BF, i, o, R, RT, RF, mask, V, t, rank, b24, reclaim):
    """The service's 24 h count from the running one; its minute walked, oldest first (the order the
    running extremes see)."""
    ip, svc = B[i, B_IP], B[i, B_SVC]
    level = B[i, B_LVL]
    n24, first_j = count_before(
        R, RT, mask, V[svc, V_LO24], V[svc, V_N24], V[svc, V_TAIL], L_SVC, b24, t, rank, reclaim
    )
    n24 += 1
    first = RT[first_j & mask] if first_j != -1 else t
    p = place(R, RT, mask, V[svc, V_TAIL], L_SVC, t, rank, reclaim)[0]
    b1 = t - MIN
    if p == V[svc, V_TAIL] and V[svc, V_LO1] != -1:
        # in order: from the running minute's start (its count holds every event from there)
        gone, lo = leaving(R, RT, mask, V[svc, V_LO1], L_SVC, b1)
        n1 = V[svc, V_N1] - gone + 1
    else:
        n1 = 1
        j = p
        lo = -1
        while j >= reclaim and RT[j & mask] >= b1:
            n1 += 1
            lo = j
            j = nxt(R, mask, j, L_SVC + NL)
    errors = 1 if level >= 3 else 0
    warns = 1 if level == 2 else 0
    vips = set()
    if ip >= 0:
        vips.add(ip)
    rt = BF[i, F_RT]
    rts = np.empty(n1)
    nrt = 0
    if not math.isnan(rt):
        rts[0] = rt
        nrt = 1
    best = np.empty(6)
    for k in range(6):
        best[k] = BF[i, F_G + k]
    j = lo
    while j != -1:
        r = j & mask
        lv = R[r, R_LVL]
        errors += 1 if lv >= 3 else 0
        warns += 1 if lv == 2 else 0
        if R[r, R_IP] >= 0:
            vips.add(R[r, R_IP])
        v = RF[r, F_RT]
        if not math.isnan(v):
            rts[nrt] = v
            nrt += 1
        for k in range(6):
            v = RF[r, F_G + k]
            if not math.isnan(v) and better(v, best[k], GAUGE_IS_MIN[k]):
                best[k] = v
        if j == p:
            break
        j = nxt(R, mask, j, L_SVC)
    minutes = max((t - first) / 1e6 / 60.0, 1.0)
    o[X_SVC] = n1 / (n24 / minutes)
    o[X_SVC + 1] = errors / n1
    o[X_SVC + 2] = warns / n1
    o[X_SVC + 3] = float(len(vips))
    o[X_SVC + 4] = 0.0 if nrt == 0 else p95(np.sort(rts[:nrt]), nrt)
    for k in range(6):
        o[X_SVC + 5 + k] = GAUGE_DEFAULTS[k] if math.isnan(best[k]) else best[k]


@jit
def read_before(B, BF, i, o, G, R, RT, RF, T, Q, U, S, A, N, V):
    """The features of row ``i`` from the events before it in the order (at most the lateness allowed
    before the newest, or after it): the Python engine's slices, compiled. Nothing is written but ``o``."""
    mask = G[G_MASK]
    reclaim = G[G_RECLAIM]
    t = B[i, B_TS]
    rank = B[i, B_RANK]
    clock(o, t, B[i, B_LVL])
    b24 = t - DAY
    _counts(B, i, o, G, R, RT, mask, T, Q, t, rank, b24, reclaim)
    if B[i, B_USER] < 0:
        o[X_USER : X_USER + 7] = 0.0
        o[X_USER + 7] = 1.0
        o[X_USER + 8] = 1.0
        o[X_USER + 9 : X_USER + 13] = 0.0
    else:
        _user(B, BF, i, o, R, RT, RF, mask, U, S, t, rank, b24, reclaim)
    if B[i, B_IP] < 0:
        o[X_IP : X_IP + 7] = 0.0
    else:
        _address(B, i, o, R, RT, mask, A, N, t, rank, reclaim)
    _service(B, BF, i, o, R, RT, RF, mask, V, t, rank, b24, reclaim)


@jit
def peek(B, BF, out, status, G, R, RT, RF, T, Q, U, S, A, N, V):
    """The features each row would get if it were ingested now, each against the state as it is (rows
    do not see each other); nothing is written. Status as ``run`` would give it, except that duplicates
    are not looked for (an event at the high-water mark's own place reads as late)."""
    for i in range(B.shape[0]):
        if B[i, B_VALID] == 0:
            status[i] = ST_INVALID
            continue
        t = B[i, B_TS]
        rank = B[i, B_RANK]
        if G[G_HAS_HWM] and (t < G[G_HWM_TS] or (t == G[G_HWM_TS] and rank <= G[G_HWM_RANK])):
            if t < G[G_HWM_TS] - G[G_LATENESS]:
                status[i] = ST_TOO_LATE
                continue
            status[i] = ST_LATE
        else:
            status[i] = ST_INGESTED
        read_before(B, BF, i, out[i], G, R, RT, RF, T, Q, U, S, A, N, V)
