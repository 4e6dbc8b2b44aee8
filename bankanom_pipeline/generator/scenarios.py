"""The signature of each anomaly scenario: how an *instance* of it shows up in the logs.

An instance spans several correlated events over a time window. Events reuse the templates of normal
traffic wherever a real system would (a brute force is a storm of ordinary "Login failed" lines), so that
detection has to rely on behaviour, not on a give-away message. The ``intensity`` keys of each scenario
in the config parameterise its signature. ``docs/scenarios.md`` is generated from ``SIGNATURES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bankanom_pipeline import geo
from bankanom_pipeline.generator.config import Scenario
from bankanom_pipeline.generator.population import Population, by_value, random_ips, random_regions

LOGIN_FAILED = "Login failed for user {user_id} from {ip_address}: invalid credentials"
LOGIN_OK = "User {user_id} logged in successfully from {ip_address}"
SESSION_OK = "User session {session_id} validated"
FOLLOW_UP = "Follow-up action {correlation_event} started"
GENERIC = "Unusual activity in {service_name}: {response_time}ms"


@dataclass
class Instances:
    """Events of ``k`` instances of one scenario; arrays are per event unless named ``*_k``."""

    scenario: Scenario
    rng: np.random.Generator
    population: Population
    k: int
    instance: np.ndarray  # event -> instance index
    position: np.ndarray  # 0-based index of the event inside its instance
    size_k: np.ndarray  # events per instance
    service: np.ndarray  # drawn from the scenario's source_services
    out: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.instance)

    @property
    def progress(self) -> np.ndarray:
        """Position in (0, 1) through the instance."""
        return (self.position + 0.5) / self.size_k[self.instance]

    @property
    def swell(self) -> np.ndarray:
        """0..1..0 over the instance: a problem that builds up and recovers."""
        return np.sqrt(np.sin(np.pi * self.progress))

    def param(self, key: str, default):
        return self.scenario.intensity.get(key, default)

    def per_instance(self, values_k: np.ndarray) -> np.ndarray:
        return values_k[self.instance]

    def uniform(self, low: float, high: float) -> np.ndarray:
        return self.rng.uniform(low, high, self.n)

    def victims(self, kind: str = "user") -> np.ndarray:
        """One user per instance, repeated over its events."""
        return self.per_instance(self.population.pick(self.rng, self.k, kind))

    def distinct_users(self) -> np.ndarray:
        return self.population.pick(self.rng, self.n, "user")

    def countries(self, options, count: int, attack_share: float = 1.0) -> np.ndarray:
        options = np.asarray(list(options) or geo.ATTACK_COUNTRIES, dtype=object)
        normal = self.population.normal_countries
        picked = options[self.rng.integers(0, len(options), count)]
        swap = self.rng.random(count) >= attack_share
        picked[swap] = normal[self.rng.integers(0, len(normal), swap.sum())]
        return picked

    def set_location(self, ips: np.ndarray, countries: np.ndarray) -> None:
        self.out["ip"] = ips
        self.out["geo"] = random_regions(self.rng, countries)

    def attacker_pool(self, pool_size: int, countries_k: np.ndarray, networks: int = 1) -> None:
        """Each instance attacks from its own pool of ``pool_size`` IPs, rented in ``networks`` /24
        blocks of one country (attack infrastructure comes in blocks, not as scattered single hosts)."""
        country = self.per_instance(countries_k)
        blocks = random_ips(self.rng, np.repeat(countries_k, networks)).reshape(self.k, networks)
        block = blocks[np.arange(self.k)[:, None], self.rng.integers(0, networks, (self.k, pool_size))]
        hosts = self.rng.integers(1, 255, (self.k, pool_size), dtype=np.uint32)
        pool = (block & np.uint32(0xFFFFFF00)) | hosts
        ips = pool[self.instance, self.rng.integers(0, pool_size, self.n)]
        self.out["ip"] = ips
        self.out["geo"] = random_regions(self.rng, country)

    def home_of(self, users: np.ndarray) -> None:
        pop = self.population
        self.out["user"] = users
        self.out["ip"] = pop.home_ips[users, self.rng.integers(0, 2, self.n)]
        self.out["geo"] = pop.region[users]

    def running_count(self) -> np.ndarray:
        return (self.position + 1).astype(float)

    def templates(self, by_service: dict[str, list[tuple[str, float]]]) -> None:
        """Pick a template per event among the ones listed for its service."""
        chosen = np.empty(self.n, dtype=object)
        for service, rows in by_value(self.service):
            options = by_service.get(str(service)) or [(GENERIC, 1.0)]
            texts = np.asarray([t for t, _ in options], dtype=object)
            weights = np.asarray([w for _, w in options], dtype=float)
            chosen[rows] = texts[self.rng.choice(len(texts), len(rows), p=weights / weights.sum())]
        self.out["template"] = chosen


@dataclass(frozen=True)
class Signature:
    summary: str  # what moves and how far, for docs and root-cause explanations
    moves: tuple[str, ...]  # fields and metrics that carry the signal
    events: Callable[[Scenario], tuple[int, int]]
    minutes: Callable[[Scenario], tuple[float, float]]
    build: Callable[[Instances], None]


def _p(scenario: Scenario, key: str, default):
    return scenario.intensity.get(key, default)


def _login_failure_spike(x: Instances) -> None:
    x.home_of(x.victims())
    x.set_location(*_one_ip_per_instance(x, attack_share=0.6))
    x.templates({s: [(LOGIN_FAILED, 1.0)] for s in ("auth-service", "api-gateway")})
    x.metrics["failed_attempts"] = x.running_count()
    x.metrics["unique_ips"] = np.ones(x.n)
    x.metrics["success_rate"] = x.uniform(0.0, 0.2)


def _one_ip_per_instance(x: Instances, attack_share: float) -> tuple[np.ndarray, np.ndarray]:
    countries_k = x.countries(geo.ATTACK_COUNTRIES, x.k, attack_share)
    return x.per_instance(random_ips(x.rng, countries_k)), x.per_instance(countries_k)


def _brute_force(x: Instances) -> None:
    x.out["user"] = x.distinct_users()
    x.attacker_pool(int(x.param("unique_ips", 10)), x.countries(geo.ATTACK_COUNTRIES, x.k, 0.8))
    x.templates(
        {
            "auth-service": [
                (LOGIN_FAILED, 0.85),
                ("Authentication rate limit exceeded for {ip_address}", 0.15),
            ],
            "api-gateway": [
                (LOGIN_FAILED, 0.7),
                ("Authentication rate limit exceeded for {ip_address}", 0.3),
            ],
            "fraud-detection-service": [("Login velocity alert for {ip_address}: {unique_users} users", 1.0)],
        }
    )
    x.metrics["attempts_per_minute"] = float(x.param("attempts_per_minute", 50)) * x.uniform(0.8, 1.2)
    x.metrics["failed_attempts"] = np.floor(x.uniform(1, 3))
    x.metrics["unique_users"] = x.running_count()
    x.metrics["success_rate"] = x.uniform(0.0, 0.05)


def _transaction_amount(x: Instances) -> None:
    users = x.victims()
    x.home_of(users)
    low, high = (float(v) for v in x.param("normal_amount_range", [100, 5000]))
    typical = np.clip(np.exp(x.population.amount_mu[users]), low / 10, high)
    x.metrics["amount"] = typical * float(x.param("amount_multiplier", 10.0)) * x.uniform(1.0, 3.0)
    x.out["shared_id"] = np.ones(x.n, dtype=bool)  # one transaction id across the instance
    x.templates(
        {
            "transaction-service": [
                ("Transaction {transaction_id} processed successfully for amount ${amount}", 1.0)
            ],
            "fraud-detection-service": [
                ("Transaction {transaction_id} held for review, risk {risk_score}", 1)
            ],
        }
    )
    x.metrics["risk_score"] = x.uniform(0.4, 0.8)


def _credential_stuffing(x: Instances) -> None:
    x.out["user"] = x.distinct_users()
    x.attacker_pool(30, x.countries(geo.ATTACK_COUNTRIES, x.k, 0.5), networks=3)
    success = float(x.param("success_rate", 0.02))
    options = [(LOGIN_FAILED, 1 - success), (LOGIN_OK, success)]
    x.templates({"auth-service": options, "api-gateway": options})
    x.metrics["success_rate"] = np.clip(x.rng.normal(success, success / 2, x.n), 0, 1)
    x.metrics["failed_attempts"] = np.ones(x.n)
    x.metrics["unique_users"] = x.running_count()
    total, minutes = float(x.param("total_attempts", 1000)), 15.0
    x.metrics["attempts_per_minute"] = total / minutes * x.uniform(0.7, 1.3)


def _geographic(x: Instances) -> None:
    x.out["user"] = x.victims()
    countries_k = x.countries(x.param("unusual_countries", geo.ATTACK_COUNTRIES), x.k)
    x.set_location(x.per_instance(random_ips(x.rng, countries_k)), x.per_instance(countries_k))
    x.templates(
        {
            "auth-service": [(LOGIN_OK, 0.6), (SESSION_OK, 0.4)],
            "user-management-service": [("Customer profile updated by {user_id}", 1.0)],
        }
    )


def _pii_access(x: Instances) -> None:
    staff = x.population.pick(x.rng, x.k, "staff")
    users = x.population.pick(x.rng, x.k, "user")
    x.home_of(x.per_instance(np.where(x.rng.random(x.k) < 0.5, staff, users)))
    accounts = float(x.param("accounts_accessed", 50))
    x.metrics["records_accessed"] = accounts * x.uniform(0.3, 1.0)
    x.templates(
        {
            "user-management-service": [("Customer record {customer_id} viewed by {user_id}", 1.0)],
            "audit-trail": [("Bulk lookup of {records_accessed} customer records by {user_id}", 1.0)],
        }
    )


def _session_hijacking(x: Instances) -> None:
    users = x.victims()
    x.home_of(users)
    countries_k = x.countries(geo.ATTACK_COUNTRIES, x.k, 0.5)
    hijacker_ip = x.per_instance(random_ips(x.rng, countries_k))
    hijacker_geo = random_regions(x.rng, x.per_instance(countries_k))
    odd = x.position % 2 == 1
    x.out["ip"] = np.where(odd, hijacker_ip, x.out["ip"])
    x.out["geo"] = np.where(odd, hijacker_geo, x.out["geo"])
    x.out["shared_id"] = np.ones(x.n, dtype=bool)  # the same session id from two places
    concurrent = float(x.param("concurrent_sessions", 3))
    x.metrics["concurrent_sessions"] = np.floor(x.uniform(concurrent, concurrent + 3))
    options = [(SESSION_OK, 0.7), ("Concurrent session detected for user {user_id} from {ip_address}", 0.3)]
    x.templates({"auth-service": options, "api-gateway": options})


def _vpn(x: Instances) -> None:
    x.out["user"] = x.victims()
    countries = x.countries(x.param("suspicious_vpn_countries", ["RU", "CN", "IR"]), x.n)
    x.set_location(random_ips(x.rng, countries), countries)
    vpn = [("VPN connection established for user {user_id} from {ip_address}", 1.0)]
    x.templates({"auth-service": vpn, "api-gateway": vpn})
    x.metrics["vpn_connections"] = x.running_count() + 1


def _timeouts(x: Instances) -> None:
    x.home_of(x.distinct_users())
    normal, peak = float(x.param("normal_timeout_rate", 0.01)), float(x.param("timeout_rate", 0.15))
    x.metrics["timeout_rate"] = normal + (peak - normal) * x.swell * x.uniform(0.8, 1.2)
    x.metrics["response_time_ms"] = x.rng.lognormal(np.log(6000), 0.4, x.n)
    options = [
        ("Upstream timeout calling {endpoint} after {response_time}ms", 0.7),
        ("Upstream call to {endpoint} slow: {response_time}ms", 0.3),
    ]
    x.templates({"api-gateway": options, "transaction-service": options})


def _db_connections(x: Instances) -> None:
    x.home_of(x.distinct_users())
    system = x.service == "postgres-db"
    x.out["system"] = system
    top = float(x.param("max_connections", 100))
    x.metrics["active_connections"] = x.uniform(float(x.param("active_connections", 95)), top)
    x.metrics["max_connections"] = np.full(x.n, top)
    x.metrics["error_rate"] = float(x.param("error_rate", 0.10)) * x.uniform(0.7, 1.3)
    x.templates(
        {
            "postgres-db": [
                (
                    "Database connection failed: pool exhausted ({active_connections}/{max_connections})",
                    1.0,
                )
            ],
            "transaction-service": [("Transaction {transaction_id} failed: database unavailable", 1.0)],
            "auth-service": [("Login for user {user_id} failed: database unavailable", 1.0)],
        }
    )


def _cache(x: Instances) -> None:
    x.out["system"] = np.ones(x.n, dtype=bool)
    target = float(x.param("cache_hit_rate", 0.60))
    x.metrics["cache_hit_rate"] = 0.955 - (0.955 - target) * x.swell * x.uniform(0.9, 1.1)
    x.metrics["response_time_ms"] = x.rng.lognormal(np.log(250), 0.4, x.n)
    options = [("Cache hit rate {cache_hit_rate}", 0.6), ("Cache miss storm on key {cache_key}", 0.4)]
    x.templates({"monitoring-agent": options, "api-gateway": options})


def _replication(x: Instances) -> None:
    x.out["system"] = np.ones(x.n, dtype=bool)
    normal, peak = float(x.param("normal_lag_seconds", 1)), float(x.param("lag_seconds", 30))
    x.metrics["replication_lag_s"] = normal + (peak - normal) * x.swell * x.uniform(0.8, 1.2)
    lag = [("Replica is {replication_lag}s behind primary", 1.0)]
    x.templates({"postgres-db": lag, "monitoring-agent": lag})


def _ddos(x: Instances) -> None:
    countries = x.countries(geo.ATTACK_COUNTRIES, x.n, 0.5)
    x.set_location(random_ips(x.rng, countries), countries)
    rps = float(x.param("requests_per_second", 10000))
    x.metrics["requests_per_second"] = rps * (0.3 + 0.7 * x.swell) * x.uniform(0.8, 1.2)
    x.metrics["unique_ips"] = float(x.param("source_ip_count", 1000)) * x.uniform(0.5, 1.5)
    x.metrics["response_time_ms"] = x.rng.lognormal(np.log(3000), 0.5, x.n)
    x.metrics["error_rate"] = x.uniform(0.2, 0.6)
    x.templates(
        {
            "api-gateway": [
                ("Traffic spike: {requests_per_second} req/s from {unique_ips} sources", 0.6),
                ("Request to {endpoint} failed with status 503", 0.4),
            ],
            "fraud-detection-service": [("Bot traffic score high from {ip_address}", 1.0)],
        }
    )


def _sql_injection(x: Instances) -> None:
    x.set_location(*_one_ip_per_instance(x, attack_share=0.7))
    payloads = np.asarray(x.param("payloads", ["' OR 1=1 --"]), dtype=object)
    x.out["payload"] = payloads[x.rng.integers(0, len(payloads), x.n)]
    x.metrics["error_rate"] = x.uniform(0.3, 0.9)
    x.templates(
        {
            "api-gateway": [("Request blocked: suspicious parameter {payload} on {endpoint}", 1.0)],
            "postgres-db": [("Query syntax error near {payload}", 1.0)],
            "fraud-detection-service": [("Injection signature detected from {ip_address}", 1.0)],
        }
    )


def _exfiltration(x: Instances) -> None:
    x.home_of(x.victims())
    records = float(x.param("records_exported", 10000)) / x.size_k[x.instance]
    x.metrics["records_accessed"] = records * x.uniform(0.5, 1.5)
    x.metrics["bytes_out"] = x.metrics["records_accessed"] * x.uniform(20_000, 60_000)
    export = [("Scheduled export of {records_accessed} records completed ({bytes_out} bytes)", 1.0)]
    x.templates(
        {
            "user-management-service": export,
            "audit-trail": export,
            "postgres-db": [("Large result set of {records_accessed} rows returned to {user_id}", 1.0)],
        }
    )


def _ransomware(x: Instances) -> None:
    x.out["system"] = np.ones(x.n, dtype=bool)
    files = float(x.param("encrypted_files", 1000))
    x.metrics["files_modified"] = files * (0.3 + 0.7 * x.swell) * x.uniform(0.8, 1.5)
    x.metrics["cpu_percent"] = x.uniform(85, 100)
    x.templates(
        {
            "monitoring-agent": [
                ("Mass file modification on {service_name}: {files_modified} files changed", 1.0)
            ],
            "audit-trail": [("Backup verification failed for {service_name}", 1.0)],
            "postgres-db": [("Tablespace files unreadable on {service_name}", 1.0)],
        }
    )


def _generic(x: Instances) -> None:
    x.home_of(x.distinct_users())
    x.metrics["error_rate"] = x.uniform(0.2, 0.6)
    x.metrics["response_time_ms"] = x.rng.lognormal(np.log(3000), 0.5, x.n)
    x.templates({})


def _fixed(events: tuple[int, int]) -> Callable[[Scenario], tuple[int, int]]:
    return lambda _scenario: events


def _minutes(low: float, high: float) -> Callable[[Scenario], tuple[float, float]]:
    return lambda _scenario: (low, high)


SIGNATURES: dict[str, Signature] = {
    "BANK-001": Signature(
        "One victim user gets min..max_attempts failed logins from one IP within time_window_minutes; "
        "failed_attempts counts up past the 1-2 a forgetful user produces, success_rate drops to 0-0.2.",
        ("failed_attempts", "success_rate", "per-user failed logins", "ip_address"),
        lambda s: (int(_p(s, "min_attempts", 5)), int(_p(s, "max_attempts", 15))),
        lambda s: (0.5 * float(_p(s, "time_window_minutes", 5)), float(_p(s, "time_window_minutes", 5))),
        _login_failure_spike,
    ),
    "BANK-002": Signature(
        "A pool of unique_ips attacker IPs in one /24 network fails logins against many different users at "
        "~attempts_per_minute for duration_minutes; unique_users climbs per source, success_rate < 0.05.",
        ("attempts_per_minute", "unique_users", "per-IP distinct users", "per-IP failure rate"),
        _fixed((24, 36)),
        lambda s: (0.8 * float(_p(s, "duration_minutes", 3)), 1.2 * float(_p(s, "duration_minutes", 3))),
        _brute_force,
    ),
    "BANK-003": Signature(
        "A user's transaction of amount_multiplier x to 3x their usual amount, then a fraud hold on the "
        "same transaction id with risk_score 0.4-0.8.",
        ("amount vs the user's own history", "risk_score"),
        _fixed((2, 4)),
        _minutes(1, 5),
        _transaction_amount,
    ),
    "BANK-004": Signature(
        "~total_attempts logins sampled 1:20 from 30 proxy IPs in three /24 networks (half inside the bank's "
        "countries), each "
        "against a different user, once; success_rate ~ the configured 2%; a few 'logged in' lines.",
        ("success_rate", "unique_users", "attempts_per_minute", "per-IP distinct users"),
        _fixed((40, 60)),
        _minutes(10, 20),
        _credential_stuffing,
    ),
    "BANK-005": Signature(
        "A user's logins and profile updates come from one of unusual_countries, far from the home region.",
        ("geo_location vs the user's home", "ip_address country", "travel velocity"),
        _fixed((3, 8)),
        _minutes(5, 30),
        _geographic,
    ),
    "BANK-006": Signature(
        "A staff or customer account reads customer records in bulk: records_accessed per event 30-100% "
        "of accounts_accessed (normal views read 1-3) within time_window_minutes.",
        ("records_accessed", "per-user records in window"),
        _fixed((10, 25)),
        lambda s: (0.5 * float(_p(s, "time_window_minutes", 10)), float(_p(s, "time_window_minutes", 10))),
        _pii_access,
    ),
    "BANK-007": Signature(
        "One session id validated alternately from the user's home and from a far country; "
        "concurrent_sessions >= concurrent_sessions (normal 1-2).",
        ("concurrent_sessions", "distinct IPs/geos per user", "travel velocity"),
        _fixed((4, 10)),
        _minutes(2, 10),
        _session_hijacking,
    ),
    "BANK-008": Signature(
        "A user who never used a VPN connects ~connection_frequency times through exits in "
        "suspicious_vpn_countries; vpn_connections counts up (normal VPN users: 1-3 a day).",
        ("vpn_connections", "geo_location vs home", "distinct IPs per user"),
        lambda s: (
            int(_p(s, "connection_frequency", 10)),
            int(1.5 * float(_p(s, "connection_frequency", 10))),
        ),
        _minutes(10, 30),
        _vpn,
    ),
    "BANK-009": Signature(
        "A service's timeout_rate swells from normal_timeout_rate to timeout_rate and recovers over "
        "duration_minutes; timeout lines with response_time_ms ~6 s from many users.",
        ("timeout_rate", "response_time_ms", "per-service error share"),
        _fixed((15, 30)),
        lambda s: (0.6 * float(_p(s, "duration_minutes", 5)), float(_p(s, "duration_minutes", 5))),
        _timeouts,
    ),
    "BANK-010": Signature(
        "The connection pool runs at active_connections..max_connections (normal 20-80) with error_rate "
        "~error_rate; dependent services log 'database unavailable'.",
        ("active_connections", "error_rate", "per-service error share"),
        _fixed((10, 25)),
        _minutes(3, 8),
        _db_connections,
    ),
    "BANK-011": Signature(
        "cache_hit_rate sinks from ~0.955 towards cache_hit_rate and recovers over duration_minutes; "
        "response_time_ms rises to ~250 ms.",
        ("cache_hit_rate", "response_time_ms"),
        _fixed((10, 20)),
        lambda s: (0.6 * float(_p(s, "duration_minutes", 10)), float(_p(s, "duration_minutes", 10))),
        _cache,
    ),
    "BANK-012": Signature(
        "replication_lag_s rises from normal_lag_seconds to ~lag_seconds and recovers (normal ~0.8 s).",
        ("replication_lag_s",),
        _fixed((8, 16)),
        _minutes(5, 15),
        _replication,
    ),
    "BANK-013": Signature(
        "requests_per_second near requests_per_second (normal ~100, x3 in bursts) from ~source_ip_count "
        "IPs, each line from a new IP; error_rate 0.2-0.6, response_time_ms ~3 s.",
        ("requests_per_second", "unique_ips", "error_rate", "response_time_ms"),
        _fixed((30, 60)),
        lambda s: (
            0.7 * float(_p(s, "attack_duration_minutes", 15)),
            1.2 * float(_p(s, "attack_duration_minutes", 15)),
        ),
        _ddos,
    ),
    "BANK-014": Signature(
        "One IP sends the configured payloads; blocked-request and query-syntax-error lines carry them; "
        "error_rate 0.3-0.9.",
        ("message template", "error_rate", "per-IP error share"),
        _fixed((10, 25)),
        _minutes(2, 6),
        _sql_injection,
    ),
    "BANK-015": Signature(
        "A customer or staff account exports ~records_exported records over time_window_minutes through "
        "the export path normally used only by svc-reporting; bytes_out 20-60 kB per record.",
        ("records_accessed", "bytes_out", "actor of exports"),
        _fixed((8, 20)),
        lambda s: (0.5 * float(_p(s, "time_window_minutes", 30)), float(_p(s, "time_window_minutes", 30))),
        _exfiltration,
    ),
    "BANK-016": Signature(
        "files_modified per minute near encrypted_files (normal ~3), cpu_percent 85-100, backup "
        "verification and tablespace failures.",
        ("files_modified", "cpu_percent", "message template"),
        _fixed((15, 30)),
        _minutes(5, 20),
        _ransomware,
    ),
}
GENERIC_SIGNATURE = Signature(
    "A scenario without a built-in signature: error_rate 0.2-0.6 and response_time_ms ~3 s on its services.",
    ("error_rate", "response_time_ms"),
    _fixed((5, 15)),
    _minutes(2, 10),
    _generic,
)


def signature_for(scenario: Scenario) -> Signature:
    return SIGNATURES.get(scenario.id, GENERIC_SIGNATURE)


def mean_events(scenario: Scenario) -> float:
    """Expected log lines per instance, follow-up events included."""
    low, high = signature_for(scenario).events(scenario)
    return (low + high) / 2 + len(scenario.correlation_chain)


def catalogue_markdown(config) -> str:
    """The scenario catalogue as Markdown (docs/scenarios.md is this, for the default config)."""
    lines = [
        "# Anomaly scenario signatures",
        "",
        "Generated by `bankanom scenarios` from `bankanom_pipeline/generator/scenarios.py` and the default",
        "config; a test keeps this file in step with the code. An *instance* is several correlated log lines",
        "over a time window; `correlation_chain` steps follow its last line as `Follow-up action` lines.",
        "Intensity keys named below come from each scenario's `intensity` block in the config.",
        "",
    ]
    for scenario in config.anomaly_scenarios:
        signature = signature_for(scenario)
        low, high = signature.events(scenario)
        minutes = signature.minutes(scenario)
        lines += [
            f"## {scenario.id} {scenario.base_name}",
            "",
            f"- type / category / severity: {scenario.type} / {scenario.category} / {scenario.severity}; "
            f"level {scenario.log_level}; weight {scenario.frequency_weight:g}",
            f"- services: {', '.join(scenario.source_services)}",
            f"- lines per instance: {low}-{high} (+{len(scenario.correlation_chain)} follow-ups: "
            f"{', '.join(scenario.correlation_chain) or 'none'}) over {minutes[0]:g}-{minutes[1]:g} minutes",
            f"- signature: {signature.summary}",
            f"- signal carried by: {', '.join(signature.moves)}",
            "",
        ]
    return "\n".join(lines)
