"""Which catalogue scenario an incident most likely is: a match against hand-written scenario profiles.

The profiles (``scenario_profiles.yaml``) describe each generator scenario from its catalogue entry —
templates, features that move and which way, who and where from — and never see a label. Ids, names,
services, severities and follow-up steps come from the generator config so they stay in step with it.

Scoring is vectorised over incidents x scenarios, so a day's incidents are matched in one pass;
``match_scenario`` is the one-incident form for readers and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import yaml

from bankanom_pipeline.generator.config import MockConfig, load_config
from bankanom_pipeline.generator.scenarios import signature_for

DEFAULT_PATH = Path(__file__).with_name("scenario_profiles.yaml")
USER_SHAPES = ("one", "many", "none")
IP_SHAPES = ("one", "few", "many", "any")
FOLLOW_UP_PREFIX = "follow-up action "


@dataclass(frozen=True)
class ScenarioProfile:
    id: str
    name: str
    severity: str  # the catalogue's severity, for the summary (incident severity is computed)
    summary: str  # the catalogue's signature sentence
    services: tuple[str, ...]
    templates: tuple[str, ...]  # lower-case substrings, follow-up steps included
    follow_ups: tuple[str, ...]
    features: dict[str, float]  # feature -> +1 (moves up) or -1 (moves down)
    users: tuple[str, ...]
    ips: str


@dataclass(frozen=True)
class Matching:
    weights: dict[str, float]
    full_deviation: float
    temperature: float
    min_events_for_entities: int
    min_events_for_absence: int


@dataclass(frozen=True)
class Catalogue:
    profiles: list[ScenarioProfile]
    matching: Matching

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.profiles]


@dataclass(frozen=True)
class Match:
    scenario_id: str
    scenario_name: str
    confidence: float
    score: float  # the raw 0..1 match score of the winner
    runners_up: list[tuple[str, str, float]] = field(default_factory=list)  # (id, name, confidence)


def load_catalogue(path: str | Path | None = None, mock_config: MockConfig | None = None) -> Catalogue:
    """Profiles for every enabled scenario of the generator config; an enabled scenario without a
    profile is an error (the matcher could never name it)."""
    raw = yaml.safe_load(Path(path or DEFAULT_PATH).read_text(encoding="utf-8"))
    config = mock_config or load_config()
    written = raw["scenarios"]
    profiles = []
    for scenario in config.enabled_scenarios:
        if scenario.id not in written:
            raise ValueError(f"scenario {scenario.id} ({scenario.base_name}) has no profile in {path}")
        entry = written[scenario.id]
        users = entry["users"] if isinstance(entry["users"], list) else [entry["users"]]
        bad = [u for u in users if u not in USER_SHAPES] + [entry["ips"]] * (entry["ips"] not in IP_SHAPES)
        if bad:
            raise ValueError(f"{scenario.id}: unknown users/ips shape {bad}")
        directions = {"up": 1.0, "down": -1.0}
        features = {f: directions[d] for f, d in entry["features"].items()}
        follow_ups = tuple(scenario.correlation_chain)
        templates = tuple(t.lower() for t in entry["templates"]) + tuple(
            f"{FOLLOW_UP_PREFIX}{step} " for step in follow_ups
        )
        profiles.append(
            ScenarioProfile(
                id=scenario.id,
                name=scenario.base_name,
                severity=scenario.severity,
                summary=signature_for(scenario).summary,
                services=tuple(scenario.source_services),
                templates=templates,
                follow_ups=follow_ups,
                features=features,
                users=tuple(users),
                ips=entry["ips"],
            )
        )
    m = raw["matching"]
    matching = Matching(
        weights={k: float(v) for k, v in m["weights"].items()},
        full_deviation=float(m["full_deviation"]),
        temperature=float(m["temperature"]),
        min_events_for_entities=int(m["min_events_for_entities"]),
        min_events_for_absence=int(m["min_events_for_absence"]),
    )
    return Catalogue(profiles, matching)


@cache
def default_catalogue() -> Catalogue:
    return load_catalogue()


def template_matches(templates: Sequence[str], catalogue: Catalogue) -> np.ndarray:
    """(len(templates), scenarios) bool: does each template belong to each scenario's vocabulary."""
    lowered = [t.lower() for t in templates]
    return np.array(
        [[any(s in t for s in p.templates) for p in catalogue.profiles] for t in lowered], dtype=bool
    ).reshape(len(lowered), len(catalogue.profiles))


def template_fit(counts: np.ndarray, templates: Sequence[str], catalogue: Catalogue) -> np.ndarray:
    """(incidents, scenarios) 0..1 from lines per template ``counts`` (incidents, templates).

    A line counts for every scenario whose vocabulary has its template, split between them: a "Login
    failed" line is a third of evidence each for BANK-001/002/004, a "Login velocity alert" line is
    whole evidence for BANK-002."""
    member = template_matches(templates, catalogue).astype(float)
    member /= np.maximum(member.sum(axis=1, keepdims=True), 1.0)
    return (counts @ member) / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


def tell_tale_coverage(counts: np.ndarray, templates: Sequence[str], catalogue: Catalogue) -> np.ndarray:
    """(incidents, scenarios) 0..1: the share of each scenario's tell-tale templates (vocabulary entries
    no other scenario has; follow-ups excluded, they come only sometimes) that the incident logged at
    least once. 1 for a scenario without tell-tales: nothing it lacks can speak against it."""
    lowered = [t.lower() for t in templates]
    seen = counts > 0
    out = np.ones((len(counts), len(catalogue.profiles)))
    for j, profile in enumerate(catalogue.profiles):
        own = [t for t in profile.templates if not t.startswith(FOLLOW_UP_PREFIX)]
        others = {t for p in catalogue.profiles if p.id != profile.id for t in p.templates}
        tells = [t for t in own if t not in others]
        if not tells:
            continue
        hits = np.array([[t in low for low in lowered] for t in tells], dtype=float)  # (tells, templates)
        out[:, j] = ((seen.astype(float) @ hits.T) > 0).mean(axis=1)
    return out


def service_membership(services: Sequence[str], catalogue: Catalogue) -> np.ndarray:
    """(len(services), scenarios) bool."""
    return np.array([[s in p.services for p in catalogue.profiles] for s in services], dtype=bool).reshape(
        len(services), len(catalogue.profiles)
    )


def service_fit(counts: np.ndarray, services: Sequence[str], catalogue: Catalogue) -> np.ndarray:
    """(incidents, scenarios) 0..1 from lines per service ``counts`` (incidents, services): half the
    share of lines on the scenario's services, half how many of its services the incident reached (of
    as many as its line count allows, since lines pick a service each)."""
    member = service_membership(services, catalogue).astype(float)
    events = np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    share = (counts @ member) / events
    reached = (counts > 0).astype(float) @ member
    size = np.array([len(p.services) for p in catalogue.profiles], dtype=float)[None, :]
    coverage = reached / np.maximum(np.minimum(size, events), 1.0)
    return 0.5 * share + 0.5 * np.clip(coverage, 0.0, 1.0)


def score_matrix(
    template_score: np.ndarray,
    service_score: np.ndarray,
    deviation: np.ndarray,
    feature_names: Sequence[str],
    user_count: np.ndarray,
    ip_count: np.ndarray,
    event_count: np.ndarray,
    no_user_share: np.ndarray,
    catalogue: Catalogue,
    coverage: np.ndarray | None = None,
) -> np.ndarray:
    """Match scores (incidents, scenarios), each 0..1.

    ``template_score`` / ``service_score``: (incidents, scenarios) from ``template_fit`` /
    ``service_fit``. ``deviation``: (incidents, features) the incident's
    typical robust z per feature (see incidents.py: the quartile furthest from 0). ``coverage``: from
    ``tell_tale_coverage``; in an incident of at least ``min_events_for_absence`` lines, a scenario's
    template part is scaled by (1 + coverage) / 2, so missing tell-tales count against it."""
    m = catalogue.matching
    n, k = len(event_count), len(catalogue.profiles)
    position = {f: i for i, f in enumerate(feature_names)}
    features = np.zeros((n, k))
    for j, profile in enumerate(catalogue.profiles):
        cols = [position[f] for f in profile.features if f in position]
        if not cols:
            continue
        signs = np.array([profile.features[feature_names[c]] for c in cols])
        moved = np.clip(deviation[:, cols] * signs / m.full_deviation, 0.0, 1.0)
        features[:, j] = moved.mean(axis=1)
    entities = _entity_fit(user_count, ip_count, event_count, no_user_share, catalogue)
    if coverage is not None:
        judged = (np.asarray(event_count) >= m.min_events_for_absence)[:, None]
        template_score = template_score * np.where(judged, (1.0 + coverage) / 2, 1.0)
    w = m.weights
    total = w["templates"] + w["features"] + w["services"] + w["entities"]
    return (
        w["templates"] * template_score
        + w["features"] * features
        + w["services"] * service_score
        + w["entities"] * entities
    ) / total


def _entity_fit(users, ips, events, no_user, catalogue: Catalogue) -> np.ndarray:
    users, ips, events = (np.asarray(a, dtype=float) for a in (users, ips, events))
    no_user = np.asarray(no_user, dtype=float)
    user_fit = {
        "one": np.select([users == 1, users == 2], [1.0, 0.3], 0.0) * (1 - no_user),
        "many": np.clip((users - 1) / 3, 0.0, 1.0),
        "none": no_user,
    }
    # share of lines that brought a new address: ~0 for one host, ~1 when every line has its own
    novelty = np.clip((ips - 1) / np.maximum(events - 1, 1), 0.0, 1.0)
    ip_fit = {
        "one": np.select([ips == 1, ips == 2], [1.0, 0.3], 0.0),
        "few": np.clip((0.6 - novelty) / 0.3, 0.0, 1.0) * (ips >= 1),
        "many": np.clip((novelty - 0.3) / 0.3, 0.0, 1.0) * (ips >= 3),
        "any": np.ones_like(ips),
    }
    out = np.empty((len(users), len(catalogue.profiles)))
    for j, p in enumerate(catalogue.profiles):
        u = np.max([user_fit[s] for s in p.users], axis=0)
        out[:, j] = (u + ip_fit[p.ips]) / 2
    # a line or two cannot show "many users" or "one IP": uninformative for everyone
    out[events < catalogue.matching.min_events_for_entities] = 0.5
    return out


def confidences(scores: np.ndarray, catalogue: Catalogue) -> np.ndarray:
    """Softmax over scenarios: how sure the winner is relative to the others."""
    z = scores / catalogue.matching.temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def best_matches(scores: np.ndarray, catalogue: Catalogue, runners_up: int = 2) -> list[Match]:
    conf = confidences(scores, catalogue)
    order = np.argsort(-scores, axis=1, kind="stable")
    names = [(p.id, p.name) for p in catalogue.profiles]
    out = []
    for i in range(len(scores)):
        top = order[i]
        best = int(top[0])
        out.append(
            Match(
                scenario_id=names[best][0],
                scenario_name=names[best][1],
                confidence=float(conf[i, best]),
                score=float(scores[i, best]),
                runners_up=[(*names[int(j)], float(conf[i, j])) for j in top[1 : 1 + runners_up]],
            )
        )
    return out


def match_scenario(
    services: Mapping[str, int],
    templates: Mapping[str, int],
    deviation: Mapping[str, float],
    user_count: int,
    ip_count: int,
    event_count: int | None = None,
    no_user_share: float = 0.0,
    catalogue: Catalogue | None = None,
    runners_up: int = 2,
) -> Match:
    """Best-matching scenario for one incident.

    ``services`` / ``templates``: lines per service / per masked template; ``deviation``: the incident's
    typical robust z per feature (missing features count as 0, i.e. normal)."""
    catalogue = catalogue or default_catalogue()
    events = event_count if event_count is not None else sum(templates.values())
    t_counts = np.array([list(templates.values())], dtype=float).reshape(1, len(templates))
    s_counts = np.array([list(services.values())], dtype=float).reshape(1, len(services))
    names = list(deviation)
    scores = score_matrix(
        template_fit(t_counts, list(templates), catalogue),
        service_fit(s_counts, list(services), catalogue),
        np.array([[deviation[f] for f in names]], dtype=float).reshape(1, len(names)),
        names,
        np.array([user_count]),
        np.array([ip_count]),
        np.array([events]),
        np.array([no_user_share]),
        catalogue,
        tell_tale_coverage(t_counts, list(templates), catalogue),
    )
    return best_matches(scores, catalogue, runners_up)[0]
