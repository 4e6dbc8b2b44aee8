-- Per service and minute: load, errors and the service's health gauges, with the load relative to
-- the service's median minute of the day (bursts are x3, a DDoS is far more). Serves BANK-009 to
-- BANK-013 and BANK-016.
{{ config(materialized='table', partitioned=true) }}
WITH minutes AS (
    SELECT
        partition_date,
        source_service,
        time_bucket(INTERVAL 1 MINUTE, ts) AS minute,
        count(*) AS events,
        avg((level_num >= 3)::INT) AS error_share,
        avg((level_num = 2)::INT) AS warn_share,
        count(DISTINCT ip_address) AS distinct_ips,
        count(DISTINCT template) AS distinct_templates,
        quantile_cont(response_time_ms, 0.95) AS p95_response_time_ms,
        max(timeout_rate) AS max_timeout_rate,
        max(error_rate) AS max_error_rate,
        min(cache_hit_rate) AS min_cache_hit_rate,
        max(replication_lag_s) AS max_replication_lag_s,
        max(active_connections) AS max_active_connections,
        max(requests_per_second) AS max_requests_per_second,
        max(files_modified) AS max_files_modified
    FROM {{ ref('stg_logs') }}
    WHERE partition_date = DATE '{{ partition_date }}'
    GROUP BY ALL
)
SELECT
    *,
    events / median(events) OVER (PARTITION BY source_service) AS events_vs_median
FROM minutes
