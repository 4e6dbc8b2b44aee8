-- Per event: its service's load, errors and health gauges over the minute up to the event, and that
-- minute's load against the service's average minute of the 24 hours up to the event (bursts are x3, a
-- DDoS is far more); point in time: docs/features.md. Serves BANK-009 to BANK-013 and BANK-016.
{{ config(materialized='table', partitioned=true, lookback_days=1, follows_upstream=true) }}
{#- The window of length `us` microseconds ending at the event, in the order ord (stg_logs): from the
    first event of the microsecond `us` before the event's own (its ord less its tie, ord & 4095) up to
    the event itself. -#}
{% macro trailing(us) %}ORDER BY ord RANGE BETWEEN ({{ us * 4096 }} + (ord & 4095)) PRECEDING AND CURRENT ROW{% endmacro %}
WITH windowed AS (
    SELECT
        partition_date,
        event_key,
        count(*) OVER m1 AS events_1m,
        count(*) OVER d1 AS events_24h,
        -- minutes from the 24-hour window's first event to this one (the window's span so far)
        epoch(ts - min(ts) OVER d1) / 60.0 AS minutes_24h,
        avg((level_num >= 3)::INT) OVER m1 AS error_share,
        avg((level_num = 2)::INT) OVER m1 AS warn_share,
        count(DISTINCT ip_address) OVER m1 AS distinct_ips,
        quantile_cont(response_time_ms, 0.95) OVER m1 AS p95_response_time_ms,
        max(timeout_rate) OVER m1 AS max_timeout_rate,
        max(error_rate) OVER m1 AS max_error_rate,
        min(cache_hit_rate) OVER m1 AS min_cache_hit_rate,
        max(replication_lag_s) OVER m1 AS max_replication_lag_s,
        max(requests_per_second) OVER m1 AS max_requests_per_second,
        max(files_modified) OVER m1 AS max_files_modified
    FROM {{ ref('stg_logs') }}
    WHERE partition_date BETWEEN DATE '{{ lookback_start }}' AND DATE '{{ partition_date }}'
    WINDOW
        m1 AS (PARTITION BY source_service {{ trailing(60000000) }}),  -- 1 minute
        d1 AS (PARTITION BY source_service {{ trailing(86400000000) }})  -- 24 hours
)
SELECT
    partition_date,
    event_key,
    events_1m,
    -- the last minute's events against the average minute of the last 24 hours (of the span seen so
    -- far, at least a minute: the first minute of a service's traffic compares with itself)
    events_1m / (events_24h / greatest(minutes_24h, 1)) AS events_vs_day,
    error_share,
    warn_share,
    distinct_ips,
    p95_response_time_ms,
    max_timeout_rate,
    max_error_rate,
    min_cache_hit_rate,
    max_replication_lag_s,
    max_requests_per_second,
    max_files_modified
FROM windowed
WHERE partition_date = DATE '{{ partition_date }}'
