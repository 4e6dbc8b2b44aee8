"""Vectorised generation of labelled mock traffic (one row per log line).

Normal lines and anomaly instances are drawn for a time range with numpy, whole columns at a time, as
``Lines`` (or a polars frame); ``render`` turns them into the JSON log format. Everything is a function
of the config's seed and the range, so the same call always yields the same logs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import polars as pl

from bankanom_pipeline import geo
from bankanom_pipeline.generator.config import LOG_LEVELS, MockConfig, Template
from bankanom_pipeline.generator.lines import Block, Group, Lines, Vocab, concat_blocks
from bankanom_pipeline.generator.placeholders import PLACEHOLDERS
from bankanom_pipeline.generator.population import Population
from bankanom_pipeline.generator.sampling import Categorical, clip_metric, draw, mix64, season, traffic
from bankanom_pipeline.generator.scenarios import FOLLOW_UP, Instances, mean_events, signature_for
from bankanom_pipeline.metrics_catalogue import METRICS

SYSTEM_SERVICES = frozenset({"postgres-db", "monitoring-agent", "kafka-connector"})
SERVICE_ACCOUNT = -2  # user index of svc-reporting; -1 is "no user"
NO_USER = -1

# Metric distributions of normal traffic per service ([kind, *params], see sampling.draw).
SERVICE_METRICS: dict[str, dict[str, list]] = {
    "api-gateway": {
        "response_time_ms": ["lognormal", 80, 0.5],
        "requests_per_second": ["traffic", 10.0, 0.08],
        "error_rate": ["beta", 2, 400],
        "timeout_rate": ["beta", 4, 400],
    },
    "auth-service": {"response_time_ms": ["lognormal", 120, 0.4], "success_rate": ["beta", 97, 3]},
    "transaction-service": {"response_time_ms": ["lognormal", 150, 0.4], "timeout_rate": ["beta", 4, 400]},
    "fraud-detection-service": {"response_time_ms": ["lognormal", 60, 0.4], "risk_score": ["beta", 2, 20]},
    "payment-gateway": {"response_time_ms": ["lognormal", 200, 0.4]},
    "postgres-db": {
        "query_time_ms": ["lognormal", 5, 0.8],
        "active_connections": ["seasonal", 30, 0.12],
        "max_connections": ["const", 100],
        "replication_lag_s": ["lognormal", 0.8, 0.35],
        "error_rate": ["beta", 1, 500],
    },
    "monitoring-agent": {
        "cache_hit_rate": ["beta", 950, 45],
        "cpu_percent": ["seasonal", 35, 0.15],
        "files_modified": ["poisson", 3],
    },
    "audit-trail": {"records_accessed": ["int", 1, 5], "bytes_out": ["lognormal", 8000, 0.7]},
    "user-management-service": {
        "records_accessed": ["int", 1, 3],
        "response_time_ms": ["lognormal", 90, 0.4],
    },
    "kafka-connector": {
        "consumer_lag": ["lognormal", 150, 0.6],
        "requests_per_second": ["traffic", 30.0, 0.08],
    },
    "notification-service": {"response_time_ms": ["lognormal", 250, 0.5]},
}
# Used when a template names a metric its service does not emit by default.
METRIC_FALLBACK: dict[str, list] = {
    "response_time_ms": ["lognormal", 120, 0.5],
    "query_time_ms": ["lognormal", 5, 0.8],
    "amount": ["lognormal", 120, 0.9],
    "records_accessed": ["int", 1, 3],
    "bytes_out": ["lognormal", 8000, 0.7],
    "failed_attempts": ["int", 1, 2],
    "unique_ips": ["int", 1, 2],
    "unique_users": ["const", 1],
    "requests_per_second": ["traffic", 10.0, 0.08],
    "replication_lag_s": ["lognormal", 0.8, 0.35],
    "cache_hit_rate": ["beta", 950, 45],
    "active_connections": ["seasonal", 30, 0.12],
    "max_connections": ["const", 100],
    "risk_score": ["beta", 2, 20],
    "files_modified": ["poisson", 3],
    "consumer_lag": ["lognormal", 150, 0.6],
    "vpn_connections": ["int", 1, 3],
    "concurrent_sessions": ["int", 1, 2],
}
# Levels the config has no template for still need lines (the predecessor's file only has DEBUG/INFO).
FALLBACK_TEMPLATES = {
    "DEBUG": "Heartbeat from {service_name}",
    "INFO": "Routine operation completed by {service_name}",
    "WARN": "Degraded response from {service_name}: {response_time}ms",
    "ERROR": "Request to {endpoint} failed in {service_name}",
    "CRITICAL": "Critical failure reported by {service_name}",
}


class Clock:
    """Traffic rate and seasonal factor of each second of a range, so that per-line draws look them up
    instead of recomputing them (lines past the range, which instances may have, are computed)."""

    def __init__(self, config: MockConfig, start_s: int, end_s: int):
        self.config, self.start_s, self.end_s = config, start_s, end_s
        seconds = np.arange(start_s, end_s)
        self.rate = traffic(config, seconds)
        self._season = season(config, seconds)

    def traffic(self, ts_ms: np.ndarray) -> np.ndarray:
        return self._at(ts_ms, self.rate, traffic)

    def season(self, ts_ms: np.ndarray) -> np.ndarray:
        return self._at(ts_ms, self._season, season)

    def _at(self, ts_ms: np.ndarray, table: np.ndarray, compute) -> np.ndarray:
        second = ts_ms // 1000 - self.start_s
        if len(second) and (second.min() < 0 or second.max() >= len(table)):
            return compute(self.config, ts_ms // 1000)
        return table[second]


class Generator:
    """Draws mock traffic for time ranges. Keep one instance to continue instance numbering."""

    def __init__(self, config: MockConfig):
        self.config = config
        self.population = Population.build(config)
        self.services = np.asarray(config.service_sources, dtype=object)
        self.instance_counts: dict[str, int] = {}
        self._normal_templates = self._resolve_normal_templates()
        self.vocab = {
            "service": Vocab(config.service_sources),
            "level": Vocab(LOG_LEVELS),
            "template": Vocab(t.template for t, _ in self._normal_templates),
            "geo": Vocab(),
            "text": Vocab(),  # payloads, correlation events, scenario ids
        }
        self.home_geo = self.vocab["geo"].codes(self.population.region)
        self.vpn_geo = self.vocab["geo"].codes(self.population.vpn_region)
        weights = np.asarray([w for _, w in self._normal_templates])
        self._templates = Categorical(weights / weights.sum())
        self._anomaly_metric_specs: dict[tuple[int, str], dict[str, list]] = {}
        self._normal_metrics = {
            (i, self.vocab["service"].index[s]): self._metric_specs(t, s)
            for i, (t, _) in enumerate(self._normal_templates)
            for s in t.services
        }

    # -- public API ---------------------------------------------------------------------------
    def expected_rate(self, start_s: int, end_s: int) -> float:
        seconds = np.arange(start_s, end_s)
        return float(traffic(self.config, seconds).mean())

    def lines(self, start_s: int, end_s: int, *, clip: bool = True) -> Lines:
        """Lines of [start_s, end_s). With ``clip=False``, instances that start in the range keep their
        events past its end (a streaming caller carries them into the next range)."""
        rng = np.random.default_rng([self.config.seed, start_s, end_s])
        clock = Clock(self.config, start_s, end_s)
        anomalous = self._anomalies(rng, clock)
        lines = Lines(self._normal(rng, clock), anomalous)
        return lines.split(end_s * 1000)[0] if clip else lines

    def generate(self, start_s: int, end_s: int, *, clip: bool = True) -> pl.DataFrame:
        """``lines`` as one frame sorted by time."""
        return self.lines(start_s, end_s, clip=clip).frame()

    def strings(self, kind: str) -> pl.Series:
        """The vocabulary behind a code column, for ``pl.Series.gather``."""
        return pl.Series(self.vocab[kind].values, dtype=pl.String)

    def stream_lines(self, start_s: int, end_s: int | None, chunk_s: int) -> Iterator[tuple[int, Lines]]:
        """Lines of consecutive ``chunk_s`` ranges from ``start_s`` (forever if ``end_s`` is None), each
        with (chunk start, lines). Instances that outlast their chunk continue into the next one.

        The stream starts warm: instances that began up to the longest scenario duration before
        ``start_s`` contribute their remaining lines, so the anomaly share is at its steady level from
        the first second (a cold start would show almost no anomalies for minutes)."""
        carry = self._warm_carry(start_s)
        chunk_start = start_s
        while end_s is None or chunk_start < end_s:
            chunk_end = chunk_start + chunk_s if end_s is None else min(chunk_start + chunk_s, end_s)
            lines = self.lines(chunk_start, chunk_end, clip=False)
            if carry is not None and len(carry):  # only anomalous lines outlast their range
                anomalous = [carry] if lines.anomalous is None else [carry, lines.anomalous]
                lines = Lines(lines.normal, concat_blocks(anomalous).sorted())
            lines, later = lines.split(chunk_end * 1000)
            carry = later.anomalous
            yield chunk_start, lines
            chunk_start = chunk_end
        # instances still running at end_s are cut off there

    def _warm_carry(self, start_s: int) -> Block | None:
        scenarios = self.config.enabled_scenarios
        if not scenarios or self.config.global_anomaly_rate == 0:
            return None
        longest_s = math.ceil(max(signature_for(s).minutes(s)[1] for s in scenarios) * 60)
        rng = np.random.default_rng([self.config.seed, start_s, 0xA11])
        before = self._anomalies(rng, Clock(self.config, start_s - longest_s, start_s))
        return None if before is None else before.split(start_s * 1000)[1]

    def lines_n(self, n: int, start_s: int, chunk_s: int = 3600) -> Iterator[tuple[int, Lines]]:
        """Chunks holding exactly ``n`` lines in all, from ``start_s`` on."""
        remaining = n
        for chunk_start, lines in self.stream_lines(start_s, None, chunk_s):
            if remaining <= 0:
                return
            lines = lines.head(remaining)
            remaining -= len(lines)
            yield chunk_start, lines

    def stream(self, start_s: int, end_s: int | None, chunk_s: int) -> Iterator[tuple[int, pl.DataFrame]]:
        """``stream_lines`` as frames."""
        for chunk_start, lines in self.stream_lines(start_s, end_s, chunk_s):
            yield chunk_start, lines.frame()

    def generate_n(self, n: int, start_s: int, chunk_s: int = 3600) -> Iterator[tuple[int, pl.DataFrame]]:
        """``lines_n`` as frames."""
        for chunk_start, lines in self.lines_n(n, start_s, chunk_s):
            yield chunk_start, lines.frame()

    # -- normal traffic -------------------------------------------------------------------------
    def _resolve_normal_templates(self) -> list[tuple[Template, float]]:
        levels = self.config.log_levels
        total = sum(levels.values())
        resolved: list[tuple[Template, float]] = []
        for level in LOG_LEVELS:
            share = levels.get(level, 0.0) / total
            if share == 0:
                continue
            own = [t for t in self.config.normal_log_templates if t.level == level]
            if not own:
                own = [
                    Template(template=FALLBACK_TEMPLATES[level], level=level, services=list(self.services))
                ]
            weight_sum = sum(t.weight for t in own)
            resolved.extend((t, share * t.weight / weight_sum) for t in own)
        return resolved

    def _actor(self, template: Template) -> str:
        if template.actor:
            return template.actor
        return "system" if set(template.services) <= SYSTEM_SERVICES else "user"

    def _metric_specs(self, template: Template, service: str) -> dict[str, list]:
        """Metrics of a template's lines from one service: the service's own, the template's overrides,
        and a default for every metric the message names; "amount" follows the user (see _amounts)."""
        specs = {**SERVICE_METRICS.get(service, {}), **template.metrics}
        for _, placeholder in template.parts:
            name = PLACEHOLDERS.get(placeholder) if placeholder else None
            if name is not None and name != "amount" and name not in specs:
                specs[name] = METRIC_FALLBACK[name]
        if "{amount}" in template.template:
            specs["amount"] = ["user_amount"]
        return specs

    def _normal(self, rng: np.random.Generator, clock: Clock) -> Block:
        """Normal lines, in time order: Poisson counts per second, then each line's template, service,
        actor and metrics."""
        counts = rng.poisson(clock.rate * (1 - self.config.global_anomaly_rate))
        n = int(counts.sum())
        # milliseconds since the range's start; 32-bit integers sort faster, if the range allows
        width = np.int32 if 1000 * len(counts) < 2**31 else np.int64
        offset = np.repeat(np.arange(0, 1000 * len(counts), 1000, dtype=width), counts)
        offset += rng.integers(0, 1000, n, dtype=width)
        ts = np.sort(offset) + np.int64(clock.start_s) * 1000
        templates = [t for t, _ in self._normal_templates]
        choice = self._templates.draw(rng, n)
        groups = _groups(choice, len(templates))
        services = self.vocab["service"]
        service = np.empty(n, dtype=np.int32)
        actors: dict[str, list[np.ndarray]] = {}
        for i, rows in enumerate(groups):
            options = np.asarray([services.code(x) for x in templates[i].services], dtype=np.int32)
            service[rows] = options[rng.integers(0, len(options), len(rows))]
            actors.setdefault(self._actor(templates[i]), []).append(rows)
        codes = self.vocab["template"].codes(np.asarray([t.template for t in templates], dtype=object))
        levels = np.asarray([self.vocab["level"].code(t.level) for t in templates], dtype=np.int32)
        user, ip, geo_ = self._actors(rng, ts, {k: np.concatenate(v) for k, v in actors.items()}, service)
        block = Block(
            ts=ts,
            service=service,
            level=levels[choice],
            template=codes[choice],
            user=user,
            ip=ip,
            geo=geo_,
            r1=rng.integers(0, 2**63, n, dtype=np.int64),
            corr=rng.integers(0, 2**63, n, dtype=np.int64),
        )
        block.groups = [
            Group(same, self._draw_metrics(rng, clock, block, same, self._normal_metrics[(i, code)]))
            for i, rows in enumerate(groups)
            for code, same in _split_by(service, rows)
        ]
        return block

    def _actors(self, rng, ts: np.ndarray, actors: dict[str, np.ndarray], service: np.ndarray):
        pop, n = self.population, len(ts)
        user = np.full(n, NO_USER, dtype=np.int64)
        ip = np.zeros(n, dtype=np.uint32)
        geo_ = np.full(n, -1, dtype=np.int32)
        for kind in ("user", "vpn_user", "staff"):
            rows = actors.get(kind)
            if rows is None or not len(rows):
                continue
            chosen = pop.pick(rng, len(rows), kind)
            user[rows] = chosen
            if kind == "vpn_user":
                ip[rows], geo_[rows] = pop.vpn_ip[chosen], self.vpn_geo[chosen]
            elif kind == "staff":
                ip[rows] = _internal_ip(20, rng.integers(1, 1 << 16, len(rows)))
                geo_[rows] = self.home_geo[chosen]
            else:
                ip[rows] = pop.home_ips[chosen, rng.integers(0, 2, len(rows))]
                geo_[rows] = self.home_geo[chosen]
                self._abroad(rows, chosen, ts[rows] // 86_400_000, ip, geo_)
        account = actors.get("service_account", np.empty(0, dtype=np.int64))
        user[account] = SERVICE_ACCOUNT
        ip[account] = _internal_ip(5, rng.integers(1, 255, len(account)))
        system = actors.get("system", np.empty(0, dtype=np.int64))
        ip[system] = self._host_ips(rng, service[system])
        return user, ip, geo_

    def _abroad(self, rows, users, days, ip, geo_) -> None:
        """Customers who spend the day abroad use one foreign IP and region all that day: whether, where
        and from which address follow from (seed, user, day), so every chunk of the day agrees."""
        pop = self.population
        salt = (self.config.seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        key = mix64(users.astype(np.uint64) * np.uint64(1_000_003) + days.astype(np.uint64), salt)
        away = (key % np.uint64(1_000_000)) < np.uint64(self.config.population.travel_share * 1_000_000)
        if not away.any():
            return
        key, rows = key[away], rows[away]
        countries = pop.normal_countries[(key >> np.uint64(20)) % np.uint64(len(pop.normal_countries))]
        for country in np.unique(countries):
            mask = countries == country
            octets = np.asarray(geo.first_octets(str(country)), dtype=np.uint64)
            first = octets[(key[mask] >> np.uint64(8)) % np.uint64(len(octets))]
            ip[rows[mask]] = (
                (first << np.uint64(24)) | ((key[mask] >> np.uint64(32)) & np.uint64(0xFFFF00)) | np.uint64(7)
            ).astype(np.uint32)
            regions = geo.regions(str(country))
            codes = np.asarray([self.vocab["geo"].code(r) for r in regions], dtype=np.int32)
            geo_[rows[mask]] = codes[(key[mask] >> np.uint64(40)) % np.uint64(len(codes))]

    def _host_ips(self, rng, service_codes: np.ndarray) -> np.ndarray:
        return _internal_ip(service_codes + 1, rng.integers(1, 9, len(service_codes)))

    # -- metrics --------------------------------------------------------------------------------
    def _draw_metrics(self, rng, clock: Clock, block: Block, rows: np.ndarray, specs: dict) -> dict:
        """The metrics ``specs`` names for the lines at ``rows``: drawn, clipped and rounded."""
        metrics = {}
        for name, spec in specs.items():
            kind = spec[0]
            if kind == "user_amount":
                values = self._amounts(rng, block, rows)
            elif kind == "traffic":  # follows the traffic rate, bursts included
                values = spec[1] * clock.traffic(block.ts[rows]) * rng.lognormal(0.0, spec[2], len(rows))
            elif kind == "seasonal":  # a gauge that follows the daily/weekly load, with multiplicative noise
                values = spec[1] * clock.season(block.ts[rows]) * rng.lognormal(0.0, spec[2], len(rows))
            else:
                values = draw(rng, spec, len(rows), None, self.config)
            metrics[name] = clip_metric(name, values)
        return metrics

    def _set_metrics(self, rng, clock: Clock, block: Block, rows: np.ndarray, specs: dict) -> None:
        for name, values in self._draw_metrics(rng, clock, block, rows, specs).items():
            block.set(name, rows, values)

    def _amounts(self, rng, block: Block, rows: np.ndarray) -> np.ndarray:
        """A customer's amounts follow their own habit; other lines use the population's spread."""
        pop = self.population
        users = block.user[rows]
        known = users >= 0
        values = draw(rng, METRIC_FALLBACK["amount"], len(rows), None, self.config)
        u = users[known]
        values[known] = rng.lognormal(pop.amount_mu[u], pop.amount_sigma[u])
        return values

    # -- anomalies ------------------------------------------------------------------------------
    def _anomalies(self, rng, clock: Clock) -> Block | None:
        """Anomaly instances starting in the range, all their lines in one block sorted by time."""
        config = self.config
        expected_total = float(clock.rate.sum())
        scenarios = config.enabled_scenarios
        if config.global_anomaly_rate == 0 or not scenarios:
            return None
        weights = np.asarray([s.frequency_weight for s in scenarios], dtype=float)
        weights /= weights.sum()
        # a plain sum: np.dot would wake OpenBLAS threads, which then spin for a while
        mean_size = sum(w * mean_events(s) for w, s in zip(weights.tolist(), scenarios, strict=True))
        instances = rng.poisson(config.global_anomaly_rate * expected_total / mean_size)
        counts = rng.multinomial(instances, weights)
        blocks = [
            self._scenario_block(rng, clock, s, int(k))
            for s, k in zip(scenarios, counts, strict=True)
            if k > 0
        ]
        if not blocks:
            return None
        return concat_blocks(blocks).sorted()

    def _scenario_block(self, rng, clock: Clock, scenario, k: int) -> Block:
        signature = signature_for(scenario)
        low, high = signature.events(scenario)
        sizes = rng.integers(max(1, low), max(low, high) + 1, k)
        minutes_low, minutes_high = signature.minutes(scenario)
        duration_ms = rng.uniform(minutes_low, minutes_high, k) * 60_000
        start_ms = rng.uniform(clock.start_s * 1000, clock.end_s * 1000, k)
        instance = np.repeat(np.arange(k), sizes)
        position = np.arange(len(instance)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        services = np.asarray(scenario.source_services, dtype=object)
        x = Instances(
            scenario=scenario,
            rng=rng,
            population=self.population,
            k=k,
            instance=instance,
            position=position,
            size_k=sizes,
            service=services[rng.integers(0, len(services), len(instance))],
        )
        signature.build(x)
        n = x.n
        ts = (
            start_ms[instance] + (position + rng.random(n)) / sizes[instance] * duration_ms[instance]
        ).astype(np.int64)
        user = x.out.get("user", np.full(n, NO_USER)).astype(np.int64)
        ip = x.out.get("ip", np.zeros(n, dtype=np.uint32)).astype(np.uint32)
        geo_ = self.vocab["geo"].codes(x.out.get("geo", np.full(n, None, dtype=object)))
        service = self.vocab["service"].codes(x.service)
        system = x.out.get("system", np.zeros(n, dtype=bool))
        user[system], geo_[system] = NO_USER, -1
        ip[system] = self._host_ips(rng, service[system])
        r1 = rng.integers(0, 2**63, n, dtype=np.int64)
        if "shared_id" in x.out:
            r1 = rng.integers(0, 2**63, k, dtype=np.int64)[instance]
        first = self.instance_counts.get(scenario.id, 0)
        self.instance_counts[scenario.id] = first + k
        text = self.vocab["text"]
        block = Block(
            ts=ts,
            service=service,
            level=np.full(n, self.vocab["level"].code(scenario.log_level), dtype=np.int32),
            template=self.vocab["template"].codes(x.out["template"]),
            user=user,
            ip=ip,
            geo=geo_,
            r1=r1,
            corr=rng.integers(0, 2**63, n, dtype=np.int64),
            extra={
                "scenario": np.full(n, text.code(scenario.id), dtype=np.int32),
                "instance_no": first + 1 + instance,
                "instance_uid": rng.integers(0, 2**63, k, dtype=np.int64)[instance],
                "confidence": np.round(rng.uniform(0.8, 0.99, k), 2)[instance],
                "payload": text.codes(x.out.get("payload", np.full(n, None, dtype=object))),
                "correlation_event": np.full(n, -1, dtype=np.int32),
            },
        )
        self._anomaly_metrics(rng, clock, block, x.metrics, scenario)
        if scenario.correlation_chain:
            block = concat_blocks([block, self._follow_ups(rng, scenario, block, sizes)])
        return block

    def _anomaly_metrics(self, rng, clock: Clock, block: Block, signature: dict, scenario) -> None:
        """An anomaly block's metrics: its services' own, then the signature's, then defaults for what
        each template's message names and a line lacks. The draws come in the order the generator has
        always made them, so anomalies are the same as before for a seed and a range."""
        for service, specs in SERVICE_METRICS.items():
            rows = np.flatnonzero(block.service == self.vocab["service"].index.get(service))
            if len(rows):
                self._set_metrics(rng, clock, block, rows, specs)
        for name, values in signature.items():
            block.set(name, slice(None), clip_metric(name, values))
        for code in np.unique(block.template):
            rows = np.flatnonzero(block.template == code)
            for name, spec in self._anomaly_specs(int(code), scenario).items():
                if name in signature:  # the scenario's own value (e.g. BANK-003's amount) wins
                    continue
                lacking = rows
                if name != "amount" and name in block.metrics:  # a service's amount follows the user
                    lacking = rows[np.isnan(block.metrics[name][rows])]
                if len(lacking):
                    self._set_metrics(rng, clock, block, lacking, {name: spec})

    def _anomaly_specs(self, template_code: int, scenario) -> dict[str, list]:
        """Metrics that an anomaly template's message names (see _metric_specs), cached per template."""
        key = (template_code, scenario.id)
        if key not in self._anomaly_metric_specs:
            text_ = self.vocab["template"].values[template_code]
            spec = Template(template=text_, level=scenario.log_level, services=[scenario.source_services[0]])
            self._anomaly_metric_specs[key] = self._metric_specs(spec, "")
        return self._anomaly_metric_specs[key]

    def _follow_ups(self, rng, scenario, block: Block, sizes: np.ndarray) -> Block:
        """The correlation_chain: one line per step after each instance's last event, same subject."""
        last = np.cumsum(sizes) - 1
        steps = len(scenario.correlation_chain)
        parent = np.repeat(last, steps)
        step = np.tile(np.arange(steps), len(last))
        delay = np.cumsum(rng.uniform(5_000, 60_000, (len(last), steps)), axis=1).ravel().astype(np.int64)
        n = len(parent)
        extra = {key: values[parent] for key, values in block.extra.items()}
        events = self.vocab["text"].codes(np.asarray(scenario.correlation_chain, dtype=object))
        extra["correlation_event"] = events[step]
        return Block(
            ts=block.ts[parent] + delay,
            service=np.full(n, self.vocab["service"].code(scenario.source_services[0]), dtype=np.int32),
            level=block.level[parent],
            template=np.full(n, self.vocab["template"].code(FOLLOW_UP), dtype=np.int32),
            user=block.user[parent],
            ip=block.ip[parent],
            geo=block.geo[parent],
            r1=block.r1[parent],
            corr=block.corr[parent],
            extra=extra,
        )


def _groups(codes: np.ndarray, count: int) -> list[np.ndarray]:
    """Row indices per code 0..count-1 (each in increasing order)."""
    small = codes.astype(np.uint8 if count <= 256 else np.int64)  # 8-bit keys sort in linear time
    order = np.argsort(small, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=count))])
    return [order[bounds[i] : bounds[i + 1]] for i in range(count)]


def _split_by(values: np.ndarray, rows: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(value, rows having it) for the distinct values of ``values`` at ``rows``."""
    if not len(rows):
        return
    selected = values[rows]
    first = selected[0]
    if (selected == first).all():
        yield int(first), rows
        return
    order = np.argsort(selected, kind="stable")
    ordered = selected[order]
    for part in np.split(order, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1):
        yield int(selected[part[0]]), rows[part]


def _internal_ip(subnet, host) -> np.ndarray:
    return (np.uint32(10) << 24) | (np.asarray(subnet, dtype=np.uint32) << 16) | np.asarray(host, np.uint32)


__all__ = ["METRICS", "Block", "Generator", "Lines"]
