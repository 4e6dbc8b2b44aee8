"""The hourly sweep (docs/online.md, "State, retention and memory"): every window of every entity advanced to
the retention bound, the entities left with no retained event reset (their ids are freed by Python after
the batch), and the ring's slots below the oldest retained event made reusable.
"""

from __future__ import annotations

import numpy as np

from bankanom_pipeline.online.kernel.jit import jit
from bankanom_pipeline.online.kernel.lists import advance_count, advance_quiet
from bankanom_pipeline.online.kernel.windows import (
    advance_ip,
    advance_net,
    advance_service,
    advance_session,
    advance_user,
)
from bankanom_pipeline.online.layout import (
    C_LO,
    C_N,
    C_TAIL,
    G_MASK,
    G_OLDEST,
    G_Q_LO,
    G_Q_TAIL,
    G_RECLAIM,
    G_RETENTION,
    G_SWEPT,
    I_LO,
    I_TAIL,
    L_QC,
    L_TPL,
    N_LO,
    N_TAIL,
    S_DIP,
    S_LO,
    S_TAIL,
    U_ALO,
    U_ATAIL,
    U_LO10,
    U_LO24,
    U_LO30,
    U_LO60,
    U_LOC,
    U_TAIL,
    V_LO1,
    V_LO24,
    V_TAIL,
)


@jit
def _sweep_counts(R, RT, mask, C, link, bound):
    for e in range(C.shape[0]):
        if C[e, C_TAIL] == -1:
            continue
        advance_count(R, RT, mask, C, e, link, bound)
        if RT[C[e, C_TAIL] & mask] < bound:
            C[e, C_LO] = -1
            C[e, C_N] = 0
            C[e, C_TAIL] = -1


@jit
def sweep(now, G, R, RT, RF, T, Q, CL, U, UF, S, A, N, V, VX, VR, pairs):
    """Every window of every entity advanced to the retention bound, the entities left with no retained
    event reset (their ids are freed by the caller after the batch), and the ring's slots below the
    oldest retained event made reusable."""
    G[G_SWEPT] = now
    mask = G[G_MASK]
    bound = now - G[G_RETENTION]
    oldest = G[G_OLDEST]
    advance_quiet(R, RT, mask, G, bound)
    if G[G_Q_LO] == -1:
        G[G_Q_TAIL] = -1
    _sweep_counts(R, RT, mask, T, L_TPL, bound)
    _sweep_counts(R, RT, mask, Q, L_QC, bound)
    for e in range(CL.shape[0]):
        if CL[e] < oldest:
            CL[e] = -1
    for u in range(U.shape[0]):
        if U[u, U_TAIL] == -1:
            continue
        advance_user(R, RT, RF, mask, U, UF, pairs, u, bound, bound, bound, bound)
        if RT[U[u, U_TAIL] & mask] < bound:
            U[u, :] = 0
            for col in (U_TAIL, U_LO10, U_LO30, U_LO60, U_LO24, U_LOC, U_ATAIL, U_ALO):
                U[u, col] = -1
            UF[u, :] = 0.0
    for e in range(S.shape[0]):
        if S[e, S_TAIL] == -1:
            continue
        advance_session(R, RT, mask, S, pairs, e, bound)
        if RT[S[e, S_TAIL] & mask] < bound:
            S[e, S_TAIL] = -1
            S[e, S_LO] = -1
            S[e, S_DIP] = 0
    for e in range(A.shape[0]):
        if A[e, I_TAIL] == -1:
            continue
        advance_ip(R, RT, mask, A, pairs, e, bound)
        if RT[A[e, I_TAIL] & mask] < bound:
            A[e, :] = 0
            A[e, I_TAIL] = -1
            A[e, I_LO] = -1
    for e in range(N.shape[0]):
        if N[e, N_TAIL] == -1:
            continue
        advance_net(R, RT, mask, N, pairs, e, bound)
        if RT[N[e, N_TAIL] & mask] < bound:
            N[e, :] = 0
            N[e, N_TAIL] = -1
            N[e, N_LO] = -1
    for e in range(V.shape[0]):
        if V[e, V_TAIL] == -1:
            continue
        advance_service(R, RT, RF, mask, V, VX, VR, pairs, e, bound, bound)
        if RT[V[e, V_TAIL] & mask] < bound:
            V[e, :] = 0
            V[e, V_TAIL] = -1
            V[e, V_LO1] = -1
            V[e, V_LO24] = -1
            VX[e, :] = np.nan
    G[G_RECLAIM] = oldest
