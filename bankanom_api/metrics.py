"""Prometheus metrics of the API: requests and latency per route, what is being served."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from bankanom_api.state import ServingState

log = logging.getLogger("bankanom_api")

# ms-scale buckets: the targets are 10-150 ms
_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()  # per app: tests build several apps in one process
        self.requests = Counter(
            "bankanom_api_requests_total",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bankanom_api_request_seconds",
            "Request latency",
            ["route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.predicted = Counter(
            "bankanom_api_predicted_events_total",
            "Events scored by /predict",
            ["model"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "bankanom_api_model_info",
            "Served model versions (value 1)",
            ["model", "version"],
            registry=self.registry,
        )
        self.snapshot_age = Gauge(
            "bankanom_api_snapshot_age_seconds", "Age of the served snapshot", registry=self.registry
        )
        self.failures = Gauge(
            "bankanom_api_reload_failures", "Models or snapshots that failed to load", registry=self.registry
        )
        self.refused = Counter(
            "bankanom_api_refused_events_total",
            "Posted events refused with 422, per route and reason (missing_field, non_finite, invalid)",
            ["route", "reason"],
            registry=self.registry,
        )
        # the live stream's status as its last commit wrote it to the live store (None: no store), once built
        self.stream_status: Callable[[], dict | None] | None = None
        self.registry.register(_StreamStatus(self))

    def refuse(self, route: str, errors: list[dict]) -> None:
        """Count the posted events a 422 refused: each event once, under its first error's reason (an
        error outside any event, e.g. a body that is not JSON, counts as one)."""
        reasons: dict[object, str] = {}
        for error in errors:
            loc = error.get("loc") or ()
            event = tuple(loc[:3]) if len(loc) >= 3 and loc[1] == "events" else tuple(loc[:2])
            reasons.setdefault(event, _reason(error.get("type", "")))
        for reason in reasons.values():
            self.refused.labels(route, reason).inc()

    def refresh(self, state: ServingState) -> None:
        """Set at scrape time, from what is being served at that moment."""
        self.model_info.clear()
        if state.models:
            for name, version in state.models.versions.items():
                self.model_info.labels(name, version).set(1)
        self.snapshot_age.set(time.time() - state.snapshot.loaded_at if state.snapshot else float("nan"))
        self.failures.set(state.reload_failures)


def _reason(error_type: str) -> str:
    if error_type == "missing":
        return "missing_field"
    if error_type == "finite_number":
        return "non_finite"
    return "invalid"


# gauge name -> (the status key it reads, help)
STREAM_GAUGES = {
    "bankanom_stream_lag_events": ("lag_events", "Events the live stream is behind its source's head"),
    "bankanom_stream_lag_seconds": ("lag_seconds", "Seconds the live stream is behind its source's head"),
    "bankanom_stream_events": ("events", "Events the live stream accepted, scored and committed"),
    "bankanom_stream_open_incidents": (
        "open_incidents",
        "Live incidents still open (new flagged events may still join them), as the stream counted them",
    ),
    "bankanom_stream_waiting_template_events": (
        "waiting_template_events",
        "Flagged rare-template events whose template link waits for their entity group to close",
    ),
    "bankanom_stream_incidents": ("incidents", "Live incidents in the live store, not merged into another"),
}


class _StreamStatus(Collector):
    """The live stream's figures, read at scrape time from the live store's ``meta.status`` (rewritten by
    the stream with each commit), so every API worker exports the same values: lag, events committed,
    refused lines by reason, open live incidents, and how old the status is (a stream that stopped
    committing shows as a growing age)."""

    def __init__(self, metrics: ApiMetrics):
        self.metrics = metrics

    def collect(self):
        read = self.metrics.stream_status
        try:
            status = read() if read else None
        except Exception as error:  # an unreadable store: up 0, and the scrape still answers
            log.error("the live stream's status cannot be read: %s", error)
            status = None
        yield GaugeMetricFamily(
            "bankanom_stream_up",
            "1 when the live store holds a status from the stream, else 0",
            value=0 if status is None else 1,
        )
        if status is None:
            return
        for name, (key, description) in STREAM_GAUGES.items():
            value = status.get(key)
            if value is not None:
                yield GaugeMetricFamily(name, description, value=float(value))
        refused = GaugeMetricFamily(
            "bankanom_stream_refused_events", "Lines the live stream refused, by reason", labels=["reason"]
        )
        for reason, n in sorted((status.get("refused") or {}).items()):
            refused.add_metric([reason], n)
        yield refused
        yield from _timings(status.get("timings"))
        if status.get("at") is not None:
            yield GaugeMetricFamily(
                "bankanom_stream_status_age_seconds",
                "Seconds since the live stream's last commit wrote its status",
                value=max(0.0, time.time() - float(status["at"])),
            )


def _timings(timings: dict | None):
    """The stream's batch figures (``live/timings.py``'s summary in its status): batches, each stage's
    seconds and its longest, the batches' wall times as a histogram, the garbage collector's seconds by
    generation and the background root-cause passes. Counters since the stream's start (a restart
    resets them, as Prometheus expects of a counter). docs/live.md#where-a-batchs-time-goes."""
    if not timings:
        return
    yield CounterMetricFamily(
        "bankanom_stream_batches", "Batches the live stream committed", value=timings["batches"]
    )
    stages = CounterMetricFamily(
        "bankanom_stream_stage_seconds",
        "Wall seconds of the live stream's batches in each stage",
        labels=["stage"],
    )
    longest = GaugeMetricFamily(
        "bankanom_stream_stage_max_seconds", "The longest one batch spent in each stage", labels=["stage"]
    )
    for stage, seconds in timings["stage_total_s"].items():
        stages.add_metric([stage], seconds)
        longest.add_metric([stage], timings["stage_max_s"].get(stage, 0.0))
    yield stages
    yield longest
    cumulative, buckets = 0, []
    for bound, count in timings["wall_le_s"].items():
        cumulative += count
        buckets.append(("+Inf" if bound == "inf" else bound, cumulative))
    yield HistogramMetricFamily(
        "bankanom_stream_batch_seconds",
        "Wall seconds of each live stream batch (a stall holds every event behind it)",
        buckets=buckets,
        sum_value=timings.get("wall_total_s"),
    )
    collected = CounterMetricFamily(
        "bankanom_stream_gc_seconds",
        "Seconds the live stream's garbage collections held its threads, by generation",
        labels=["generation"],
    )
    worst = GaugeMetricFamily(
        "bankanom_stream_gc_max_seconds", "The live stream's longest garbage collection, by generation",
        labels=["generation"],
    )  # fmt: skip
    for generation, (seconds, most) in enumerate(
        zip(timings["gc_seconds"], timings["gc_max_s"], strict=True)
    ):
        collected.add_metric([str(generation)], seconds)
        worst.add_metric([str(generation)], most)
    yield collected
    yield worst
    background = timings.get("rca_in_background")
    if background:
        yield CounterMetricFamily(
            "bankanom_stream_background_rca_seconds",
            "Seconds of large live incidents' root-cause passes run beside the batches",
            value=background["seconds"],
        )
        yield CounterMetricFamily(
            "bankanom_stream_background_rca_passes", "Those passes completed", value=background["passes"]
        )


class MetricsMiddleware:
    """Pure ASGI (no per-request task switch as with BaseHTTPMiddleware): times every request and labels
    it with its route template, so /incidents/INC-1 and /incidents/INC-2 share a series."""

    def __init__(self, app, metrics: ApiMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope["method"]
            self.metrics.latency.labels(path, method).observe(time.perf_counter() - began)
            self.metrics.requests.labels(path, method, str(status["code"])).inc()
