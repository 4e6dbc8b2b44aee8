"""The numeric fields a log's ``metrics`` object may carry: one declaration shared by the generator
(what to emit, how to round it) and by validation (what is physically possible)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    integer: bool
    lower: float = 0.0
    upper: float | None = None  # None: unbounded above
    decimals: int = 2
    description: str = ""


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("response_time_ms", False, decimals=1, description="latency of the logged request"),
        Metric("requests_per_second", False, decimals=1, description="service request rate gauge"),
        Metric("error_rate", False, upper=1.0, decimals=4, description="share of failed requests"),
        Metric("timeout_rate", False, upper=1.0, decimals=4, description="share of timed-out requests"),
        Metric("success_rate", False, upper=1.0, decimals=4, description="login success share"),
        Metric("failed_attempts", True, description="consecutive failed logins for the subject"),
        Metric("unique_ips", True, description="distinct source IPs seen for the subject"),
        Metric("unique_users", True, description="distinct users targeted from the source"),
        Metric("attempts_per_minute", False, decimals=1, description="login attempts per minute"),
        Metric("amount", False, decimals=2, description="transaction or payment amount"),
        Metric("risk_score", False, upper=1.0, decimals=3, description="fraud screening score"),
        Metric("query_time_ms", False, decimals=2, description="database query latency"),
        Metric("active_connections", True, description="open database connections"),
        Metric("max_connections", True, description="connection pool size"),
        Metric("replication_lag_s", False, decimals=2, description="replica lag behind primary"),
        Metric("cache_hit_rate", False, upper=1.0, decimals=4, description="cache hit share"),
        Metric("cpu_percent", False, upper=100.0, decimals=1, description="host CPU utilisation"),
        Metric("records_accessed", True, description="customer records read by the action"),
        Metric("bytes_out", True, description="bytes sent out by the action"),
        Metric("concurrent_sessions", True, description="live sessions of the user"),
        Metric("vpn_connections", True, description="VPN connections of the user today"),
        Metric("files_modified", True, description="files modified on the host in the last minute"),
        Metric("consumer_lag", True, description="Kafka consumer lag in records"),
    )
}
