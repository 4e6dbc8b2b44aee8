-- The detection input: one row per validated event with every numeric feature (missing = 0) and the
-- identifiers incidents are grouped by. The ground truth is not here and cannot be: it never leaves
-- raw_logs except into log_labels.
{{ config(materialized='table', partitioned=true, follows_upstream=true, compression={
    'event_id': 'fsst', 'correlation_id': 'fsst', 'source_service': 'dictionary', 'template': 'dictionary',
    'user_id': 'dictionary', 'ip_address': 'dictionary'}) }}
-- Text columns keep the compression DuckDB picks for them on a generated day (see stg_logs).
WITH events AS (
    SELECT s.*, r.template_rarity, r.rare_quiet_country
    FROM {{ ref('stg_logs') }} AS s
    JOIN (
        SELECT * FROM {{ ref('feat_rarity') }} WHERE partition_date = DATE '{{ partition_date }}'
    ) AS r ON r.partition_date = s.partition_date AND r.event_key = s.event_key
    WHERE s.partition_date = DATE '{{ partition_date }}'
)
SELECT
    e.partition_date,
    e.event_id,
    e.event_key,
    e.ts,
    e.source_service,
    e.user_id,
    e.ip_address,
    e.correlation_id,
    e.template,
    -- per event
    e.level_num,
    sin(2 * pi() * e.hour_of_day / 24) AS hour_sin,
    cos(2 * pi() * e.hour_of_day / 24) AS hour_cos,
    (e.weekday >= 6)::INT AS is_weekend,
    e.template_rarity,
    e.rare_quiet_country,
    coalesce(e.response_time_ms, 0) AS response_time_ms,
    coalesce(e.requests_per_second, 0) AS requests_per_second,
    coalesce(e.error_rate, 0) AS error_rate,
    coalesce(e.timeout_rate, 0) AS timeout_rate,
    coalesce(e.success_rate, 1) AS success_rate,
    coalesce(e.failed_attempts, 0) AS failed_attempts,
    coalesce(e.unique_ips, 0) AS unique_ips,
    coalesce(e.unique_users, 0) AS unique_users,
    coalesce(e.attempts_per_minute, 0) AS attempts_per_minute,
    coalesce(e.amount, 0) AS amount,
    coalesce(e.risk_score, 0) AS risk_score,
    coalesce(e.query_time_ms, 0) AS query_time_ms,
    coalesce(e.active_connections / nullif(e.max_connections, 0), 0) AS connection_pool_use,
    coalesce(e.replication_lag_s, 0) AS replication_lag_s,
    coalesce(e.cache_hit_rate, 1) AS cache_hit_rate,
    coalesce(e.cpu_percent, 0) AS cpu_percent,
    coalesce(e.records_accessed, 0) AS records_accessed,
    coalesce(e.bytes_out, 0) AS bytes_out,
    coalesce(e.concurrent_sessions, 0) AS concurrent_sessions,
    coalesce(e.vpn_connections, 0) AS vpn_connections,
    coalesce(e.files_modified, 0) AS files_modified,
    coalesce(e.consumer_lag, 0) AS consumer_lag,
    -- the user's recent behaviour
    coalesce(u.user_events_10m, 0) AS user_events_10m,
    coalesce(u.user_failed_logins_10m, 0) AS user_failed_logins_10m,
    coalesce(u.user_distinct_ips_1h, 0) AS user_distinct_ips_1h,
    coalesce(u.user_distinct_countries_1h, 0) AS user_distinct_countries_1h,
    coalesce(u.user_vpn_connections_1h, 0) AS user_vpn_connections_1h,
    coalesce(u.user_records_10m, 0) AS user_records_10m,
    coalesce(u.user_bytes_out_30m, 0) AS user_bytes_out_30m,
    coalesce(u.user_country_share, 1) AS user_country_share,
    coalesce(u.user_ip_share, 1) AS user_ip_share,
    coalesce(u.session_distinct_ips, 0) AS session_distinct_ips,
    coalesce(u.user_amount_z, 0) AS user_amount_z,
    coalesce(u.travel_km, 0) AS travel_km,
    coalesce(u.travel_speed_kmh, 0) AS travel_speed_kmh,
    -- the source IP's recent behaviour
    coalesce(i.ip_events_10m, 0) AS ip_events_10m,
    coalesce(i.ip_distinct_users_10m, 0) AS ip_distinct_users_10m,
    coalesce(i.ip_failed_logins_10m, 0) AS ip_failed_logins_10m,
    coalesce(i.ip_error_events_10m, 0) AS ip_error_events_10m,
    coalesce(i.network_distinct_users_10m, 0) AS network_distinct_users_10m,
    coalesce(i.network_distinct_ips_10m, 0) AS network_distinct_ips_10m,
    coalesce(i.network_failed_logins_10m, 0) AS network_failed_logins_10m,
    -- the service's last minute
    m.events_vs_day AS service_events_vs_day,
    m.error_share AS service_error_share,
    m.warn_share AS service_warn_share,
    m.distinct_ips AS service_distinct_ips,
    coalesce(m.p95_response_time_ms, 0) AS service_p95_response_time_ms,
    coalesce(m.max_timeout_rate, 0) AS service_max_timeout_rate,
    coalesce(m.max_error_rate, 0) AS service_max_error_rate,
    coalesce(m.min_cache_hit_rate, 1) AS service_min_cache_hit_rate,
    coalesce(m.max_replication_lag_s, 0) AS service_max_replication_lag_s,
    coalesce(m.max_requests_per_second, 0) AS service_max_requests_per_second,
    coalesce(m.max_files_modified, 0) AS service_max_files_modified
FROM events AS e
-- Each feature table is filtered to the day before the join as well: the planner then sees it is the
-- smaller side and builds its hash table from it, not from the wide event rows (which spilled).
LEFT JOIN (
    SELECT * FROM {{ ref('feat_user_activity') }} WHERE partition_date = DATE '{{ partition_date }}'
) AS u ON u.partition_date = e.partition_date AND u.event_key = e.event_key
LEFT JOIN (
    SELECT * FROM {{ ref('feat_ip_activity') }} WHERE partition_date = DATE '{{ partition_date }}'
) AS i ON i.partition_date = e.partition_date AND i.event_key = e.event_key
LEFT JOIN (
    SELECT * FROM {{ ref('feat_service_activity') }} WHERE partition_date = DATE '{{ partition_date }}'
) AS m ON m.partition_date = e.partition_date AND m.event_key = e.event_key
