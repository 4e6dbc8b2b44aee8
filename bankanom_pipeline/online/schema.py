"""What the online engine computes: features_events' columns in order, and the time constants of the
windows."""

from __future__ import annotations

# features_events' numeric feature columns, in its order
FEATURES: tuple[str, ...] = (
    "level_num",
    "hour_sin",
    "hour_cos",
    "is_weekend",
    "template_rarity",
    "rare_quiet_country",
    "response_time_ms",
    "requests_per_second",
    "error_rate",
    "timeout_rate",
    "success_rate",
    "failed_attempts",
    "unique_ips",
    "unique_users",
    "attempts_per_minute",
    "amount",
    "risk_score",
    "query_time_ms",
    "connection_pool_use",
    "replication_lag_s",
    "cache_hit_rate",
    "cpu_percent",
    "records_accessed",
    "bytes_out",
    "concurrent_sessions",
    "vpn_connections",
    "files_modified",
    "consumer_lag",
    "user_events_10m",
    "user_failed_logins_10m",
    "user_distinct_ips_1h",
    "user_distinct_countries_1h",
    "user_vpn_connections_1h",
    "user_records_10m",
    "user_bytes_out_30m",
    "user_country_share",
    "user_ip_share",
    "session_distinct_ips",
    "user_amount_z",
    "travel_km",
    "travel_speed_kmh",
    "ip_events_10m",
    "ip_distinct_users_10m",
    "ip_failed_logins_10m",
    "ip_error_events_10m",
    "network_distinct_users_10m",
    "network_distinct_ips_10m",
    "network_failed_logins_10m",
    "service_events_vs_day",
    "service_error_share",
    "service_warn_share",
    "service_distinct_ips",
    "service_p95_response_time_ms",
    "service_max_timeout_rate",
    "service_max_error_rate",
    "service_min_cache_hit_rate",
    "service_max_replication_lag_s",
    "service_max_requests_per_second",
    "service_max_files_modified",
)

Features = tuple[float, ...]

MIN = 60_000_000  # microseconds
M10, M30, H1, DAY = 10 * MIN, 30 * MIN, 60 * MIN, 24 * 60 * MIN
HORIZON = DAY  # no feature looks back further
