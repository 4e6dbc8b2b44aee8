"""The compiled engine's kernel (docs/online.md, "Compiled engine"): prepared events, strictly one at a
time in the batch's ``(ts, event_id)`` order, against state held in numpy arrays and one typed dict.

Each accepted event is a row of the ring (indexed by its sequence number ``seq``, ``slot = seq & mask``)
holding its values and, per kind of list, the ``seq`` of the same entity's next event: each entity's
events are a linked list through the ring. An entity's windows are a start ``lo`` on that list and
running aggregates; an event's features are the aggregates after the windows are advanced to its time,
plus its own values, as the Python engine's running windows give them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

MIN = 60_000_000
M10, M30, H1, DAY = 10 * MIN, 30 * MIN, 60 * MIN, 24 * 60 * MIN
SWEEP_EVERY = H1

# batch: int columns
B_TS, B_TPL, B_CTRY, B_USER, B_IP, B_NET, B_SES, B_SVC, B_LVL, B_FAIL, B_VPN, B_QUIET = range(12)
B_RANK, B_DUPSEQ, B_DUPPREV, B_VALID = 12, 13, 14, 15
NB = 16
# batch and ring: float columns (NaN: None)
F_REC, F_BYT, F_LAT, F_LON, F_X, F_RT = range(6)
F_G = 6  # the six gauges: timeout, error_rate, cache (a minimum), lag, rps, files
NF = 12
# ring: int columns (values; the rank of the event's id, valid for comparing events of the same
# microsecond within one batch; then per kind of list the link to the next event, then the one to the
# previous: L + NL)
R_TS, R_TPL, R_CTRY, R_USER, R_IP, R_NET, R_SES, R_SVC, R_LVL, R_FAIL, R_VPN, R_RANK = range(12)
L_TPL, L_QUIET, L_QC, L_USER, L_AMT, L_SES, L_IP, L_NET, L_SVC, L_ALL = range(12, 22)
NL = 10
NR = 32
# globals
G_NEXT, G_OLDEST, G_RECLAIM, G_MASK, G_HWM_TS, G_HWM_RANK, G_HAS_HWM, G_ALL_LO = range(8)
G_Q_LO, G_Q_N, G_Q_TAIL, G_LATENESS, G_RETENTION, G_SWEPT, G_HWM_ROW = range(8, 15)
G_INGESTED, G_DUPLICATE, G_TOO_LATE, G_LATE, G_INVALID, G_NEW_USER, G_NEW_SERVICE, G_NEW_IP = range(15, 23)
G_ALL_N, G_ALL_TAIL = 23, 24
NG = 25
# count windows (template, quiet country): start, count, tail
C_LO, C_N, C_TAIL = 0, 1, 2
NC = 3
# user
U_TAIL, U_LO10, U_N10, U_F10, U_FR10, U_LO30, U_FR30, U_LO60, U_V60, U_DIP60, U_DC60 = range(11)
U_LO24, U_N24, U_LOC, U_ATAIL, U_ALO, U_AN = range(11, 17)
NU = 17
UF_R10, UF_B30 = 0, 1
NUF = 2
# session
S_TAIL, S_LO, S_DIP = 0, 1, 2
NS = 3
# ip (the array A: addresses)
I_TAIL, I_LO, I_N, I_F, I_E, I_DU = range(6)
NI = 6
# network
N_TAIL, N_LO, N_DU, N_DI, N_F = range(5)
NN = 5
# service
V_TAIL, V_LO1, V_N1, V_ERR, V_WARN, V_DIP, V_LO24, V_N24, V_NRT = range(9)
V_XN = 9  # six columns: how many of the minute's values equal each extreme
NV = 15
# countries: the newest event naming one (to free it once none is retained)
# the distinct-value counters: (counter, entity, value + 1) packed into an int64
P_UIP60, P_UC60, P_UIP24, P_UC24, P_SIP, P_IU, P_NU, P_NIP, P_VIP = range(1, 10)
ID_BITS = 28
ID_LIMIT = 1 << (ID_BITS - 1)  # ids stay below this (a value + 1 fits in ID_BITS bits)

# statuses
ST_INGESTED, ST_DUPLICATE, ST_TOO_LATE, ST_LATE, ST_INVALID = 0, 1, 2, 3, 4
STATUSES = ("ingested", "duplicate", "too_late", "late", "invalid")

# feature columns (schema.FEATURES' order)
X_TPL, X_QUIET = 4, 5
X_USER = 28  # user_events_10m .. travel_speed_kmh: 13 columns
X_IP = 41  # ip_events_10m .. network_failed_logins_10m: 7 columns
X_SVC = 48  # service_events_vs_day .. service_max_files_modified: 11 columns

_TWO_PI = 2 * math.pi
_DEG = math.pi / 180.0
_IS_MIN = (False, False, True, False, False, False)
_GAUGE_DEFAULTS = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])

CACHE = True


@njit(cache=CACHE, inline="always")
def _key(code, entity, value):
    return (code << 56) | (entity << ID_BITS) | (value + 1)


@njit(cache=CACHE, inline="always")
def _inc(pairs, k):
    c = pairs.get(k, 0) + 1
    pairs[k] = c
    return c


@njit(cache=CACHE, inline="always")
def _dec(pairs, k):
    c = pairs[k] - 1
    if c == 0:
        pairs.pop(k)
    else:
        pairs[k] = c
    return c


@njit(cache=CACHE, inline="always")
def _whole(v):
    return v == math.floor(v)


@njit(cache=CACHE)
def _walk_sum(R, RF, mask, lo, link, col):
    """The values of ``col`` along a list from ``lo`` to its end, summed oldest first (as ``sum()`` over
    the Python engine's slice)."""
    s = 0.0
    while lo != -1:
        s += RF[lo & mask, col]
        lo = R[lo & mask, link]
    return s


@njit(cache=CACHE)
def _advance_count(R, mask, C, e, link, bound):
    lo = C[e, C_LO]
    while lo != -1 and R[lo & mask, R_TS] < bound:
        C[e, C_N] -= 1
        lo = R[lo & mask, link]
    C[e, C_LO] = lo


@njit(cache=CACHE)
def _append_count(R, mask, C, e, link, s):
    tail = C[e, C_TAIL]
    if tail >= 0:
        R[tail & mask, link] = s
    R[s & mask, link + NL] = tail
    C[e, C_TAIL] = s
    if C[e, C_LO] == -1:
        C[e, C_LO] = s
    C[e, C_N] += 1


@njit(cache=CACHE)
def _advance_quiet(R, mask, G, bound):
    lo = G[G_Q_LO]
    while lo != -1 and R[lo & mask, R_TS] < bound:
        G[G_Q_N] -= 1
        lo = R[lo & mask, L_QUIET]
    G[G_Q_LO] = lo


@njit(cache=CACHE)
def _advance_user(R, RF, mask, U, UF, pairs, u, t, b10, b30, b60, b24):
    """The user's windows advanced to start at b10, b30, b60, b24 and the amounts' at b24."""
    lo = U[u, U_LO10]
    left_fraction = False
    while lo != -1 and R[lo & mask, R_TS] < b10:
        r = lo & mask
        U[u, U_N10] -= 1
        U[u, U_F10] -= R[r, R_FAIL]
        v = RF[r, F_REC]
        UF[u, UF_R10] -= v
        if not _whole(v):
            U[u, U_FR10] -= 1
            left_fraction = True
        lo = R[r, L_USER]
    U[u, U_LO10] = lo
    if left_fraction and U[u, U_FR10] == 0:
        # whole numbers only again: restart the running sum exactly from them
        UF[u, UF_R10] = _walk_sum(R, RF, mask, lo, L_USER, F_REC)
    lo = U[u, U_LO30]
    left_fraction = False
    while lo != -1 and R[lo & mask, R_TS] < b30:
        r = lo & mask
        v = RF[r, F_BYT]
        UF[u, UF_B30] -= v
        if not _whole(v):
            U[u, U_FR30] -= 1
            left_fraction = True
        lo = R[r, L_USER]
    U[u, U_LO30] = lo
    if left_fraction and U[u, U_FR30] == 0:
        UF[u, UF_B30] = _walk_sum(R, RF, mask, lo, L_USER, F_BYT)
    lo = U[u, U_LO60]
    while lo != -1 and R[lo & mask, R_TS] < b60:
        r = lo & mask
        U[u, U_V60] -= R[r, R_VPN]
        ip = R[r, R_IP]
        if ip >= 0 and _dec(pairs, _key(P_UIP60, u, ip)) == 0:
            U[u, U_DIP60] -= 1
        c = R[r, R_CTRY]
        if c >= 0 and _dec(pairs, _key(P_UC60, u, c)) == 0:
            U[u, U_DC60] -= 1
        lo = R[r, L_USER]
    U[u, U_LO60] = lo
    lo = U[u, U_LO24]
    while lo != -1 and R[lo & mask, R_TS] < b24:
        r = lo & mask
        U[u, U_N24] -= 1
        _dec(pairs, _key(P_UIP24, u, R[r, R_IP]))
        _dec(pairs, _key(P_UC24, u, R[r, R_CTRY]))
        lo = R[r, L_USER]
    U[u, U_LO24] = lo
    lo = U[u, U_ALO]
    while lo != -1 and R[lo & mask, R_TS] < b24:
        U[u, U_AN] -= 1
        lo = R[lo & mask, L_AMT]
    U[u, U_ALO] = lo


@njit(cache=CACHE)
def _advance_session(R, mask, S, pairs, e, bound):
    lo = S[e, S_LO]
    while lo != -1 and R[lo & mask, R_TS] < bound:
        r = lo & mask
        ip = R[r, R_IP]
        if ip >= 0 and _dec(pairs, _key(P_SIP, e, ip)) == 0:
            S[e, S_DIP] -= 1
        lo = R[r, L_SES]
    S[e, S_LO] = lo


@njit(cache=CACHE)
def _advance_ip(R, mask, A, pairs, e, bound):
    lo = A[e, I_LO]
    while lo != -1 and R[lo & mask, R_TS] < bound:
        r = lo & mask
        A[e, I_N] -= 1
        A[e, I_F] -= R[r, R_FAIL]
        A[e, I_E] -= 1 if R[r, R_LVL] >= 3 else 0
        user = R[r, R_USER]
        if user >= 0 and _dec(pairs, _key(P_IU, e, user)) == 0:
            A[e, I_DU] -= 1
        lo = R[r, L_IP]
    A[e, I_LO] = lo


@njit(cache=CACHE)
def _advance_net(R, mask, N, pairs, e, bound):
    lo = N[e, N_LO]
    while lo != -1 and R[lo & mask, R_TS] < bound:
        r = lo & mask
        N[e, N_F] -= R[r, R_FAIL]
        user = R[r, R_USER]
        if user >= 0 and _dec(pairs, _key(P_NU, e, user)) == 0:
            N[e, N_DU] -= 1
        if _dec(pairs, _key(P_NIP, e, R[r, R_IP])) == 0:
            N[e, N_DI] -= 1
        lo = R[r, L_NET]
    N[e, N_LO] = lo


@njit(cache=CACHE)
def _advance_service(R, RF, mask, V, VX, VR, pairs, e, b1, b24):
    lo = V[e, V_LO1]
    stale = np.zeros(6, dtype=np.bool_)
    any_stale = False
    while lo != -1 and R[lo & mask, R_TS] < b1:
        r = lo & mask
        V[e, V_N1] -= 1
        level = R[r, R_LVL]
        if level >= 3:
            V[e, V_ERR] -= 1
        elif level == 2:
            V[e, V_WARN] -= 1
        ip = R[r, R_IP]
        if ip >= 0 and _dec(pairs, _key(P_VIP, e, ip)) == 0:
            V[e, V_DIP] -= 1
        rt = RF[r, F_RT]
        if not math.isnan(rt):
            n = V[e, V_NRT]
            j = np.searchsorted(VR[e, :n], rt)
            for k in range(j, n - 1):
                VR[e, k] = VR[e, k + 1]
            V[e, V_NRT] = n - 1
        for k in range(6):
            v = RF[r, F_G + k]
            if v == VX[e, k]:  # NaN never equals
                V[e, V_XN + k] -= 1
                if V[e, V_XN + k] == 0:
                    stale[k] = True
                    any_stale = True
        lo = R[r, L_SVC]
    V[e, V_LO1] = lo
    if any_stale:
        # the last value equal to an extreme left: recompute it (and its count) from the window
        for k in range(6):
            if stale[k]:
                best = np.nan
                count = 0
                j = lo
                while j != -1:
                    v = RF[j & mask, F_G + k]
                    if not math.isnan(v):
                        if math.isnan(best) or (v < best if _IS_MIN[k] else v > best):
                            best = v
                            count = 1
                        elif v == best:
                            count += 1
                    j = R[j & mask, L_SVC]
                VX[e, k] = best
                V[e, V_XN + k] = count
    lo = V[e, V_LO24]
    while lo != -1 and R[lo & mask, R_TS] < b24:
        V[e, V_N24] -= 1
        lo = R[lo & mask, L_SVC]
    V[e, V_LO24] = lo


@njit(cache=CACHE)
def _link(R, mask, tail, link, s):
    if tail >= 0:
        R[tail & mask, link] = s
    R[s & mask, link + NL] = tail


@njit(cache=CACHE)
def run(B, BF, out, status, seqs, G, R, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs):
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
        # -- duplicates: a retained event with this id, or an accepted earlier row of the batch
        # (retained: not expired by time, as the Python engine's ids; a late event may keep its slot
        # after its time has expired)
        keep = G[G_HWM_TS] - G[G_RETENTION]
        d = B[i, B_DUPSEQ]
        dup = d >= G[G_OLDEST] and R[d & mask, R_TS] >= keep
        p = B[i, B_DUPPREV]
        while not dup and p >= 0:
            d = seqs[p]
            if d >= G[G_OLDEST] and R[d & mask, R_TS] >= keep:
                dup = True
            p = B[p, B_DUPPREV]
        if dup:
            status[i] = ST_DUPLICATE
            G[G_DUPLICATE] += 1
            continue
        if G[G_HAS_HWM] and (t < G[G_HWM_TS] or (t == G[G_HWM_TS] and rank < G[G_HWM_RANK])):
            if t < G[G_HWM_TS] - G[G_LATENESS]:
                status[i] = ST_TOO_LATE
                G[G_TOO_LATE] += 1
            else:
                _late(B, BF, i, out[i], G, R, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs)
                status[i] = ST_LATE
                seqs[i] = G[G_NEXT]
                G[G_NEXT] += 1
                G[G_LATE] += 1
            continue
        s = G[G_NEXT]
        slot = s & mask
        tpl, ctry, user, ip, net, ses, svc = (
            B[i, B_TPL],
            B[i, B_CTRY],
            B[i, B_USER],
            B[i, B_IP],
            B[i, B_NET],
            B[i, B_SES],
            B[i, B_SVC],
        )
        level = B[i, B_LVL]
        failed = B[i, B_FAIL]
        vpn = B[i, B_VPN]
        R[slot, R_TS] = t
        R[slot, R_TPL] = tpl
        R[slot, R_CTRY] = ctry
        R[slot, R_USER] = user
        R[slot, R_IP] = ip
        R[slot, R_NET] = net
        R[slot, R_SES] = ses
        R[slot, R_SVC] = svc
        R[slot, R_LVL] = level
        R[slot, R_FAIL] = failed
        R[slot, R_VPN] = vpn
        R[slot, R_RANK] = rank
        for k in range(L_TPL, NR):
            R[slot, k] = -1
        for k in range(NF):
            RF[slot, k] = BF[i, k]
        o = out[i]

        # -- the clock
        hour = (t // 3_600_000_000) % 24 + ((t // MIN) % 60) / 60.0
        o[1] = math.sin(_TWO_PI * hour / 24)
        o[2] = math.cos(_TWO_PI * hour / 24)
        o[3] = 1.0 if (t // 86_400_000_000 + 3) % 7 + 1 >= 6 else 0.0
        o[0] = float(level)
        b24 = t - DAY

        # -- template rarity: the template's share of the last 24 h
        lo = G[G_ALL_LO]
        while lo != -1 and R[lo & mask, R_TS] < b24:
            G[G_ALL_N] -= 1
            lo = R[lo & mask, L_ALL]
        G[G_ALL_LO] = lo
        n_all = G[G_ALL_N] + 1
        _link(R, mask, G[G_ALL_TAIL], L_ALL, s)
        G[G_ALL_TAIL] = s
        if lo == -1:
            G[G_ALL_LO] = s
        G[G_ALL_N] += 1
        _advance_count(R, mask, T, tpl, L_TPL, b24)
        o[X_TPL] = -math.log((T[tpl, C_N] + 1) / n_all)
        _append_count(R, mask, T, tpl, L_TPL, s)

        # -- rare quiet country (24 h, quiet events with a country)
        if B[i, B_QUIET]:
            _advance_quiet(R, mask, G, b24)
            _advance_count(R, mask, Q, ctry, L_QC, b24)
            n_quiet = G[G_Q_N] + 1
            n_country = Q[ctry, C_N] + 1
            o[X_QUIET] = max(math.log(0.01 / (n_country / n_quiet)), 0.0)
            _link(R, mask, G[G_Q_TAIL], L_QUIET, s)
            G[G_Q_TAIL] = s
            if G[G_Q_LO] == -1:
                G[G_Q_LO] = s
            G[G_Q_N] += 1
            _append_count(R, mask, Q, ctry, L_QC, s)
        else:
            o[X_QUIET] = 0.0
        if ctry >= 0:
            CL[ctry] = s

        # -- user
        rec = BF[i, F_REC]
        byt = BF[i, F_BYT]
        x = BF[i, F_X]
        lat = BF[i, F_LAT]
        if user < 0:
            o[X_USER : X_USER + 7] = 0.0
            o[X_USER + 7] = 1.0
            o[X_USER + 8] = 1.0
            o[X_USER + 9 : X_USER + 13] = 0.0
        else:
            u = user
            tail = U[u, U_TAIL]
            if tail == -1:
                G[G_NEW_USER] += 1
            _advance_user(R, RF, mask, U, UF, pairs, u, t, t - M10, t - M30, t - H1, b24)
            o[X_USER] = float(U[u, U_N10] + 1)
            o[X_USER + 1] = float(U[u, U_F10] + failed)
            o[X_USER + 2] = float(
                U[u, U_DIP60] + (1 if ip >= 0 and pairs.get(_key(P_UIP60, u, ip), 0) == 0 else 0)
            )
            o[X_USER + 3] = float(
                U[u, U_DC60] + (1 if ctry >= 0 and pairs.get(_key(P_UC60, u, ctry), 0) == 0 else 0)
            )
            o[X_USER + 4] = float(U[u, U_V60] + vpn)
            if U[u, U_FR10] == 0:
                o[X_USER + 5] = UF[u, UF_R10] + rec
            else:
                o[X_USER + 5] = _walk_sum(R, RF, mask, U[u, U_LO10], L_USER, F_REC) + rec
            if U[u, U_FR30] == 0:
                o[X_USER + 6] = UF[u, UF_B30] + byt
            else:
                o[X_USER + 6] = _walk_sum(R, RF, mask, U[u, U_LO30], L_USER, F_BYT) + byt
            n24 = U[u, U_N24] + 1
            o[X_USER + 7] = (pairs.get(_key(P_UC24, u, ctry), 0) + 1) / n24
            o[X_USER + 8] = (pairs.get(_key(P_UIP24, u, ip), 0) + 1) / n24
            # session (24 h): distinct addresses
            if ses < 0:
                o[X_USER + 9] = 0.0
            else:
                _advance_session(R, mask, S, pairs, ses, b24)
                o[X_USER + 9] = float(
                    S[ses, S_DIP] + (1 if ip >= 0 and pairs.get(_key(P_SIP, ses, ip), 0) == 0 else 0)
                )
            # the amount against the user's earlier amounts of the last 24 h
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
                        j = R[j & mask, L_AMT]
                    sx = (sx + x) - x
                    sxx = (sxx + x * x) - x * x
                    var = (sxx - sx * sx / n) / (n - 1)
                    z = (x - sx / n) / (0.25 + math.sqrt(max(var, 0.0)))
            o[X_USER + 10] = z
            # travel from the latest earlier located event within 24 h
            km = 0.0
            speed = 0.0
            if not math.isnan(lat) and tail != -1:
                j = U[u, U_LOC]
                if j >= G[G_OLDEST] and R[j & mask, R_TS] >= b24:
                    lon = BF[i, F_LON]
                    plat = RF[j & mask, F_LAT]
                    plon = RF[j & mask, F_LON]
                    km = (
                        2
                        * 6371
                        * math.asin(
                            math.sqrt(
                                math.sin((lat - plat) * _DEG / 2) ** 2
                                + math.cos(plat * _DEG)
                                * math.cos(lat * _DEG)
                                * math.sin((lon - plon) * _DEG / 2) ** 2
                            )
                        )
                    )
                    speed = km / max((t - R[j & mask, R_TS]) / 1e6 / 3600.0, 1 / 60.0)
            o[X_USER + 11] = km
            o[X_USER + 12] = speed
            # add the event to the user's windows
            _link(R, mask, tail, L_USER, s)
            U[u, U_TAIL] = s
            for col in (U_LO10, U_LO30, U_LO60, U_LO24):
                if U[u, col] == -1:
                    U[u, col] = s
            U[u, U_N10] += 1
            U[u, U_F10] += failed
            UF[u, UF_R10] += rec
            if not _whole(rec):
                U[u, U_FR10] += 1
            UF[u, UF_B30] += byt
            if not _whole(byt):
                U[u, U_FR30] += 1
            U[u, U_V60] += vpn
            if ip >= 0 and _inc(pairs, _key(P_UIP60, u, ip)) == 1:
                U[u, U_DIP60] += 1
            if ctry >= 0 and _inc(pairs, _key(P_UC60, u, ctry)) == 1:
                U[u, U_DC60] += 1
            U[u, U_N24] += 1
            _inc(pairs, _key(P_UIP24, u, ip))
            _inc(pairs, _key(P_UC24, u, ctry))
            if not math.isnan(lat):
                U[u, U_LOC] = s
            if not math.isnan(x):
                _link(R, mask, U[u, U_ATAIL], L_AMT, s)
                U[u, U_ATAIL] = s
                if U[u, U_ALO] == -1:
                    U[u, U_ALO] = s
                U[u, U_AN] += 1
            if ses >= 0:
                _link(R, mask, S[ses, S_TAIL], L_SES, s)
                S[ses, S_TAIL] = s
                if S[ses, S_LO] == -1:
                    S[ses, S_LO] = s
                if ip >= 0 and _inc(pairs, _key(P_SIP, ses, ip)) == 1:
                    S[ses, S_DIP] += 1

        # -- ip and network (10 min)
        error = 1 if level >= 3 else 0
        if ip < 0:
            o[X_IP : X_IP + 7] = 0.0
        else:
            b10 = t - M10
            if A[ip, I_TAIL] == -1:
                G[G_NEW_IP] += 1
            _advance_ip(R, mask, A, pairs, ip, b10)
            o[X_IP] = float(A[ip, I_N] + 1)
            o[X_IP + 1] = float(
                A[ip, I_DU] + (1 if user >= 0 and pairs.get(_key(P_IU, ip, user), 0) == 0 else 0)
            )
            o[X_IP + 2] = float(A[ip, I_F] + failed)
            o[X_IP + 3] = float(A[ip, I_E] + error)
            _advance_net(R, mask, N, pairs, net, b10)
            o[X_IP + 4] = float(
                N[net, N_DU] + (1 if user >= 0 and pairs.get(_key(P_NU, net, user), 0) == 0 else 0)
            )
            o[X_IP + 5] = float(N[net, N_DI] + (1 if pairs.get(_key(P_NIP, net, ip), 0) == 0 else 0))
            o[X_IP + 6] = float(N[net, N_F] + failed)
            _link(R, mask, A[ip, I_TAIL], L_IP, s)
            A[ip, I_TAIL] = s
            if A[ip, I_LO] == -1:
                A[ip, I_LO] = s
            A[ip, I_N] += 1
            A[ip, I_F] += failed
            A[ip, I_E] += error
            if user >= 0 and _inc(pairs, _key(P_IU, ip, user)) == 1:
                A[ip, I_DU] += 1
            _link(R, mask, N[net, N_TAIL], L_NET, s)
            N[net, N_TAIL] = s
            if N[net, N_LO] == -1:
                N[net, N_LO] = s
            N[net, N_F] += failed
            if user >= 0 and _inc(pairs, _key(P_NU, net, user)) == 1:
                N[net, N_DU] += 1
            if _inc(pairs, _key(P_NIP, net, ip)) == 1:
                N[net, N_DI] += 1

        # -- service (1 min, and 24 h for the load)
        if V[svc, V_TAIL] == -1:
            G[G_NEW_SERVICE] += 1
        _advance_service(R, RF, mask, V, VX, VR, pairs, svc, t - MIN, b24)
        warn = 1 if level == 2 else 0
        n1 = V[svc, V_N1] + 1
        n24 = V[svc, V_N24] + 1
        lo24 = V[svc, V_LO24]
        first = R[lo24 & mask, R_TS] if lo24 != -1 else t
        minutes = max((t - first) / 1e6 / 60.0, 1.0)
        o[X_SVC] = n1 / (n24 / minutes)
        o[X_SVC + 1] = (V[svc, V_ERR] + error) / n1
        o[X_SVC + 2] = (V[svc, V_WARN] + warn) / n1
        o[X_SVC + 3] = float(
            V[svc, V_DIP] + (1 if ip >= 0 and pairs.get(_key(P_VIP, svc, ip), 0) == 0 else 0)
        )
        # DuckDB's quantile_cont(rt, 0.95) of the minute's times and the event's own
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
            elif math.isnan(v) or (v >= current if _IS_MIN[k] else v <= current):
                best = current
            else:
                best = v
            o[X_SVC + 5 + k] = _GAUGE_DEFAULTS[k] if math.isnan(best) else best
            if not math.isnan(v):
                if math.isnan(current) or (v < current if _IS_MIN[k] else v > current):
                    VX[svc, k] = v
                    V[svc, V_XN + k] = 1
                elif v == current:
                    V[svc, V_XN + k] += 1
        _link(R, mask, V[svc, V_TAIL], L_SVC, s)
        V[svc, V_TAIL] = s
        if V[svc, V_LO1] == -1:
            V[svc, V_LO1] = s
        if V[svc, V_LO24] == -1:
            V[svc, V_LO24] = s
        V[svc, V_N1] += 1
        V[svc, V_N24] += 1
        V[svc, V_ERR] += error
        V[svc, V_WARN] += warn
        if ip >= 0 and _inc(pairs, _key(P_VIP, svc, ip)) == 1:
            V[svc, V_DIP] += 1
        if own:
            jr = np.searchsorted(VR[svc, :nrt], rt, side="right")
            for k in range(nrt, jr, -1):
                VR[svc, k] = VR[svc, k - 1]
            VR[svc, jr] = rt
            V[svc, V_NRT] = nrt + 1

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
        while oldest <= s and R[oldest & mask, R_TS] < bound:
            oldest += 1
        G[G_OLDEST] = oldest
        if t - G[G_SWEPT] > SWEEP_EVERY:
            sweep(t, G, R, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs)


@njit(cache=CACHE)
def _sweep_counts(R, mask, C, link, bound, oldest):
    for e in range(C.shape[0]):
        if C[e, C_TAIL] == -1:
            continue
        _advance_count(R, mask, C, e, link, bound)
        if R[C[e, C_TAIL] & mask, R_TS] < bound:
            C[e, C_LO] = -1
            C[e, C_N] = 0
            C[e, C_TAIL] = -1


@njit(cache=CACHE)
def sweep(now, G, R, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs):
    """Every window of every entity advanced to the retention bound, the entities left with no retained
    event reset (their ids are freed by the caller after the batch), and the ring's slots below the
    oldest retained event made reusable."""
    G[G_SWEPT] = now
    mask = G[G_MASK]
    bound = now - G[G_RETENTION]
    oldest = G[G_OLDEST]
    _advance_quiet(R, mask, G, bound)
    if G[G_Q_LO] == -1:
        G[G_Q_TAIL] = -1
    _sweep_counts(R, mask, T, L_TPL, bound, oldest)
    _sweep_counts(R, mask, Q, L_QC, bound, oldest)
    for e in range(CL.shape[0]):
        if CL[e] < oldest:
            CL[e] = -1
    for u in range(U.shape[0]):
        if U[u, U_TAIL] == -1:
            continue
        _advance_user(R, RF, mask, U, UF, pairs, u, now, bound, bound, bound, bound)
        if R[U[u, U_TAIL] & mask, R_TS] < bound:
            U[u, :] = 0
            for col in (U_TAIL, U_LO10, U_LO30, U_LO60, U_LO24, U_LOC, U_ATAIL, U_ALO):
                U[u, col] = -1
            UF[u, :] = 0.0
    for e in range(S.shape[0]):
        if S[e, S_TAIL] == -1:
            continue
        _advance_session(R, mask, S, pairs, e, bound)
        if R[S[e, S_TAIL] & mask, R_TS] < bound:
            S[e, S_TAIL] = -1
            S[e, S_LO] = -1
            S[e, S_DIP] = 0
    for e in range(A.shape[0]):
        if A[e, I_TAIL] == -1:
            continue
        _advance_ip(R, mask, A, pairs, e, bound)
        if R[A[e, I_TAIL] & mask, R_TS] < bound:
            A[e, :] = 0
            A[e, I_TAIL] = -1
            A[e, I_LO] = -1
    for e in range(N.shape[0]):
        if N[e, N_TAIL] == -1:
            continue
        _advance_net(R, mask, N, pairs, e, bound)
        if R[N[e, N_TAIL] & mask, R_TS] < bound:
            N[e, :] = 0
            N[e, N_TAIL] = -1
            N[e, N_LO] = -1
    for e in range(V.shape[0]):
        if V[e, V_TAIL] == -1:
            continue
        _advance_service(R, RF, mask, V, VX, VR, pairs, e, bound, bound)
        if R[V[e, V_TAIL] & mask, R_TS] < bound:
            V[e, :] = 0
            V[e, V_TAIL] = -1
            V[e, V_LO1] = -1
            V[e, V_LO24] = -1
            VX[e, :] = np.nan
    G[G_RECLAIM] = oldest


@njit(cache=CACHE)
def _leaving(R, mask, lo, link, bound):
    """How many events from ``lo`` along a list are before ``bound`` (what an advance would remove), and
    the first one that is not."""
    n = 0
    while lo != -1 and R[lo & mask, R_TS] < bound:
        n += 1
        lo = R[lo & mask, link]
    return n, lo


@njit(cache=CACHE)
def peek(B, BF, out, status, G, R, RF, T, Q, U, S, A, N, V):
    """The features each row would get if it were ingested now, each against the state as it is (rows
    do not see each other); nothing is written. Each window is read by walking its entity's list from the
    window's start: its events are summed, counted and collected afresh, in the order the running
    aggregates would hold them, so the values equal ``run``'s."""
    mask = G[G_MASK]
    oldest = G[G_OLDEST]
    for i in range(B.shape[0]):
        if B[i, B_VALID] == 0:
            status[i] = ST_INVALID
            continue
        t = B[i, B_TS]
        rank = B[i, B_RANK]
        if G[G_HAS_HWM] and (t < G[G_HWM_TS] or (t == G[G_HWM_TS] and rank <= G[G_HWM_RANK])):
            if t < G[G_HWM_TS] - G[G_LATENESS]:
                status[i] = ST_TOO_LATE
            else:
                status[i] = ST_LATE
                _late_read(B, BF, i, out[i], G, R, RF, T, Q, U, S, A, N, V)
            continue
        status[i] = ST_INGESTED
        tpl, ctry, user, ip, net, ses, svc = (
            B[i, B_TPL],
            B[i, B_CTRY],
            B[i, B_USER],
            B[i, B_IP],
            B[i, B_NET],
            B[i, B_SES],
            B[i, B_SVC],
        )
        level = B[i, B_LVL]
        failed = B[i, B_FAIL]
        vpn = B[i, B_VPN]
        o = out[i]
        hour = (t // 3_600_000_000) % 24 + ((t // MIN) % 60) / 60.0
        o[1] = math.sin(_TWO_PI * hour / 24)
        o[2] = math.cos(_TWO_PI * hour / 24)
        o[3] = 1.0 if (t // 86_400_000_000 + 3) % 7 + 1 >= 6 else 0.0
        o[0] = float(level)
        b24 = t - DAY
        n_all = G[G_ALL_N] - _leaving(R, mask, G[G_ALL_LO], L_ALL, b24)[0] + 1
        n_tpl = T[tpl, C_N] - _leaving(R, mask, T[tpl, C_LO], L_TPL, b24)[0] + 1
        o[X_TPL] = -math.log(n_tpl / n_all)
        if B[i, B_QUIET]:
            n_quiet = G[G_Q_N] - _leaving(R, mask, G[G_Q_LO], L_QUIET, b24)[0] + 1
            n_country = Q[ctry, C_N] - _leaving(R, mask, Q[ctry, C_LO], L_QC, b24)[0] + 1
            o[X_QUIET] = max(math.log(0.01 / (n_country / n_quiet)), 0.0)
        else:
            o[X_QUIET] = 0.0

        # -- user: one walk over its last 24 h
        if user < 0:
            o[X_USER : X_USER + 7] = 0.0
            o[X_USER + 7] = 1.0
            o[X_USER + 8] = 1.0
            o[X_USER + 9 : X_USER + 13] = 0.0
        else:
            u = user
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
            j = _leaving(R, mask, U[u, U_LO24], L_USER, b24)[1]
            while j != -1:
                r = j & mask
                tj = R[r, R_TS]
                n24 += 1
                same_ip += R[r, R_IP] == ip
                same_country += R[r, R_CTRY] == ctry
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
                j = R[r, L_USER]
            o[X_USER] = float(n10 + 1)
            o[X_USER + 1] = float(f10 + failed)
            o[X_USER + 2] = float(len(ips))
            o[X_USER + 3] = float(len(countries))
            o[X_USER + 4] = float(v60 + vpn)
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
                j = _leaving(R, mask, S[ses, S_LO], L_SES, b24)[1]
                while j != -1:
                    if R[j & mask, R_IP] >= 0:
                        sips.add(R[j & mask, R_IP])
                    j = R[j & mask, L_SES]
                o[X_USER + 9] = float(len(sips))
            x = BF[i, F_X]
            z = 0.0
            if not math.isnan(x):
                n = 0
                sx = 0.0
                sxx = 0.0
                j = _leaving(R, mask, U[u, U_ALO], L_AMT, b24)[1]
                while j != -1:
                    v = RF[j & mask, F_X]
                    sx += v
                    sxx += v * v
                    n += 1
                    j = R[j & mask, L_AMT]
                if n >= 3:
                    sx = (sx + x) - x
                    sxx = (sxx + x * x) - x * x
                    var = (sxx - sx * sx / n) / (n - 1)
                    z = (x - sx / n) / (0.25 + math.sqrt(max(var, 0.0)))
            o[X_USER + 10] = z
            km = 0.0
            speed = 0.0
            lat = BF[i, F_LAT]
            if not math.isnan(lat) and U[u, U_TAIL] != -1:
                j = U[u, U_LOC]
                if j >= oldest and R[j & mask, R_TS] >= b24:
                    lon = BF[i, F_LON]
                    plat = RF[j & mask, F_LAT]
                    plon = RF[j & mask, F_LON]
                    km = (
                        2
                        * 6371
                        * math.asin(
                            math.sqrt(
                                math.sin((lat - plat) * _DEG / 2) ** 2
                                + math.cos(plat * _DEG)
                                * math.cos(lat * _DEG)
                                * math.sin((lon - plon) * _DEG / 2) ** 2
                            )
                        )
                    )
                    speed = km / max((t - R[j & mask, R_TS]) / 1e6 / 3600.0, 1 / 60.0)
            o[X_USER + 11] = km
            o[X_USER + 12] = speed

        # -- ip and network (10 min)
        error = 1 if level >= 3 else 0
        if ip < 0:
            o[X_IP : X_IP + 7] = 0.0
        else:
            b10 = t - M10
            n = f = e = 0
            users = set()
            if user >= 0:
                users.add(user)
            j = _leaving(R, mask, A[ip, I_LO], L_IP, b10)[1]
            while j != -1:
                r = j & mask
                n += 1
                f += R[r, R_FAIL]
                e += 1 if R[r, R_LVL] >= 3 else 0
                if R[r, R_USER] >= 0:
                    users.add(R[r, R_USER])
                j = R[r, L_IP]
            o[X_IP] = float(n + 1)
            o[X_IP + 1] = float(len(users))
            o[X_IP + 2] = float(f + failed)
            o[X_IP + 3] = float(e + error)
            f = 0
            nusers = set()
            if user >= 0:
                nusers.add(user)
            nips = set()
            nips.add(ip)
            j = _leaving(R, mask, N[net, N_LO], L_NET, b10)[1]
            while j != -1:
                r = j & mask
                f += R[r, R_FAIL]
                if R[r, R_USER] >= 0:
                    nusers.add(R[r, R_USER])
                nips.add(R[r, R_IP])
                j = R[r, L_NET]
            o[X_IP + 4] = float(len(nusers))
            o[X_IP + 5] = float(len(nips))
            o[X_IP + 6] = float(f + failed)

        # -- service: the 24 h count from the running one, the minute walked
        gone, first_j = _leaving(R, mask, V[svc, V_LO24], L_SVC, b24)
        n24 = V[svc, V_N24] - gone + 1
        first = R[first_j & mask, R_TS] if first_j != -1 else t
        warn = 1 if level == 2 else 0
        n1 = 1
        errors = error
        warns = warn
        vips = set()
        if ip >= 0:
            vips.add(ip)
        rt = BF[i, F_RT]
        rts = np.empty(V[svc, V_N1] + 1)
        nrt = 0
        if not math.isnan(rt):
            rts[0] = rt
            nrt = 1
        best = np.empty(6)
        for k in range(6):
            best[k] = BF[i, F_G + k]
        j = _leaving(R, mask, V[svc, V_LO1], L_SVC, t - MIN)[1]
        while j != -1:
            r = j & mask
            n1 += 1
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
                if not math.isnan(v) and (
                    math.isnan(best[k]) or (v < best[k] if _IS_MIN[k] else v > best[k])
                ):
                    best[k] = v
            j = R[r, L_SVC]
        minutes = max((t - first) / 1e6 / 60.0, 1.0)
        o[X_SVC] = n1 / (n24 / minutes)
        o[X_SVC + 1] = errors / n1
        o[X_SVC + 2] = warns / n1
        o[X_SVC + 3] = float(len(vips))
        if nrt == 0:
            o[X_SVC + 4] = 0.0
        else:
            vals = np.sort(rts[:nrt])
            pos = (nrt - 1) * 0.95
            k_lo = math.floor(pos)
            k_hi = math.ceil(pos)
            o[X_SVC + 4] = vals[k_lo] + (pos - k_lo) * (vals[k_hi] - vals[k_lo])
        for k in range(6):
            o[X_SVC + 5 + k] = _GAUGE_DEFAULTS[k] if math.isnan(best[k]) else best[k]


# ---------------------------------------------------------------------- late events
# An event before the high-water mark (by at most the lateness allowed) is read the way the Python engine
# reads it, from each of its entities' lists up to its place in the order, and then spliced into each list
# at that place. The lists are doubly linked (the previous event's ``seq`` at ``link + NL``); a list is in
# ``(ts, rank)`` order, the ring in arrival order. A running window counts the late event unless it falls
# before the window's first event's predecessor (which had left the window): one that falls between them
# is counted and, if it is before the window's bound, taken out again by the next advance, which every
# reading of the aggregates does first.


@njit(cache=CACHE, inline="always")
def _after(R, mask, j, t, rank):
    """Whether event ``j`` comes after ``(t, rank)`` in the order (an equal id is not before, as the
    Python engine's ``upper``); ranks of one microsecond's events are comparable within a batch."""
    tj = R[j & mask, R_TS]
    return tj > t or (tj == t and R[j & mask, R_RANK] >= rank)


@njit(cache=CACHE)
def _place(R, mask, tail, link, t, rank, reclaim):
    """``(p, q)``: the list's last event before ``(t, rank)`` and its first after (-1: none), walking
    back from the tail over the events after it (at most the lateness allowed of them)."""
    q = -1
    j = tail
    while j >= reclaim and _after(R, mask, j, t, rank):
        q = j
        j = R[j & mask, link + NL]
    if j < reclaim:
        j = -1
    return j, q


@njit(cache=CACHE)
def _start(R, mask, p, link, bound, reclaim):
    """The earliest event at or after ``bound`` walking back from ``p`` (-1: none)."""
    start = -1
    j = p
    while j >= reclaim and R[j & mask, R_TS] >= bound:
        start = j
        j = R[j & mask, link + NL]
    return start


@njit(cache=CACHE)
def _late_count(R, mask, lo, n, tail, link, bound, t, rank, reclaim):
    """How many events of a counted window's list (start ``lo``, ``n`` events counted) are at or after
    ``bound`` and before ``(t, rank)``, and the first of them (-1: none): the running count, plus the
    events just before ``lo`` still at or after the bound, less those from ``lo`` before it and those
    after ``(t, rank)``. Each walk covers at most the lateness allowed of events."""
    first = lo
    j = R[lo & mask, link + NL] if lo != -1 else tail
    while j >= reclaim and R[j & mask, R_TS] >= bound:
        n += 1
        first = j
        j = R[j & mask, link + NL]
    while first != -1 and R[first & mask, R_TS] < bound:
        n -= 1
        first = R[first & mask, link]
    j = tail
    while j >= reclaim and _after(R, mask, j, t, rank):
        n -= 1
        j = R[j & mask, link + NL]
    if first != -1 and _after(R, mask, first, t, rank):
        first = -1
    return n, first


@njit(cache=CACHE)
def _late_read(B, BF, i, o, G, R, RF, T, Q, U, S, A, N, V):
    """The features of row ``i``, placed before the high-water mark, from the events before it in the
    order: the Python engine's slices, compiled. Nothing is written but ``o``."""
    mask = G[G_MASK]
    reclaim = G[G_RECLAIM]
    t = B[i, B_TS]
    rank = B[i, B_RANK]
    tpl, ctry, user, ip, net, ses, svc = (
        B[i, B_TPL],
        B[i, B_CTRY],
        B[i, B_USER],
        B[i, B_IP],
        B[i, B_NET],
        B[i, B_SES],
        B[i, B_SVC],
    )
    level = B[i, B_LVL]
    failed = B[i, B_FAIL]
    vpn = B[i, B_VPN]
    hour = (t // 3_600_000_000) % 24 + ((t // MIN) % 60) / 60.0
    o[1] = math.sin(_TWO_PI * hour / 24)
    o[2] = math.cos(_TWO_PI * hour / 24)
    o[3] = 1.0 if (t // 86_400_000_000 + 3) % 7 + 1 >= 6 else 0.0
    o[0] = float(level)
    b24 = t - DAY
    n_all = _late_count(R, mask, G[G_ALL_LO], G[G_ALL_N], G[G_ALL_TAIL], L_ALL, b24, t, rank, reclaim)[0]
    n_tpl = _late_count(R, mask, T[tpl, C_LO], T[tpl, C_N], T[tpl, C_TAIL], L_TPL, b24, t, rank, reclaim)[0]
    o[X_TPL] = -math.log((n_tpl + 1) / (n_all + 1))
    if B[i, B_QUIET]:
        n_quiet = _late_count(R, mask, G[G_Q_LO], G[G_Q_N], G[G_Q_TAIL], L_QUIET, b24, t, rank, reclaim)[0]
        n_country = _late_count(
            R, mask, Q[ctry, C_LO], Q[ctry, C_N], Q[ctry, C_TAIL], L_QC, b24, t, rank, reclaim
        )[0]
        o[X_QUIET] = max(math.log(0.01 / ((n_country + 1) / (n_quiet + 1))), 0.0)
    else:
        o[X_QUIET] = 0.0

    # -- user: its last 24 h before the event, oldest first
    if user < 0:
        o[X_USER : X_USER + 7] = 0.0
        o[X_USER + 7] = 1.0
        o[X_USER + 8] = 1.0
        o[X_USER + 9 : X_USER + 13] = 0.0
    else:
        u = user
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
        p = _place(R, mask, U[u, U_TAIL], L_USER, t, rank, reclaim)[0]
        j = _start(R, mask, p, L_USER, b24, reclaim)
        loc = -1
        while j != -1:
            r = j & mask
            tj = R[r, R_TS]
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
            j = R[r, L_USER]
        o[X_USER] = float(n10 + 1)
        o[X_USER + 1] = float(f10 + failed)
        o[X_USER + 2] = float(len(ips))
        o[X_USER + 3] = float(len(countries))
        o[X_USER + 4] = float(v60 + vpn)
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
            j = _place(R, mask, S[ses, S_TAIL], L_SES, t, rank, reclaim)[0]
            while j >= reclaim and R[j & mask, R_TS] >= b24:
                if R[j & mask, R_IP] >= 0:
                    sips.add(R[j & mask, R_IP])
                j = R[j & mask, L_SES + NL]
            o[X_USER + 9] = float(len(sips))
        x = BF[i, F_X]
        z = 0.0
        if not math.isnan(x):
            n = 0
            sx = 0.0
            sxx = 0.0
            p = _place(R, mask, U[u, U_ATAIL], L_AMT, t, rank, reclaim)[0]
            j = _start(R, mask, p, L_AMT, b24, reclaim)
            while j != -1:
                v = RF[j & mask, F_X]
                sx += v
                sxx += v * v
                n += 1
                if j == p:
                    break
                j = R[j & mask, L_AMT]
            if n >= 3:
                sx = (sx + x) - x
                sxx = (sxx + x * x) - x * x
                var = (sxx - sx * sx / n) / (n - 1)
                z = (x - sx / n) / (0.25 + math.sqrt(max(var, 0.0)))
        o[X_USER + 10] = z
        km = 0.0
        speed = 0.0
        lat = BF[i, F_LAT]
        if not math.isnan(lat) and loc != -1:
            lon = BF[i, F_LON]
            plat = RF[loc & mask, F_LAT]
            plon = RF[loc & mask, F_LON]
            km = (
                2
                * 6371
                * math.asin(
                    math.sqrt(
                        math.sin((lat - plat) * _DEG / 2) ** 2
                        + math.cos(plat * _DEG)
                        * math.cos(lat * _DEG)
                        * math.sin((lon - plon) * _DEG / 2) ** 2
                    )
                )
            )
            speed = km / max((t - R[loc & mask, R_TS]) / 1e6 / 3600.0, 1 / 60.0)
        o[X_USER + 11] = km
        o[X_USER + 12] = speed

    # -- ip and network (10 min)
    error = 1 if level >= 3 else 0
    if ip < 0:
        o[X_IP : X_IP + 7] = 0.0
    else:
        b10 = t - M10
        n = f = e = 0
        users = set()
        if user >= 0:
            users.add(user)
        j = _place(R, mask, A[ip, I_TAIL], L_IP, t, rank, reclaim)[0]
        while j >= reclaim and R[j & mask, R_TS] >= b10:
            r = j & mask
            n += 1
            f += R[r, R_FAIL]
            e += 1 if R[r, R_LVL] >= 3 else 0
            if R[r, R_USER] >= 0:
                users.add(R[r, R_USER])
            j = R[r, L_IP + NL]
        o[X_IP] = float(n + 1)
        o[X_IP + 1] = float(len(users))
        o[X_IP + 2] = float(f + failed)
        o[X_IP + 3] = float(e + error)
        f = 0
        nusers = set()
        if user >= 0:
            nusers.add(user)
        nips = set()
        nips.add(ip)
        j = _place(R, mask, N[net, N_TAIL], L_NET, t, rank, reclaim)[0]
        while j >= reclaim and R[j & mask, R_TS] >= b10:
            r = j & mask
            f += R[r, R_FAIL]
            if R[r, R_USER] >= 0:
                nusers.add(R[r, R_USER])
            nips.add(R[r, R_IP])
            j = R[r, L_NET + NL]
        o[X_IP + 4] = float(len(nusers))
        o[X_IP + 5] = float(len(nips))
        o[X_IP + 6] = float(f + failed)

    # -- service: the 24 h count from the running one, the minute walked back
    n24, first_j = _late_count(
        R, mask, V[svc, V_LO24], V[svc, V_N24], V[svc, V_TAIL], L_SVC, b24, t, rank, reclaim
    )
    n24 += 1
    first = R[first_j & mask, R_TS] if first_j != -1 else t
    warn = 1 if level == 2 else 0
    p = _place(R, mask, V[svc, V_TAIL], L_SVC, t, rank, reclaim)[0]
    b1 = t - MIN
    n1 = 1
    j = p
    while j >= reclaim and R[j & mask, R_TS] >= b1:
        n1 += 1
        j = R[j & mask, L_SVC + NL]
    errors = error
    warns = warn
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
    j = p
    while j >= reclaim and R[j & mask, R_TS] >= b1:
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
            if not math.isnan(v) and (math.isnan(best[k]) or (v < best[k] if _IS_MIN[k] else v > best[k])):
                best[k] = v
        j = R[r, L_SVC + NL]
    minutes = max((t - first) / 1e6 / 60.0, 1.0)
    o[X_SVC] = n1 / (n24 / minutes)
    o[X_SVC + 1] = errors / n1
    o[X_SVC + 2] = warns / n1
    o[X_SVC + 3] = float(len(vips))
    if nrt == 0:
        o[X_SVC + 4] = 0.0
    else:
        vals = np.sort(rts[:nrt])
        pos = (nrt - 1) * 0.95
        k_lo = math.floor(pos)
        k_hi = math.ceil(pos)
        o[X_SVC + 4] = vals[k_lo] + (pos - k_lo) * (vals[k_hi] - vals[k_lo])
    for k in range(6):
        o[X_SVC + 5 + k] = _GAUGE_DEFAULTS[k] if math.isnan(best[k]) else best[k]


@njit(cache=CACHE)
def _insert(R, mask, tail, link, s, t, rank, reclaim):
    """Splice event ``s`` into a list at its place; returns the event now after it (-1: it is the tail)."""
    p, q = _place(R, mask, tail, link, t, rank, reclaim)
    R[s & mask, link] = q
    R[s & mask, link + NL] = p
    if p != -1:
        R[p & mask, link] = s
    if q != -1:
        R[q & mask, link + NL] = s
    return q


@njit(cache=CACHE)
def _joins(R, mask, lo, q, s, t, rank):
    """Whether a running window starting at ``lo`` counts event ``s`` just spliced before ``q``, and the
    window's start after it: counted unless it falls before the predecessor of the window's first event."""
    if lo == -1:
        return q == -1, s if q == -1 else -1
    if _after(R, mask, lo, t, rank):
        return lo == q, s if lo == q else lo
    return True, lo


@njit(cache=CACHE)
def _late(B, BF, i, o, G, R, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs):
    """Row ``i``, before the high-water mark: its features (``_late_read``), then the event written to the
    ring at the next ``seq``, spliced into its lists and counted into the running windows that hold it."""
    _late_read(B, BF, i, o, G, R, RF, T, Q, U, S, A, N, V)
    mask = G[G_MASK]
    reclaim = G[G_RECLAIM]
    s = G[G_NEXT]
    slot = s & mask
    t = B[i, B_TS]
    rank = B[i, B_RANK]
    tpl, ctry, user, ip, net, ses, svc = (
        B[i, B_TPL],
        B[i, B_CTRY],
        B[i, B_USER],
        B[i, B_IP],
        B[i, B_NET],
        B[i, B_SES],
        B[i, B_SVC],
    )
    level = B[i, B_LVL]
    failed = B[i, B_FAIL]
    vpn = B[i, B_VPN]
    R[slot, R_TS] = t
    R[slot, R_TPL] = tpl
    R[slot, R_CTRY] = ctry
    R[slot, R_USER] = user
    R[slot, R_IP] = ip
    R[slot, R_NET] = net
    R[slot, R_SES] = ses
    R[slot, R_SVC] = svc
    R[slot, R_LVL] = level
    R[slot, R_FAIL] = failed
    R[slot, R_VPN] = vpn
    R[slot, R_RANK] = rank
    for k in range(L_TPL, NR):
        R[slot, k] = -1
    for k in range(NF):
        RF[slot, k] = BF[i, k]

    q = _insert(R, mask, G[G_ALL_TAIL], L_ALL, s, t, rank, reclaim)
    if q == -1:
        G[G_ALL_TAIL] = s
    c, lo = _joins(R, mask, G[G_ALL_LO], q, s, t, rank)
    G[G_ALL_LO] = lo
    G[G_ALL_N] += c
    q = _insert(R, mask, T[tpl, C_TAIL], L_TPL, s, t, rank, reclaim)
    if q == -1:
        T[tpl, C_TAIL] = s
    c, lo = _joins(R, mask, T[tpl, C_LO], q, s, t, rank)
    T[tpl, C_LO] = lo
    T[tpl, C_N] += c
    if B[i, B_QUIET]:
        q = _insert(R, mask, G[G_Q_TAIL], L_QUIET, s, t, rank, reclaim)
        if q == -1:
            G[G_Q_TAIL] = s
        c, lo = _joins(R, mask, G[G_Q_LO], q, s, t, rank)
        G[G_Q_LO] = lo
        G[G_Q_N] += c
        q = _insert(R, mask, Q[ctry, C_TAIL], L_QC, s, t, rank, reclaim)
        if q == -1:
            Q[ctry, C_TAIL] = s
        c, lo = _joins(R, mask, Q[ctry, C_LO], q, s, t, rank)
        Q[ctry, C_LO] = lo
        Q[ctry, C_N] += c
    if ctry >= 0:
        CL[ctry] = s  # the largest seq naming it

    if user >= 0:
        u = user
        if U[u, U_TAIL] == -1:
            G[G_NEW_USER] += 1
        q = _insert(R, mask, U[u, U_TAIL], L_USER, s, t, rank, reclaim)
        if q == -1:
            U[u, U_TAIL] = s
        rec = BF[i, F_REC]
        byt = BF[i, F_BYT]
        c, lo = _joins(R, mask, U[u, U_LO10], q, s, t, rank)
        U[u, U_LO10] = lo
        if c:
            U[u, U_N10] += 1
            U[u, U_F10] += failed
            UF[u, UF_R10] += rec
            if not _whole(rec):
                U[u, U_FR10] += 1
        c, lo = _joins(R, mask, U[u, U_LO30], q, s, t, rank)
        U[u, U_LO30] = lo
        if c:
            UF[u, UF_B30] += byt
            if not _whole(byt):
                U[u, U_FR30] += 1
        c, lo = _joins(R, mask, U[u, U_LO60], q, s, t, rank)
        U[u, U_LO60] = lo
        if c:
            U[u, U_V60] += vpn
            if ip >= 0 and _inc(pairs, _key(P_UIP60, u, ip)) == 1:
                U[u, U_DIP60] += 1
            if ctry >= 0 and _inc(pairs, _key(P_UC60, u, ctry)) == 1:
                U[u, U_DC60] += 1
        c, lo = _joins(R, mask, U[u, U_LO24], q, s, t, rank)
        U[u, U_LO24] = lo
        if c:
            U[u, U_N24] += 1
            _inc(pairs, _key(P_UIP24, u, ip))
            _inc(pairs, _key(P_UC24, u, ctry))
        if not math.isnan(BF[i, F_LAT]):
            j = U[u, U_LOC]
            if j < reclaim or not _after(R, mask, j, t, rank):
                U[u, U_LOC] = s
        if not math.isnan(BF[i, F_X]):
            q = _insert(R, mask, U[u, U_ATAIL], L_AMT, s, t, rank, reclaim)
            if q == -1:
                U[u, U_ATAIL] = s
            c, lo = _joins(R, mask, U[u, U_ALO], q, s, t, rank)
            U[u, U_ALO] = lo
            U[u, U_AN] += c
        if ses >= 0:
            q = _insert(R, mask, S[ses, S_TAIL], L_SES, s, t, rank, reclaim)
            if q == -1:
                S[ses, S_TAIL] = s
            c, lo = _joins(R, mask, S[ses, S_LO], q, s, t, rank)
            S[ses, S_LO] = lo
            if c and ip >= 0 and _inc(pairs, _key(P_SIP, ses, ip)) == 1:
                S[ses, S_DIP] += 1

    error = 1 if level >= 3 else 0
    if ip >= 0:
        if A[ip, I_TAIL] == -1:
            G[G_NEW_IP] += 1
        q = _insert(R, mask, A[ip, I_TAIL], L_IP, s, t, rank, reclaim)
        if q == -1:
            A[ip, I_TAIL] = s
        c, lo = _joins(R, mask, A[ip, I_LO], q, s, t, rank)
        A[ip, I_LO] = lo
        if c:
            A[ip, I_N] += 1
            A[ip, I_F] += failed
            A[ip, I_E] += error
            if user >= 0 and _inc(pairs, _key(P_IU, ip, user)) == 1:
                A[ip, I_DU] += 1
        q = _insert(R, mask, N[net, N_TAIL], L_NET, s, t, rank, reclaim)
        if q == -1:
            N[net, N_TAIL] = s
        c, lo = _joins(R, mask, N[net, N_LO], q, s, t, rank)
        N[net, N_LO] = lo
        if c:
            N[net, N_F] += failed
            if user >= 0 and _inc(pairs, _key(P_NU, net, user)) == 1:
                N[net, N_DU] += 1
            if _inc(pairs, _key(P_NIP, net, ip)) == 1:
                N[net, N_DI] += 1

    if V[svc, V_TAIL] == -1:
        G[G_NEW_SERVICE] += 1
    q = _insert(R, mask, V[svc, V_TAIL], L_SVC, s, t, rank, reclaim)
    if q == -1:
        V[svc, V_TAIL] = s
    c, lo = _joins(R, mask, V[svc, V_LO24], q, s, t, rank)
    V[svc, V_LO24] = lo
    V[svc, V_N24] += c
    c, lo = _joins(R, mask, V[svc, V_LO1], q, s, t, rank)
    V[svc, V_LO1] = lo
    if c:
        V[svc, V_N1] += 1
        V[svc, V_ERR] += error
        V[svc, V_WARN] += 1 if level == 2 else 0
        if ip >= 0 and _inc(pairs, _key(P_VIP, svc, ip)) == 1:
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
                if math.isnan(current) or (v < current if _IS_MIN[k] else v > current):
                    VX[svc, k] = v
                    V[svc, V_XN + k] = 1
                elif v == current:
                    V[svc, V_XN + k] += 1


@njit(cache=CACHE)
def ties(G, R, wanted):
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
        tj = R[j & mask, R_TS]
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
