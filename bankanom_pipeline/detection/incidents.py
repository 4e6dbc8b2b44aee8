"""Flagged events grouped into incidents, each with a severity, a reporting decision and a root cause.

Grouping, severity and reporting rules live in ``incidents.yaml`` (documented there); the scenario match
in ``rca.py``. Everything here is a pure function of the flagged events and the detector's own numbers
(scores, deviations, attributions): labels never reach this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field

from bankanom_pipeline.detection import rca
from bankanom_pipeline.detection.explain import rank
from bankanom_pipeline.detection.incident_ids import check_unique, incident_id

DEFAULT_PATH = Path(__file__).with_name("incidents.yaml")
SEVERITIES = ("Low", "Medium", "High", "Critical")
FOLLOW_UP_TEMPLATE = "Follow-up action "
_US_PER_MINUTE = 60_000_000
# the typical deviation of an incident is clipped here: past it, "far from normal" is all that matters
_DEVIATION_CAP = 50.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gaps(_Strict):
    user: float = Field(gt=0)
    ip: float = Field(gt=0)
    network: float = Field(gt=0)
    correlation: float = Field(gt=0)
    service_template: float = Field(gt=0)
    system: float = Field(gt=0)


class Grouping(_Strict):
    gap_minutes: Gaps
    rare_template_min_rarity: float = Field(ge=0)
    victim_min_source_users: float = Field(gt=0)
    template_link_max_group: int = Field(ge=1)
    infrastructure_services: list[str]
    ignored_users: list[str]


class Reporting(_Strict):
    min_events: int = Field(ge=1)
    min_max_score: float = Field(ge=0, le=1)
    lone_event_min_score: float = Field(ge=0, le=1)


class Severity(_Strict):
    max_score: list[float] = Field(min_length=3, max_length=3)
    users: list[int] = Field(min_length=3, max_length=3)
    ips: list[int] = Field(min_length=3, max_length=3)
    services: list[int] = Field(min_length=3, max_length=3)
    events: list[int] = Field(min_length=3, max_length=3)


class Explain(_Strict):
    rows_per_incident: int = Field(ge=0)
    top_features: int = Field(ge=1)
    max_listed: int = Field(ge=1)


class IncidentConfig(_Strict):
    grouping: Grouping
    reporting: Reporting
    severity: Severity
    explain: Explain


def load_incident_config(path: str | Path | None = None) -> IncidentConfig:
    return IncidentConfig.model_validate(yaml.safe_load(Path(path or DEFAULT_PATH).read_text()))


@cache
def default_incident_config() -> IncidentConfig:
    return load_incident_config()


# -- grouping ------------------------------------------------------------------------------------


def _template_family(template: pl.Expr) -> pl.Expr:
    """A template with the parts that vary inside one problem masked: endpoints and service names."""
    return template.str.replace_all(r"/[\w#./-]+", "<path>").str.replace_all(
        r"\b[a-z]+(-[a-z]+)*-(service|gateway|db|agent|connector|trail)\b", "<service>"
    )


def _codes(frame: pl.DataFrame, expr: pl.Expr) -> np.ndarray:
    """Dense integer code per row of ``expr`` (a string key), -1 where it is null."""
    return (
        frame.select(expr.alias("k"))
        .with_columns(pl.col("k").rank("dense").cast(pl.Int64).fill_null(0) - 1)["k"]
        .to_numpy()
    )


def link_key_values(config: IncidentConfig) -> list[tuple[str, pl.Expr, float]]:
    """Per link kind: an expression giving each row's key (null = no key) and the gap in minutes (see
    incidents.yaml). ``link_keys`` codes them per frame; live incidents keep the values themselves."""
    g = config.grouping
    infra = pl.col("source_service").is_in(g.infrastructure_services)
    user = pl.col("user_id")
    has_user = user.is_not_null() & ~user.str.to_lowercase().is_in([u.lower() for u in g.ignored_users])
    ip = pl.when(~infra).then(pl.col("ip_address"))
    network = ip.str.extract(r"^(\d+\.\d+\.\d+)\.\d+$", 1)
    # a line from an address that tried many accounts is about the attacker, not the account: linking
    # by its victim would chain every attack that hit a common customer into one hairball
    source_users = pl.max_horizontal(
        pl.col("ip_distinct_users_10m").fill_null(0), pl.col("network_distinct_users_10m").fill_null(0)
    )
    actor = has_user & (source_users < g.victim_min_source_users)
    rare = pl.col("template_rarity") >= g.rare_template_min_rarity
    family = pl.when(rare).then(
        pl.concat_str([pl.col("source_service"), _template_family(pl.col("template"))], separator="|")
    )
    system = pl.when(infra & ~has_user).then(
        pl.concat_str([pl.col("source_service"), _template_family(pl.col("template"))], separator="|")
    )
    gaps = g.gap_minutes
    return [
        ("user", pl.when(actor).then(user), gaps.user),
        ("ip", ip, gaps.ip),
        ("network", network, gaps.network),
        ("correlation", pl.col("correlation_id"), gaps.correlation),
        ("service_template", family, gaps.service_template),
        ("system", system, gaps.system),
    ]


def link_keys(frame: pl.DataFrame, config: IncidentConfig) -> list[tuple[str, np.ndarray, float]]:
    """Per link kind: a key code per row (-1 = no key) and the gap in minutes (see incidents.yaml)."""
    return [(kind, _codes(frame, expr), gap) for kind, expr, gap in link_key_values(config)]


def connected_groups(ts_us: np.ndarray, keys: Sequence[tuple[str, np.ndarray, float]]) -> np.ndarray:
    """Component label per row (0.. in order of each component's first row).

    Within one key, linking each event to the next one with the same key (if within the gap) is enough:
    two events of a key within the gap have every event between them within it too."""
    # scipy where it is used: every process loading the code location imports this module
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(ts_us)
    heads, tails = [np.arange(n)], [np.arange(n)]  # self-loops keep singletons in the graph
    for _, codes, gap_minutes in keys:
        rows = np.flatnonzero(codes >= 0)
        if len(rows) < 2:
            continue
        order = rows[np.lexsort((ts_us[rows], codes[rows]))]
        a, b = order[:-1], order[1:]
        linked = (codes[a] == codes[b]) & (ts_us[b] - ts_us[a] <= gap_minutes * _US_PER_MINUTE)
        heads.append(a[linked])
        tails.append(b[linked])
    i, j = np.concatenate(heads), np.concatenate(tails)
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance, so ids follow the rows' (time) order
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[labels]


def group_events(
    ts_us: np.ndarray, keys: Sequence[tuple[str, np.ndarray, float]], config: IncidentConfig
) -> np.ndarray:
    """Incident label per row: the entity keys first, then the rare service template, which may only
    join groups that the entity keys left small (see ``template_link_max_group`` in incidents.yaml)."""
    entity = [k for k in keys if k[0] != "service_template"]
    template = [k for k in keys if k[0] == "service_template"]
    if not template:
        return connected_groups(ts_us, entity)
    first = connected_groups(ts_us, entity)
    small = np.bincount(first)[first] <= config.grouping.template_link_max_group
    gated = [(kind, np.where(small, codes, -1), gap) for kind, codes, gap in template]
    return connected_groups(ts_us, entity + gated)


# -- building incidents --------------------------------------------------------------------------


def build_incidents(
    flagged: pl.DataFrame,
    deviations: np.ndarray,
    feature_names: list[str],
    explain: Callable[[np.ndarray], np.ndarray] | None,
    config: IncidentConfig | None = None,
    normals: Sequence[float] | None = None,
    catalogue: rca.Catalogue | None = None,
    groups: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(incidents, incident_events)`` for the flagged events of one or more partitions.

    ``deviations``: robust z per flagged row and feature (columns in ``feature_names`` order);
    ``explain(rows)``: attribution per feature for row indices into ``flagged`` (called for the top rows
    of reported incidents only); ``normals``: each feature's training median in raw units (see
    ``explain.normal_values``), shown next to the values in explanations when given; ``groups``: the
    incident id of each flagged row when the caller grouped the events itself (live incidents, which
    group incrementally): the grouping rules are skipped and these ids kept. Otherwise each incident's id
    is ``incident_id`` of its first event by ``(ts, event_id)``."""
    config = config or default_incident_config()
    catalogue = catalogue or rca.default_catalogue()
    deviations = np.asarray(deviations, dtype=float).reshape(len(flagged), len(feature_names))
    if len(flagged) == 0:
        return _empty_incidents(), pl.DataFrame(schema=INCIDENT_EVENTS_SCHEMA)

    ids = ["event_id", "source_service", "user_id", "ip_address", "correlation_id", "template"]
    given = [] if groups is None else [pl.Series("_given", list(groups), dtype=pl.String)]
    if groups is not None and (len(given[0]) != len(flagged) or given[0].null_count()):
        raise ValueError(f"groups needs one incident id per flagged row ({len(flagged)})")
    frame = (
        flagged.with_columns(pl.col(c).cast(pl.String) for c in ids)  # an all-null column arrives untyped
        .with_columns(*given)
        .with_row_index("_row")
        .sort(["partition_date", "ts", "event_id"])
    )
    rows = frame["_row"].to_numpy().astype(np.int64)
    dev = np.clip(deviations[rows], -_DEVIATION_CAP, _DEVIATION_CAP)
    ts_us = frame["ts"].dt.epoch("us").to_numpy()
    if groups is None:
        # partitions never share an incident: a key is (partition, value)
        part = _codes(frame, pl.col("partition_date").cast(pl.String))
        keys = []
        for kind, codes, gap in link_keys(frame, config):
            keyed = np.where(codes >= 0, codes * (part.max() + 1) + part, -1)
            keys.append((kind, keyed, gap))
        labels = group_events(ts_us, keys, config)
    else:
        # numbered by first appearance, as connected_groups numbers them
        number: dict[str, int] = {}
        labels = np.array([number.setdefault(g, len(number)) for g in frame["_given"].to_list()])
    frame = frame.with_columns(pl.Series("_inc", labels))

    inc = _aggregate(frame, config)
    n_inc = len(inc)
    profile = _typical_deviation(dev, labels, n_inc)
    scores = _rca_scores(frame, inc, profile, feature_names, catalogue)
    matches = rca.best_matches(scores, catalogue)

    reported = _reported(inc, config)
    severity = _severity(inc, config)
    peak = inc["_peak"].to_numpy()  # position in ``frame`` of each incident's top line
    attribution = _attributions(frame, rows, labels, reported, explain, config, n_inc, len(feature_names))
    normals_arr = None if normals is None else np.asarray(normals, dtype=float)
    raw = frame.select(feature_names).to_numpy().astype(float)[peak]
    top = _top_features(raw, dev[peak], profile, attribution, feature_names, normals_arr, config)
    profiles = {p.id: p for p in catalogue.profiles}

    incidents = inc.with_columns(
        pl.Series("severity", severity, dtype=pl.String),
        pl.Series("reported", reported, dtype=pl.Boolean),
        pl.Series("scenario_id", [m.scenario_id for m in matches], dtype=pl.String),
        pl.Series("scenario_name", [m.scenario_name for m in matches], dtype=pl.String),
        pl.Series("scenario_confidence", [round(m.confidence, 4) for m in matches], dtype=pl.Float64),
        pl.Series(
            "scenario_alternatives",
            [
                json.dumps([{"id": a, "name": b, "confidence": round(c, 4)} for a, b, c in m.runners_up])
                for m in matches
            ],
            dtype=pl.String,
        ),
        pl.Series("top_features", [json.dumps(t) for t in top], dtype=pl.String),
    )
    summaries = [
        _summary(row, top[i], matches[i], profiles[matches[i].scenario_id], config)
        for i, row in enumerate(incidents.iter_rows(named=True))
    ]
    incidents = incidents.with_columns(
        pl.Series("summary", summaries, dtype=pl.String), pl.lit("open").alias("status")
    ).select(INCIDENT_COLUMNS)
    incident_events = (
        frame.join(inc.select("_inc", "incident_id"), on="_inc")
        .select("partition_date", "incident_id", "event_id")
        .sort("incident_id", "event_id")
    )
    return incidents, incident_events


INCIDENT_COLUMNS = [
    "partition_date",
    "incident_id",
    "start_ts",
    "end_ts",
    "event_count",
    "services",
    "users",
    "ips",
    "user_count",
    "ip_count",
    "max_score",
    "mean_score",
    "severity",
    "reported",
    "origin_service",
    "origin_entity",
    "scenario_id",
    "scenario_name",
    "scenario_confidence",
    "scenario_alternatives",
    "top_features",
    "summary",
    "status",
]
INCIDENT_EVENTS_SCHEMA = {"partition_date": pl.Date, "incident_id": pl.String, "event_id": pl.String}


def _empty_incidents() -> pl.DataFrame:
    types = {
        "partition_date": pl.Date,
        "start_ts": pl.Datetime("us", "UTC"),
        "end_ts": pl.Datetime("us", "UTC"),
        "event_count": pl.Int64,
        "services": pl.List(pl.String),
        "users": pl.List(pl.String),
        "ips": pl.List(pl.String),
        "user_count": pl.Int64,
        "ip_count": pl.Int64,
        "max_score": pl.Float64,
        "mean_score": pl.Float64,
        "reported": pl.Boolean,
        "scenario_confidence": pl.Float64,
    }
    return pl.DataFrame(schema={c: types.get(c, pl.String) for c in INCIDENT_COLUMNS})


def _aggregate(frame: pl.DataFrame, config: IncidentConfig) -> pl.DataFrame:
    """One row per incident: time span, counts, entities, scores, origin (no labels, no models)."""
    g = config.grouping
    cap = config.explain.max_listed
    user = pl.col("user_id")
    real_user = user.is_not_null() & ~user.str.to_lowercase().is_in([u.lower() for u in g.ignored_users])
    follow_up = pl.col("template").str.starts_with(FOLLOW_UP_TEMPLATE)
    work = frame.with_row_index("_pos").with_columns(
        pl.when(real_user).then(user).alias("_user"),
        pl.col("ip_address").str.extract(r"^(\d+\.\d+\.\d+)\.\d+$", 1).alias("_net"),
        follow_up.alias("_follow"),
    )
    given = [pl.col("_given").first()] if "_given" in work.columns else []
    inc = (
        work.group_by("_inc")
        .agg(
            *given,
            # the frame is in (partition_date, ts, event_id) order: the first row is the first event
            pl.col("event_id").first().alias("_first_event"),
            pl.col("ts").first().dt.epoch("us").alias("_first_ts"),
            pl.col("partition_date").first(),
            pl.col("ts").min().alias("start_ts"),
            pl.col("ts").max().alias("end_ts"),
            pl.len().cast(pl.Int64).alias("event_count"),
            pl.col("source_service").unique().sort().alias("services"),
            pl.col("_user").drop_nulls().unique().sort().head(cap).alias("users"),
            pl.col("ip_address").drop_nulls().unique().sort().head(cap).alias("ips"),
            pl.col("_user").drop_nulls().n_unique().cast(pl.Int64).alias("user_count"),
            pl.col("ip_address").drop_nulls().n_unique().cast(pl.Int64).alias("ip_count"),
            pl.col("_user").is_null().mean().alias("_no_user_share"),
            pl.col("ensemble_score").max().alias("max_score"),
            pl.col("ensemble_score").mean().alias("mean_score"),
            pl.col("_pos").get(pl.col("ensemble_score").arg_max()).alias("_peak"),
            # the problem starts where its first line (not a follow-up step) was logged
            pl.col("source_service")
            .filter(~pl.col("_follow"))
            .first()
            .fill_null(pl.col("source_service").first())
            .alias("origin_service"),
            *_dominant("_user"),
            *_dominant("ip_address"),
            *_dominant("_net"),
        )
        .sort("_inc")
    )
    if "_given" in inc.columns:
        inc = inc.rename({"_given": "incident_id"})
    else:
        firsts = inc["_first_event"].to_list()
        ids = [incident_id(e, t) for e, t in zip(firsts, inc["_first_ts"].to_list(), strict=True)]
        check_unique(ids, firsts)
        inc = inc.with_columns(pl.Series("incident_id", ids, dtype=pl.String))
    origin = []
    for r in inc.select(
        "origin_service",
        "_user_top",
        "_user_share",
        "ip_address_top",
        "ip_address_share",
        "_net_top",
        "_net_share",
        "user_count",
    ).iter_rows():
        service, u, u_share, ip, ip_share, net, net_share, users = r
        if u is not None and u_share >= 0.5 and users <= 2:
            origin.append(f"user {u}")
        elif ip is not None and ip_share >= 0.5:
            origin.append(f"ip {ip}")
        elif net is not None and net_share >= 0.5:
            origin.append(f"network {net}.0/24")
        else:
            origin.append(f"service {service}")
    return inc.with_columns(pl.Series("origin_entity", origin, dtype=pl.String))


def _dominant(column: str) -> list[pl.Expr]:
    """The most frequent non-null value of ``column`` and its share of the incident's lines."""
    values = pl.col(column).drop_nulls()
    top = values.mode().sort().first()
    return [
        top.alias(f"{column}_top"),
        ((pl.col(column) == top).sum() / pl.len()).alias(f"{column}_share"),
    ]


def _typical_deviation(dev: np.ndarray, labels: np.ndarray, n_inc: int) -> np.ndarray:
    """Per incident and feature, the quartile (25th or 75th) further from 0: what most of the incident's
    lines show, robust to the follow-up lines and the odd glued-on normal line that dilute a mean."""
    out = np.empty((n_inc, dev.shape[1]))
    sizes = np.bincount(labels, minlength=n_inc)
    single = sizes[labels] == 1
    out[labels[single]] = dev[single]  # a lone line is its own profile; most incidents are lone lines
    if single.all():
        return out
    cols = [f"f{i}" for i in range(dev.shape[1])]
    multi = pl.DataFrame(dev[~single], schema=cols).with_columns(pl.Series("_inc", labels[~single]))
    q = multi.group_by("_inc").agg(
        *[pl.col(c).quantile(0.25, "linear").alias(f"lo_{c}") for c in cols],
        *[pl.col(c).quantile(0.75, "linear").alias(f"hi_{c}") for c in cols],
    )
    lo = q.select(f"lo_{c}" for c in cols).to_numpy()
    hi = q.select(f"hi_{c}" for c in cols).to_numpy()
    out[q["_inc"].to_numpy()] = np.where(np.abs(hi) >= np.abs(lo), hi, lo)
    return out


def _rca_scores(
    frame: pl.DataFrame, inc: pl.DataFrame, profile: np.ndarray, feature_names, catalogue: rca.Catalogue
) -> np.ndarray:
    n_inc = len(inc)
    events = inc["event_count"].to_numpy().astype(float)

    def counts(column: str) -> tuple[np.ndarray, list[str]]:
        long = frame.group_by("_inc", column).len()
        values = long[column].unique().sort().to_list()
        index = {v: i for i, v in enumerate(values)}
        out = np.zeros((n_inc, len(values)))
        codes = np.array([index[v] for v in long[column].to_list()], dtype=np.int64)
        out[long["_inc"].to_numpy(), codes] = long["len"].to_numpy()
        return out, values

    template_counts = counts("template")
    template_score = rca.template_fit(*template_counts, catalogue)
    service_score = rca.service_fit(*counts("source_service"), catalogue)
    return rca.score_matrix(
        template_score,
        service_score,
        profile,
        feature_names,
        inc["user_count"].to_numpy(),
        inc["ip_count"].to_numpy(),
        events,
        inc["_no_user_share"].to_numpy(),
        catalogue,
        rca.tell_tale_coverage(*template_counts, catalogue),
    )


def _reported(inc: pl.DataFrame, config: IncidentConfig) -> np.ndarray:
    r = config.reporting
    events = inc["event_count"].to_numpy()
    top = inc["max_score"].to_numpy()
    return ((events >= r.min_events) & (top >= r.min_max_score)) | (top >= r.lone_event_min_score)


def _severity(inc: pl.DataFrame, config: IncidentConfig) -> list[str]:
    s = config.severity

    def level(values: np.ndarray, thresholds: list[float]) -> np.ndarray:
        return (values[:, None] >= np.asarray(thresholds)[None, :]).sum(axis=1)

    score_points = level(inc["max_score"].to_numpy(), s.max_score)
    radius_points = np.max(
        [
            level(inc["user_count"].to_numpy(), s.users),
            level(inc["ip_count"].to_numpy(), s.ips),
            level(inc["services"].list.len().to_numpy(), s.services),
            level(inc["event_count"].to_numpy(), s.events),
        ],
        axis=0,
    )
    total = score_points + radius_points
    index = np.select([total <= 1, total <= 3, total == 4], [0, 1, 2], 3)
    return [SEVERITIES[i] for i in index]


def _attributions(frame, rows, labels, reported, explain, config, n_inc, n_features) -> dict[int, np.ndarray]:
    """Mean attribution over each reported incident's top lines, from one batched ``explain`` call."""
    per = config.explain.rows_per_incident
    if explain is None or per == 0 or not reported.any():
        return {}
    score = frame["ensemble_score"].to_numpy()
    picked = (
        pl.DataFrame({"_inc": labels, "_pos": np.arange(len(labels)), "_s": score})
        .filter(pl.Series(reported[labels]))
        .sort(["_inc", "_s", "_pos"], descending=[False, True, False])
        .group_by("_inc", maintain_order=True)
        .head(per)
    )
    positions = picked["_pos"].to_numpy()
    matrix = np.asarray(explain(rows[positions]), dtype=float).reshape(len(positions), n_features)
    out: dict[int, np.ndarray] = {}
    owners = picked["_inc"].to_numpy()
    for incident in np.unique(owners):
        out[int(incident)] = matrix[owners == incident].mean(axis=0)
    return out


def _top_features(value, deviation, typical, attribution: dict[int, np.ndarray], names, normals, config):
    """Per incident, the features that make its top line anomalous: by attribution when the model was
    asked (positive ones only), else by how far they are from normal. A feature only the top line shows
    (a neighbour's spike in the same service minute) comes after those most of the incident's lines
    share (a typical deviation of at least 1 IQR the same way). Arrays are (incidents, features)."""
    n = min(config.explain.top_features, len(names))
    attr = np.full(value.shape, np.nan)
    for i, a in attribution.items():
        attr[i] = a
    asked = ~np.isnan(attr).all(axis=1) & (np.nan_to_num(attr) > 0).any(axis=1)
    metric = np.where(asked[:, None], np.nan_to_num(attr), np.abs(deviation))
    candidate = np.where(asked[:, None], np.nan_to_num(attr) > 0, True)
    shared = (np.abs(typical) >= 1.0) & (np.sign(typical) == np.sign(deviation))
    key = np.where(candidate, metric + np.where(shared, 1e9, 0.0), -np.inf)
    order = rank(key, n)
    take = lambda m: np.take_along_axis(m, order, axis=1)  # noqa: E731
    keep = np.isfinite(take(key))
    v, d, a = take(np.round(value, 4)), take(np.round(deviation, 2)), take(np.round(attr, 4))
    normal = None if normals is None else np.round(np.asarray(normals, dtype=float), 4)[order]
    out = []
    for i in range(len(order)):
        out.append(
            [
                {
                    "feature": names[order[i, j]],
                    "value": _num(v[i, j]),
                    "normal": None if normal is None else _num(normal[i, j]),
                    "deviation": _num(d[i, j]),
                    "attribution": _num(a[i, j]),
                }
                for j in range(n)
                if keep[i, j]
            ]
        )
    return out


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _summary(row: dict, top: list[dict], match: rca.Match, profile: rca.ScenarioProfile, config) -> str:
    """What an on-call engineer reads first: what, when, where, who, why, and how sure we are."""
    minutes = (row["end_ts"] - row["start_ts"]).total_seconds() / 60
    why = "; ".join(_why(t) for t in top) or "no single feature stands out"
    alternatives = ", ".join(f"{name} ({sid}) {conf:.2f}" for sid, name, conf in match.runners_up)
    certainty = "likely" if match.confidence >= 0.6 else "possibly"
    page = "reported to on-call" if row["reported"] else "not reported (below the reporting rule)"
    users = f"{row['user_count']} user(s)" + (f": {', '.join(row['users'][:3])}" if row["users"] else "")
    lines = [
        f"[{row['severity']}] {row['incident_id']}: {certainty} {match.scenario_name} ({match.scenario_id}), "
        f"confidence {match.confidence:.2f}",
        f"When:  {row['start_ts']:%Y-%m-%d %H:%M:%S} to {row['end_ts']:%H:%M:%S} UTC ({minutes:.1f} min), "
        f"{row['event_count']} flagged event(s)",
        f"Where: {', '.join(row['services'])}; first seen on {row['origin_service']}",
        f"Who:   {row['origin_entity']}; {users}; {row['ip_count']} IP(s)",
        f"Why:   {why}",
        f"Score: max {row['max_score']:.3f}, mean {row['mean_score']:.3f}; {page}",
        f"Scenario: {profile.summary} (catalogue severity {profile.severity})",
    ]
    if profile.follow_ups:
        lines.append(f"Playbook steps for this scenario: {', '.join(profile.follow_ups)}")
    if alternatives:
        lines.append(f"Alternatives: {alternatives}")
    return "\n".join(lines)


def _why(t: dict) -> str:
    normal = "" if t["normal"] is None else f"normal {t['normal']:g}, "
    deviation = "" if t["deviation"] is None else f"{t['deviation']:+g} IQR"
    return f"{t['feature']} = {t['value']:g} ({normal}{deviation})"
