"""Each kind of entity's running windows advanced to an event's time (docs/online.md, "The kernel"): from
the window's start along the entity's list, each event that leaves is taken out of the aggregates (counts,
sums, a distinct counter's decrement, a sorted buffer's removal, an extreme recomputed from the window
when the value leaving was the extreme). The in-order step and the hourly sweep call them.
"""

from __future__ import annotations

import math

import numpy as np

from bankanom_pipeline.online.kernel.jit import jit
from bankanom_pipeline.online.kernel.lists import dec, key, leaving, nxt, walk_sum, whole
from bankanom_pipeline.online.layout import (
    F_BYT,
    F_G,
    F_REC,
    F_RT,
    GAUGE_IS_MIN,
    I_DU,
    I_E,
    I_F,
    I_LO,
    I_N,
    L_AMT,
    L_IP,
    L_NET,
    L_SES,
    L_SVC,
    L_USER,
    N_DI,
    N_DU,
    N_F,
    N_LO,
    P_IU,
    P_NIP,
    P_NU,
    P_SIP,
    P_UC24,
    P_UC60,
    P_UIP24,
    P_UIP60,
    P_VIP,
    R_CTRY,
    R_FAIL,
    R_IP,
    R_LVL,
    R_USER,
    R_VPN,
    S_DIP,
    S_LO,
    U_ALO,
    U_AN,
    U_DC60,
    U_DIP60,
    U_F10,
    U_FR10,
    U_FR30,
    U_LO10,
    U_LO24,
    U_LO30,
    U_LO60,
    U_N10,
    U_N24,
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
    V_WARN,
    V_XN,
)


@jit
def advance_user(R, RT, RF, mask, U, UF, pairs, u, b10, b30, b60, b24):
    """The user's windows advanced to start at b10, b30, b60, b24 and the amounts' at b24."""
    lo = U[u, U_LO10]
    left_fraction = False
    while lo != -1 and RT[lo & mask] < b10:
        r = lo & mask
        U[u, U_N10] -= 1
        U[u, U_F10] -= R[r, R_FAIL]
        v = RF[r, F_REC]
        UF[u, UF_R10] -= v
        if not whole(v):
            U[u, U_FR10] -= 1
            left_fraction = True
        lo = nxt(R, mask, lo, L_USER)
    U[u, U_LO10] = lo
    if left_fraction and U[u, U_FR10] == 0:
        # whole numbers only again: restart the running sum exactly from them
        UF[u, UF_R10] = walk_sum(R, RF, mask, lo, L_USER, F_REC)
    lo = U[u, U_LO30]
    left_fraction = False
    while lo != -1 and RT[lo & mask] < b30:
        r = lo & mask
        v = RF[r, F_BYT]
        UF[u, UF_B30] -= v
        if not whole(v):
            U[u, U_FR30] -= 1
            left_fraction = True
        lo = nxt(R, mask, lo, L_USER)
    U[u, U_LO30] = lo
    if left_fraction and U[u, U_FR30] == 0:
        UF[u, UF_B30] = walk_sum(R, RF, mask, lo, L_USER, F_BYT)
    lo = U[u, U_LO60]
    while lo != -1 and RT[lo & mask] < b60:
        r = lo & mask
        U[u, U_V60] -= R[r, R_VPN]
        ip = R[r, R_IP]
        if ip >= 0 and dec(pairs, key(P_UIP60, u, ip)) == 0:
            U[u, U_DIP60] -= 1
        c = R[r, R_CTRY]
        if c >= 0 and dec(pairs, key(P_UC60, u, c)) == 0:
            U[u, U_DC60] -= 1
        lo = nxt(R, mask, lo, L_USER)
    U[u, U_LO60] = lo
    lo = U[u, U_LO24]
    while lo != -1 and RT[lo & mask] < b24:
        r = lo & mask
        U[u, U_N24] -= 1
        dec(pairs, key(P_UIP24, u, R[r, R_IP]))
        dec(pairs, key(P_UC24, u, R[r, R_CTRY]))
        lo = nxt(R, mask, lo, L_USER)
    U[u, U_LO24] = lo
    gone, lo = leaving(R, RT, mask, U[u, U_ALO], L_AMT, b24)
    U[u, U_AN] -= gone
    U[u, U_ALO] = lo


@jit
def advance_session(R, RT, mask, S, pairs, e, bound):
    lo = S[e, S_LO]
    while lo != -1 and RT[lo & mask] < bound:
        r = lo & mask
        ip = R[r, R_IP]
        if ip >= 0 and dec(pairs, key(P_SIP, e, ip)) == 0:
            S[e, S_DIP] -= 1
        lo = nxt(R, mask, lo, L_SES)
    S[e, S_LO] = lo


@jit
def advance_ip(R, RT, mask, A, pairs, e, bound):
    lo = A[e, I_LO]
    while lo != -1 and RT[lo & mask] < bound:
        r = lo & mask
        A[e, I_N] -= 1
        A[e, I_F] -= R[r, R_FAIL]
        A[e, I_E] -= 1 if R[r, R_LVL] >= 3 else 0
        user = R[r, R_USER]
        if user >= 0 and dec(pairs, key(P_IU, e, user)) == 0:
            A[e, I_DU] -= 1
        lo = nxt(R, mask, lo, L_IP)
    A[e, I_LO] = lo


@jit
def advance_net(R, RT, mask, N, pairs, e, bound):
    lo = N[e, N_LO]
    while lo != -1 and RT[lo & mask] < bound:
        r = lo & mask
        N[e, N_F] -= R[r, R_FAIL]
        user = R[r, R_USER]
        if user >= 0 and dec(pairs, key(P_NU, e, user)) == 0:
            N[e, N_DU] -= 1
        if dec(pairs, key(P_NIP, e, R[r, R_IP])) == 0:
            N[e, N_DI] -= 1
        lo = nxt(R, mask, lo, L_NET)
    N[e, N_LO] = lo


@jit
def advance_service(R, RT, RF, mask, V, VX, VR, pairs, e, b1, b24):
    lo = V[e, V_LO1]
    stale = np.zeros(6, dtype=np.bool_)
    any_stale = False
    while lo != -1 and RT[lo & mask] < b1:
        r = lo & mask
        V[e, V_N1] -= 1
        level = R[r, R_LVL]
        if level >= 3:
            V[e, V_ERR] -= 1
        elif level == 2:
            V[e, V_WARN] -= 1
        ip = R[r, R_IP]
        if ip >= 0 and dec(pairs, key(P_VIP, e, ip)) == 0:
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
        lo = nxt(R, mask, lo, L_SVC)
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
                        if math.isnan(best) or (v < best if GAUGE_IS_MIN[k] else v > best):
                            best = v
                            count = 1
                        elif v == best:
                            count += 1
                    j = nxt(R, mask, j, L_SVC)
                VX[e, k] = best
                V[e, V_XN + k] = count
    lo = V[e, V_LO24]
    while lo != -1 and RT[lo & mask] < b24:
        V[e, V_N24] -= 1
        lo = nxt(R, mask, lo, L_SVC)
    V[e, V_LO24] = lo
