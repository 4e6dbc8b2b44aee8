"""The in-order step (docs/online.md, "The kernel"): ``run`` takes a batch's events one at a time; an
event after the high-water mark has each of its entities' windows advanced to its time, its features read
from the aggregates plus its own values, and is then added: written to the ring, linked at each entity's
tail and counted into each window. Invalid rows, duplicates, late and too-late events are decided first
(late ones go to late.py). Each entity's step is a function of its own, compiled into ``run``
(``inline="always"``): the same machine code as one long loop.
"""

from __future__ import annotations

import math

import numpy as np

from bankanom_pipeline.online.kernel.formulas import amount_z, better, clock, travel
from bankanom_pipeline.online.kernel.jit import jit
from bankanom_pipeline.online.kernel.late import late
from bankanom_pipeline.online.kernel.lists import (
    advance_count,
    advance_quiet,
    append_count,
    inc,
    key,
    link,
    nxt,
    walk_sum,
    whole,
    write_row,
)
from bankanom_pipeline.online.kernel.sweep import sweep
from bankanom_pipeline.online.kernel.windows import (
    advance_ip,
    advance_net,
    advance_service,
    advance_session,
    advance_user,
)
from bankanom_pipeline.online.layout import (
    B_CTRY,
    B_DUPPREV,
    B_DUPSEQ,
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
    C_N,
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
    G_DUPLICATE,
    G_HAS_HWM,
    G_HWM_RANK,
    G_HWM_ROW,
    G_HWM_TS,
    G_INGESTED,
    G_INVALID,
    G_LATE,
    G_LATENESS,
    G_MASK,
    G_NEW_IP,
    G_NEW_SERVICE,
    G_NEW_USER,
    G_NEXT,
    G_OLDEST,
    G_Q_LO,
    G_Q_N,
    G_Q_TAIL,
    G_RETENTION,
    G_SWEPT,
    G_TOO_LATE,
    GAUGE_DEFAULTS,
    GAUGE_IS_MIN,
    H1,
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
    M10,
    M30,
    MIN,
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
    ST_DUPLICATE,
    ST_INGESTED,
    ST_INVALID,
    ST_LATE,
    ST_TOO_LATE,
    SWEEP_EVERY,
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
    X_IP,
    X_QUIET,
    X_SVC,
    X_TPL,
    X_USER,
)


@jit(inline="always")
def _duplicate(B, i, seqs, G, RT, mask):
    """A retained event with row ``i``'s id, or an accepted earlier row of the batch with it (retained:
    not expired by time, as the Python engine's ids; a late event may keep its slot after its time has
    expired)."""
    keep = G[G_HWM_TS] - G[G_RETENTION]
    d = B[i, B_DUPSEQ]
    if d >= G[G_OLDEST] and RT[d & mask] >= keep:
        return True
    p = B[i, B_DUPPREV]
    while p >= 0:
        d = seqs[p]
        if d >= G[G_OLDEST] and RT[d & mask] >= keep:
            return True
        p = B[p, B_DUPPREV]
    return False


@jit(inline="always")
def _counts(B, i, o, G, R, RT, mask, T, Q, CL, s, b24):
    """Template rarity (the template's share of the last 24 h) and the rare quiet country (24 h, quiet
    events with a country)."""
    tpl = B[i, B_TPL]
    ctry = B[i, B_CTRY]
    lo = G[G_ALL_LO]
    while lo != -1 and RT[lo & mask] < b24:
        G[G_ALL_N] -= 1
        lo = nxt(R, mask, lo, L_ALL)
    G[G_ALL_LO] = lo
    n_all = G[G_ALL_N] + 1
    link(R, mask, G[G_ALL_TAIL], L_ALL, s)
    G[G_ALL_TAIL] = s
    if lo == -1:
        G[G_ALL_LO] = s
    G[G_ALL_N] += 1
    advance_count(R, RT, mask, T, tpl, L_TPL, b24)
    o[X_TPL] = -math.log((T[tpl, C_N] + 1) / n_all)
    append_count(R, mask, T, tpl, L_TPL, s)
    if B[i, B_QUIET]:
        advance_quiet(R, RT, mask, G, b24)
        advance_count(R, RT, mask, Q, ctry, L_QC, b24)
        n_quiet = G[G_Q_N] + 1
        n_country = Q[ctry, C_N] + 1
        o[X_QUIET] = max(math.log(0.01 / (n_country / n_quiet)), 0.0)
        link(R, mask, G[G_Q_TAIL], L_QUIET, s)
        G[G_Q_TAIL] = s
        if G[G_Q_LO] == -1:
            G[G_Q_LO] = s
        G[G_Q_N] += 1
        append_count(R, mask, Q, ctry, L_QC, s)
    else:
        o[X_QUIET] = 0.0
    if ctry >= 0:
        CL[ctry] = s


@jit(inline="always")
def _user(B, BF, i, o, G, R, RT, RF, mask, U, UF, S, pairs, s, t, b24):
    """The user's windows (10 min, 30 min, 1 h, 24 h, its amounts), its session's addresses and its
    travel: advanced, read, then the event added."""
    ctry, u, ip, ses = B[i, B_CTRY], B[i, B_USER], B[i, B_IP], B[i, B_SES]
    failed = B[i, B_FAIL]
    vpn = B[i, B_VPN]
    rec = BF[i, F_REC]
    byt = BF[i, F_BYT]
    x = BF[i, F_X]
    lat = BF[i, F_LAT]
    tail = U[u, U_TAIL]
    if tail == -1:
        G[G_NEW_USER] += 1
    advance_user(R, RT, RF, mask, U, UF, pairs, u, t - M10, t - M30, t - H1, b24)
    o[X_USER] = float(U[u, U_N10] + 1)
    o[X_USER + 1] = float(U[u, U_F10] + failed)
    o[X_USER + 2] = float(U[u, U_DIP60] + (1 if ip >= 0 and pairs.get(key(P_UIP60, u, ip), 0) == 0 else 0))
    o[X_USER + 3] = float(U[u, U_DC60] + (1 if ctry >= 0 and pairs.get(key(P_UC60, u, ctry), 0) == 0 else 0))
    o[X_USER + 4] = float(U[u, U_V60] + vpn)
    # running sums only while every value in the window is whole (exact); else summed along the list
    if U[u, U_FR10] == 0:
        o[X_USER + 5] = UF[u, UF_R10] + rec
    else:
        o[X_USER + 5] = walk_sum(R, RF, mask, U[u, U_LO10], L_USER, F_REC) + rec
    if U[u, U_FR30] == 0:
        o[X_USER + 6] = UF[u, UF_B30] + byt
    else:
        o[X_USER + 6] = walk_sum(R, RF, mask, U[u, U_LO30], L_USER, F_BYT) + byt
    n24 = U[u, U_N24] + 1
    o[X_USER + 7] = (pairs.get(key(P_UC24, u, ctry), 0) + 1) / n24
    o[X_USER + 8] = (pairs.get(key(P_UIP24, u, ip), 0) + 1) / n24
    # session (24 h): distinct addresses
    if ses < 0:
        o[X_USER + 9] = 0.0
    else:
        advance_session(R, RT, mask, S, pairs, ses, b24)
        o[X_USER + 9] = float(
            S[ses, S_DIP] + (1 if ip >= 0 and pairs.get(key(P_SIP, ses, ip), 0) == 0 else 0)
        )
    # the amount against the user's earlier amounts of the last 24 h, summed oldest first
    z = 0.0
    if not math.isnan(x):
        n = U[u, U_AN]
        if n >= 3:
            sx = 0.0
            sxx = 0.0
            j = U[u, U_ALO]
            while j != -1:
                v = RF[j & mask, F_X]
                sx += v
                sxx += v * v
                j = nxt(R, mask, j, L_AMT)
            z = amount_z(x, n, sx, sxx)
    o[X_USER + 10] = z
    # travel from the latest earlier located event within 24 h
    km = 0.0
    speed = 0.0
    if not math.isnan(lat) and tail != -1:
        j = U[u, U_LOC]
        if j >= G[G_OLDEST] and RT[j & mask] >= b24:
            km, speed = travel(lat, BF[i, F_LON], RF[j & mask, F_LAT], RF[j & mask, F_LON], t, RT[j & mask])
    o[X_USER + 11] = km
    o[X_USER + 12] = speed
    # add the event to the user's windows
    link(R, mask, tail, L_USER, s)
    U[u, U_TAIL] = s
    for col in (U_LO10, U_LO30, U_LO60, U_LO24):
        if U[u, col] == -1:
            U[u, col] = s
    U[u, U_N10] += 1
    U[u, U_F10] += failed
    UF[u, UF_R10] += rec
    if not whole(rec):
        U[u, U_FR10] += 1
    UF[u, UF_B30] += byt
    if not whole(byt):
        U[u, U_FR30] += 1
    U[u, U_V60] += vpn
    if ip >= 0 and inc(pairs, key(P_UIP60, u, ip)) == 1:
        U[u, U_DIP60] += 1
    if ctry >= 0 and inc(pairs, key(P_UC60, u, ctry)) == 1:
        U[u, U_DC60] += 1
    U[u, U_N24] += 1
    inc(pairs, key(P_UIP24, u, ip))
    inc(pairs, key(P_UC24, u, ctry))
    if not math.isnan(lat):
        U[u, U_LOC] = s
    if not math.isnan(x):
        link(R, mask, U[u, U_ATAIL], L_AMT, s)
        U[u, U_ATAIL] = s
        if U[u, U_ALO] == -1:
            U[u, U_ALO] = s
        U[u, U_AN] += 1
    if ses >= 0:
        link(R, mask, S[ses, S_TAIL], L_SES, s)
        S[ses, S_TAIL] = s
        if S[ses, S_LO] == -1:
            S[ses, S_LO] = s
        if ip >= 0 and inc(pairs, key(P_SIP, ses, ip)) == 1:
            S[ses, S_DIP] += 1


@jit(inline="always")
def _address(B, i, o, G, R, RT, mask, A, N, pairs, s, t):
    """The address's and its network's last 10 minutes: advanced, read, then the event added."""
    user, ip, net = B[i, B_USER], B[i, B_IP], B[i, B_NET]
    failed = B[i, B_FAIL]
    error = 1 if B[i, B_LVL] >= 3 else 0
    b10 = t - M10
    if A[ip, I_TAIL] == -1:
        G[G_NEW_IP] += 1
    advance_ip(R, RT, mask, A, pairs, ip, b10)
    o[X_IP] = float(A[ip, I_N] + 1)
    o[X_IP + 1] = float(A[ip, I_DU] + (1 if user >= 0 and pairs.get(key(P_IU, ip, user), 0) == 0 else 0))
    o[X_IP + 2] = float(A[ip, I_F] + failed)
    o[X_IP + 3] = float(A[ip, I_E] + error)
    advance_net(R, RT, mask, N, pairs, net, b10)
    o[X_IP + 4] = float(N[net, N_DU] + (1 if user >= 0 and pairs.get(key(P_NU, net, user), 0) == 0 else 0))
    o[X_IP + 5] = float(N[net, N_DI] + (1 if pairs.get(key(P_NIP, net, ip), 0) == 0 else 0))
    o[X_IP + 6] = float(N[net, N_F] + failed)
    link(R, mask, A[ip, I_TAIL], L_IP, s)
    A[ip, I_TAIL] = s
    if A[ip, I_LO] == -1:
        A[ip, I_LO] = s
    A[ip, I_N] += 1
    A[ip, I_F] += failed
    A[ip, I_E] += error
    if user >= 0 and inc(pairs, key(P_IU, ip, user)) == 1:
        A[ip, I_DU] += 1
    link(R, mask, N[net, N_TAIL], L_NET, s)
    N[net, N_TAIL] = s
    if N[net, N_LO] == -1:
        N[net, N_LO] = s
    N[net, N_F] += failed
    if user >= 0 and inc(pairs, key(P_NU, net, user)) == 1:
        N[net, N_DU] += 1
    if inc(pairs, key(P_NIP, net, ip)) == 1:
        N[net, N_DI] += 1


@jit(inline="always")
def _service(B, BF, i, o, G, R, RT, RF, mask, V, VX, VR, pairs, s, t, b24):
    """The service's minute and its 24 h load: advanced, read, then the event added."""
    ip, svc = B[i, B_IP], B[i, B_SVC]
    level = B[i, B_LVL]
    error = 1 if level >= 3 else 0
    warn = 1 if level == 2 else 0
    if V[svc, V_TAIL] == -1:
        G[G_NEW_SERVICE] += 1
    advance_service(R, RT, RF, mask, V, VX, VR, pairs, svc, t - MIN, b24)
    n1 = V[svc, V_N1] + 1
    n24 = V[svc, V_N24] + 1
    lo24 = V[svc, V_LO24]
    first = RT[lo24 & mask] if lo24 != -1 else t
    minutes = max((t - first) / 1e6 / 60.0, 1.0)
    o[X_SVC] = n1 / (n24 / minutes)
    o[X_SVC + 1] = (V[svc, V_ERR] + error) / n1
    o[X_SVC + 2] = (V[svc, V_WARN] + warn) / n1
    o[X_SVC + 3] = float(V[svc, V_DIP] + (1 if ip >= 0 and pairs.get(key(P_VIP, svc, ip), 0) == 0 else 0))
    # DuckDB's quantile_cont(rt, 0.95) of the minute's times (kept sorted) and the event's own, merged
    # in by position so that the buffer is not copied
    rt = BF[i, F_RT]
    nrt = V[svc, V_NRT]
    own = not math.isnan(rt)
    n = nrt + (1 if own else 0)
    if n == 0:
        o[X_SVC + 4] = 0.0
    else:
        pos = (n - 1) * 0.95
        k_lo = math.floor(pos)
        k_hi = math.ceil(pos)
        vals = VR[svc]
        if not own:
            v_lo = vals[k_lo]
            v_hi = vals[k_hi]
            jr = 0
        else:
            jr = np.searchsorted(vals[:nrt], rt)
            v_lo = vals[k_lo] if k_lo < jr else (rt if k_lo == jr else vals[k_lo - 1])
            v_hi = vals[k_hi] if k_hi < jr else (rt if k_hi == jr else vals[k_hi - 1])
        o[X_SVC + 4] = v_lo + (pos - k_lo) * (v_hi - v_lo)
    for k in range(6):
        current = VX[svc, k]
        v = BF[i, F_G + k]
        if math.isnan(current):
            best = v
        elif math.isnan(v) or (v >= current if GAUGE_IS_MIN[k] else v <= current):
            best = current
        else:
            best = v
        o[X_SVC + 5 + k] = GAUGE_DEFAULTS[k] if math.isnan(best) else best
        if not math.isnan(v):
            if better(v, current, GAUGE_IS_MIN[k]):
                VX[svc, k] = v
                V[svc, V_XN + k] = 1
            elif v == current:
                V[svc, V_XN + k] += 1
    link(R, mask, V[svc, V_TAIL], L_SVC, s)
    V[svc, V_TAIL] = s
    if V[svc, V_LO1] == -1:
        V[svc, V_LO1] = s
    if V[svc, V_LO24] == -1:
        V[svc, V_LO24] = s
    V[svc, V_N1] += 1
    V[svc, V_N24] += 1
    V[svc, V_ERR] += error
    V[svc, V_WARN] += warn
    if ip >= 0 and inc(pairs, key(P_VIP, svc, ip)) == 1:
        V[svc, V_DIP] += 1
    if own:
        jr = np.searchsorted(VR[svc, :nrt], rt, side="right")
        for k in range(nrt, jr, -1):
            VR[svc, k] = VR[svc, k - 1]
        VR[svc, jr] = rt
        V[svc, V_NRT] = nrt + 1


@jit
def run(B, BF, out, status, seqs, G, R, RT, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs):
    """Process the batch ``B``/``BF`` (rows in the batch's order) into ``out`` (the feature vectors; the
    per-event metric columns are filled by prepare), ``status`` and ``seqs`` (each accepted row's
    ``seq``). The ring and entity arrays are large enough (the caller grows them)."""
    mask = G[G_MASK]
    for i in range(B.shape[0]):
        seqs[i] = -1
        if B[i, B_VALID] == 0:
            status[i] = ST_INVALID
            G[G_INVALID] += 1
            continue
        t = B[i, B_TS]
        rank = B[i, B_RANK]
        if _duplicate(B, i, seqs, G, RT, mask):
            status[i] = ST_DUPLICATE
            G[G_DUPLICATE] += 1
            continue
        if G[G_HAS_HWM] and (t < G[G_HWM_TS] or (t == G[G_HWM_TS] and rank < G[G_HWM_RANK])):
            if t < G[G_HWM_TS] - G[G_LATENESS]:
                status[i] = ST_TOO_LATE
                G[G_TOO_LATE] += 1
            else:
                late(B, BF, i, out[i], G, R, RT, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs)
                status[i] = ST_LATE
                seqs[i] = G[G_NEXT]
                G[G_NEXT] += 1
                G[G_LATE] += 1
            continue
        s = G[G_NEXT]
        write_row(B, BF, i, R, RT, RF, mask, s)
        o = out[i]
        clock(o, t, B[i, B_LVL])
        b24 = t - DAY
        _counts(B, i, o, G, R, RT, mask, T, Q, CL, s, b24)
        if B[i, B_USER] < 0:
            o[X_USER : X_USER + 7] = 0.0
            o[X_USER + 7] = 1.0
            o[X_USER + 8] = 1.0
            o[X_USER + 9 : X_USER + 13] = 0.0
        else:
            _user(B, BF, i, o, G, R, RT, RF, mask, U, UF, S, pairs, s, t, b24)
        if B[i, B_IP] < 0:
            o[X_IP : X_IP + 7] = 0.0
        else:
            _address(B, i, o, G, R, RT, mask, A, N, pairs, s, t)
        _service(B, BF, i, o, G, R, RT, RF, mask, V, VX, VR, pairs, s, t, b24)

        # -- accepted: the high-water mark, expiry, the hourly sweep
        status[i] = ST_INGESTED
        seqs[i] = s
        G[G_NEXT] = s + 1
        G[G_HWM_TS] = t
        G[G_HWM_RANK] = rank
        G[G_HWM_ROW] = i
        G[G_HAS_HWM] = 1
        G[G_INGESTED] += 1
        bound = t - G[G_RETENTION]
        oldest = G[G_OLDEST]
        while oldest <= s and RT[oldest & mask] < bound:
            oldest += 1
        G[G_OLDEST] = oldest
        if t - G[G_SWEPT] > SWEEP_EVERY:
            sweep(t, G, R, RT, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs)
