"""Vectorised generation of labelled mock traffic as a polars frame (one row per log line).

Normal lines and anomaly instances are drawn for a time range with numpy, whole columns at a time;
``render.to_json_lines`` turns the frame into the JSON log format. Everything is a function of the
config's seed and the range, so the same call always yields the same logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from bankanom_pipeline.generator.config import LOG_LEVELS, MockConfig, Template
from bankanom_pipeline.generator.placeholders import PLACEHOLDERS
from bankanom_pipeline.generator.population import Population, random_ips, random_regions
from bankanom_pipeline.generator.sampling import clip_metric, draw, sample_times, traffic
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


class Vocab:
    """Strings as small integer codes, so that columns stay numeric until rendering (-1 = null)."""

    def __init__(self, values=()):
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        for value in values:
            self.code(value)

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        if value not in self.index:
            self.index[value] = len(self.values)
            self.values.append(value)
        return self.index[value]

    def codes(self, values: np.ndarray) -> np.ndarray:
        return np.fromiter((self.code(v) for v in values), dtype=np.int32, count=len(values))


@dataclass
class Block:
    """Columns of generated lines before rendering. String columns hold vocabulary codes; metrics hold
    NaN where a line lacks the field."""

    ts: np.ndarray
    service: np.ndarray
    level: np.ndarray
    template: np.ndarray
    user: np.ndarray
    ip: np.ndarray  # uint32, 0 = none
    geo: np.ndarray
    r1: np.ndarray  # random number behind transaction/order/session ids
    corr: np.ndarray  # correlation key: lines with one key share a correlation_id
    metrics: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]

    def take(self, rows: np.ndarray) -> Block:
        core = ("ts", "service", "level", "template", "user", "ip", "geo", "r1", "corr")
        return Block(
            **{name: getattr(self, name)[rows] for name in core},
            metrics={k: v[rows] for k, v in self.metrics.items()},
            extra={k: v[rows] for k, v in self.extra.items()},
        )

    def frame(self) -> pl.DataFrame:
        columns = {
            "ts": self.ts,
            "service": self.service,
            "level": self.level,
            "template": self.template,
            "user": self.user,
            "ip": self.ip,
            "geo": self.geo,
            "r1": self.r1,
            "corr": self.corr,
            **{f"m_{k}": v for k, v in self.metrics.items()},
            **self.extra,
        }
        return pl.DataFrame([pl.Series(k, v, nan_to_null=True) for k, v in columns.items()])


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

    # -- public API ---------------------------------------------------------------------------
    def expected_rate(self, start_s: int, end_s: int) -> float:
        seconds = np.arange(start_s, end_s)
        return float(traffic(self.config, seconds).mean())

    def generate(self, start_s: int, end_s: int, *, clip: bool = True) -> pl.DataFrame:
        """Lines of [start_s, end_s) sorted by time. With ``clip=False``, instances that start in the range
        keep their events past its end (a streaming caller carries them into the next range)."""
        rng = np.random.default_rng([self.config.seed, start_s, end_s])
        seconds = np.arange(start_s, end_s)
        rate = traffic(self.config, seconds)
        expected = float(rate.sum())
        anomalous = self._anomalies(rng, start_s, end_s, expected)
        normal_count = rng.poisson(expected * (1 - self.config.global_anomaly_rate))
        normal = self._normal(rng, sample_times(rng, start_s, rate, normal_count))
        blocks = [b for b in (normal, anomalous) if b is not None and len(b.ts)]
        if not blocks:
            return _empty()
        block = _concat_blocks(blocks) if len(blocks) > 1 else blocks[0]
        order = np.argsort(block.ts, kind="stable")
        if clip:
            order = order[block.ts[order] < end_s * 1000]
        return block.take(order).frame()

    def strings(self, kind: str) -> pl.Series:
        """The vocabulary behind a code column, for ``pl.Series.gather``."""
        return pl.Series(self.vocab[kind].values, dtype=pl.String)

    def stream(self, start_s: int, end_s: int | None, chunk_s: int) -> Iterator[tuple[int, pl.DataFrame]]:
        """Frames of consecutive ``chunk_s`` ranges from ``start_s`` (forever if ``end_s`` is None), each
        with (chunk start, lines). Instances that outlast their chunk continue into the next one."""
        carry = None
        chunk_start = start_s
        while end_s is None or chunk_start < end_s:
            chunk_end = chunk_start + chunk_s if end_s is None else min(chunk_start + chunk_s, end_s)
            frame = self.generate(chunk_start, chunk_end, clip=False)
            if carry is not None and carry.height:
                frame = pl.concat([carry, frame], how="diagonal_relaxed").sort("ts", maintain_order=True)
            cut = chunk_end * 1000
            carry = frame.filter(pl.col("ts") >= cut)
            yield chunk_start, frame.filter(pl.col("ts") < cut)
            chunk_start = chunk_end
        # instances still running at end_s are cut off there

    def generate_n(self, n: int, start_s: int, chunk_s: int = 3600) -> Iterator[tuple[int, pl.DataFrame]]:
        """Chunks holding exactly ``n`` lines in all, from ``start_s`` on."""
        remaining = n
        for chunk_start, frame in self.stream(start_s, None, chunk_s):
            if remaining <= 0:
                return
            frame = frame.head(remaining)
            remaining -= frame.height
            yield chunk_start, frame

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

    def _normal(self, rng: np.random.Generator, ts: np.ndarray) -> Block:
        n = len(ts)
        templates = [t for t, _ in self._normal_templates]
        p = np.asarray([w for _, w in self._normal_templates])
        choice = rng.choice(len(templates), n, p=p / p.sum()).astype(np.int32)
        order = np.argsort(choice, kind="stable")
        bounds = np.searchsorted(choice[order], np.arange(len(templates) + 1))
        groups = {i: order[bounds[i] : bounds[i + 1]] for i in range(len(templates))}
        service = np.empty(n, dtype=np.int32)
        actors = {}
        services = self.vocab["service"]
        for i, rows in groups.items():
            options = np.asarray([services.code(x) for x in templates[i].services], dtype=np.int32)
            service[rows] = options[rng.integers(0, len(options), len(rows))]
            actors.setdefault(self._actor(templates[i]), []).append(rows)
        levels = np.asarray([self.vocab["level"].code(t.level) for t in templates], dtype=np.int32)
        user, ip, geo_ = self._actors(rng, n, {k: np.concatenate(v) for k, v in actors.items()}, service)
        block = Block(
            ts=ts,
            service=service,
            level=levels[choice],
            template=choice,  # normal templates are the first vocabulary entries, in this order
            user=user,
            ip=ip,
            geo=geo_,
            r1=rng.integers(0, 2**63, n, dtype=np.int64),
            corr=rng.integers(0, 2**63, n, dtype=np.int64),
            metrics={},
            extra={},
        )
        self._service_metrics(rng, block)
        for i, rows in groups.items():
            self._template_metrics(rng, block, templates[i], rows)
        self._clip(block)
        return block

    def _actors(self, rng, n: int, actors: dict[str, np.ndarray], service: np.ndarray):
        pop = self.population
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
                travel = rows[rng.random(len(rows)) < self.config.population.travel_share]
                countries = pop.normal_countries[rng.integers(0, len(pop.normal_countries), len(travel))]
                ip[travel] = random_ips(rng, countries)
                geo_[travel] = self.vocab["geo"].codes(random_regions(rng, countries))
        account = actors.get("service_account", np.empty(0, dtype=np.int64))
        user[account] = SERVICE_ACCOUNT
        ip[account] = _internal_ip(5, rng.integers(1, 255, len(account)))
        system = actors.get("system", np.empty(0, dtype=np.int64))
        ip[system] = self._host_ips(rng, service[system])
        return user, ip, geo_

    def _host_ips(self, rng, service_codes: np.ndarray) -> np.ndarray:
        return _internal_ip(service_codes + 1, rng.integers(1, 9, len(service_codes)))

    # -- metrics --------------------------------------------------------------------------------
    def _set(self, block: Block, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        column = block.metrics.get(name)
        if column is None:
            column = block.metrics[name] = np.full(len(block.ts), np.nan)
        column[rows] = values

    def _draw(self, rng, spec: list, rows: np.ndarray, block: Block) -> np.ndarray:
        epoch_s = block.ts[rows] // 1000
        if spec[0] == "traffic":  # follows the traffic rate, bursts included
            return spec[1] * traffic(self.config, epoch_s) * rng.lognormal(0.0, spec[2], len(rows))
        return draw(rng, spec, len(rows), epoch_s, self.config)

    def _service_metrics(self, rng, block: Block) -> None:
        for service, specs in SERVICE_METRICS.items():
            code = self.vocab["service"].index.get(service)
            rows = np.flatnonzero(block.service == code)
            if not len(rows):
                continue
            for name, spec in specs.items():
                self._set(block, name, rows, self._draw(rng, spec, rows, block))

    def _template_metrics(self, rng, block: Block, template: Template, rows: np.ndarray) -> None:
        if not len(rows):
            return
        for name, spec in template.metrics.items():
            self._set(block, name, rows, self._draw(rng, spec, rows, block))
        for _, placeholder in template.parts:
            name = PLACEHOLDERS.get(placeholder) if placeholder else None
            if name is None or name == "amount":
                continue
            column = block.metrics.get(name)
            missing = rows if column is None else rows[np.isnan(column[rows])]
            if len(missing):
                self._set(block, name, missing, self._draw(rng, METRIC_FALLBACK[name], missing, block))
        if "{amount}" in template.template:
            self._amounts(rng, block, rows)

    def _amounts(self, rng, block: Block, rows: np.ndarray) -> None:
        """A customer's amounts follow their own habit; other lines use the population's spread."""
        pop = self.population
        users = block.user[rows]
        known = users >= 0
        values = draw(rng, METRIC_FALLBACK["amount"], len(rows), block.ts[rows] // 1000, self.config)
        u = users[known]
        values[known] = rng.lognormal(pop.amount_mu[u], pop.amount_sigma[u])
        self._set(block, "amount", rows, values)

    def _clip(self, block: Block) -> None:
        for name, values in block.metrics.items():
            present = ~np.isnan(values)
            values[present] = clip_metric(name, values[present])

    # -- anomalies ------------------------------------------------------------------------------
    def _anomalies(self, rng, start_s: int, end_s: int, expected_total: float) -> Block | None:
        config = self.config
        scenarios = config.enabled_scenarios
        if config.global_anomaly_rate == 0 or not scenarios:
            return None
        weights = np.asarray([s.frequency_weight for s in scenarios], dtype=float)
        weights /= weights.sum()
        mean_size = float(np.dot(weights, [mean_events(s) for s in scenarios]))
        instances = rng.poisson(config.global_anomaly_rate * expected_total / mean_size)
        counts = rng.multinomial(instances, weights)
        blocks = [
            self._scenario_block(rng, s, int(k), start_s, end_s)
            for s, k in zip(scenarios, counts, strict=True)
            if k > 0
        ]
        if not blocks:
            return None
        return _concat_blocks(blocks)

    def _scenario_block(self, rng, scenario, k: int, start_s: int, end_s: int) -> Block:
        signature = signature_for(scenario)
        low, high = signature.events(scenario)
        sizes = rng.integers(max(1, low), max(low, high) + 1, k)
        minutes_low, minutes_high = signature.minutes(scenario)
        duration_ms = rng.uniform(minutes_low, minutes_high, k) * 60_000
        start_ms = rng.uniform(start_s * 1000, end_s * 1000, k)
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
            metrics={},
            extra={
                "scenario": np.full(n, text.code(scenario.id), dtype=np.int32),
                "instance_no": first + 1 + instance,
                "instance_uid": rng.integers(0, 2**63, k, dtype=np.int64)[instance],
                "confidence": np.round(rng.uniform(0.8, 0.99, k), 2)[instance],
                "payload": text.codes(x.out.get("payload", np.full(n, None, dtype=object))),
                "correlation_event": np.full(n, -1, dtype=np.int32),
            },
        )
        self._service_metrics(rng, block)
        for name, values in x.metrics.items():
            self._set(block, name, np.arange(n), values)
        for code in np.unique(block.template):
            rows = np.flatnonzero(block.template == code)
            text_ = self.vocab["template"].values[code]
            spec = Template(template=text_, level=scenario.log_level, services=[scenario.source_services[0]])
            self._template_metrics(rng, block, spec, rows)
        self._clip(block)
        if scenario.correlation_chain:
            block = _concat_blocks([block, self._follow_ups(rng, scenario, block, sizes)])
        return block

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
            metrics={},
            extra=extra,
        )


def _internal_ip(subnet, host) -> np.ndarray:
    return (np.uint32(10) << 24) | (np.asarray(subnet, dtype=np.uint32) << 16) | np.asarray(host, np.uint32)


def _concat_blocks(blocks: list[Block]) -> Block:
    names = sorted({name for b in blocks for name in b.metrics})
    extras = sorted({key for b in blocks for key in b.extra})

    def metric(name: str) -> np.ndarray:
        return np.concatenate([b.metrics.get(name, np.full(len(b.ts), np.nan)) for b in blocks])

    def column(attribute: str) -> np.ndarray:
        return np.concatenate([getattr(b, attribute) for b in blocks])

    return Block(
        **{a: column(a) for a in ("ts", "service", "level", "template", "user", "ip", "geo", "r1", "corr")},
        metrics={name: metric(name) for name in names},
        extra={key: np.concatenate([_extra(b, key) for b in blocks]) for key in extras},
    )


_EXTRA_MISSING = {
    "scenario": -1,
    "instance_no": 0,
    "instance_uid": 0,
    "confidence": np.nan,
    "payload": -1,
    "correlation_event": -1,
}


def _extra(block: Block, key: str) -> np.ndarray:
    if key in block.extra:
        return block.extra[key]
    return np.full(len(block.ts), _EXTRA_MISSING[key])


def _empty() -> pl.DataFrame:
    columns = ("ts", "service", "level", "template", "user", "ip", "geo", "r1", "corr")
    return pl.DataFrame(schema=dict.fromkeys(columns, pl.Int64))


__all__ = ["METRICS", "Generator"]
