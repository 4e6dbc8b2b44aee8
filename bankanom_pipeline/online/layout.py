"""The compiled engine's state layout (docs/online.md, "Compiled engine"): the columns of the batch, the ring
and each kind of entity's arrays, the globals, the statuses, and where the kernel writes each group of
features. Plain integers, so that prepare, the checkpoint and the engine read the state without importing
numba (the kernel compiles them in as constants).
"""

from __future__ import annotations

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
# ring: each event's time in RT (int64, µs), its int32 columns in R: values (ids below ID_LIMIT; the
# rank of the event's id, valid for comparing events of the same microsecond within one batch), then per
# kind of list the link to the next event, then the one to the previous (L + NL), each kept as an offset
# from the event's own seq (kernel/lists.py: ``nxt``, ``set_link``)
R_TPL, R_CTRY, R_USER, R_IP, R_NET, R_SES, R_SVC, R_LVL, R_FAIL, R_VPN, R_RANK = range(11)
L_TPL, L_QUIET, L_QC, L_USER, L_AMT, L_SES, L_IP, L_NET, L_SVC, L_ALL = range(11, 21)
NL = 10
NR = 31
# the ring's capacity stays below this: a link's offset fits in int32
MAX_CAPACITY = 1 << 30
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

# the six gauges (F_G + k): which extreme the feature takes (cache hit rate: the minimum), and its value
# when the minute has none
GAUGE_IS_MIN = (False, False, True, False, False, False)
GAUGE_DEFAULTS = (0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
