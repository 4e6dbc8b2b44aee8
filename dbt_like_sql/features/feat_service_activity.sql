-- Per event: its service's load, errors and health gauges over the minute up to the event, and that
-- minute's load against the service's average minute of the 24 hours up to the event (bursts are x3, a
-- DDoS is far more); point in time: docs/features.md. Serves BANK-009 to BANK-013 and BANK-016.
{{ config(materialized='table', partitioned=true, lookback_days=1, follows_upstream=true) }}
{%- set MINUTE_US = 60000000 %}
{%- set DAY_US = 86400000000 %}
WITH events AS (
    SELECT
        partition_date, event_key, ord, ts, level_num, response_time_ms, timeout_rate, error_rate,
        cache_hit_rate, replication_lag_s, requests_per_second, files_modified,
        -- the service as a 64-bit hash: the windows and joins below partition by it, and integers sort
        -- and compare cheaper than text (two services share one with odds of ~1e-19 a pair)
        hash(source_service) AS service_key,
        -- the address as a 64-bit hash (NULL kept, so it is not counted): cheaper to compare than text,
        -- two addresses share one with odds of ~1e-19 a pair
        CASE WHEN ip_address IS NOT NULL THEN hash(ip_address) END AS ip_key,
        -- the event's rank among its service's events in the order (ord: stg_logs)
        row_number() OVER (PARTITION BY hash(source_service) ORDER BY ord) AS service_rank,
        -- where the windows of a minute and of 24 hours up to the event start in the order: the first
        -- ord of the microsecond that long before the event's own (its ord less its tie, ord & 4095)
        ord - ({{ MINUTE_US * 4096 }} + (ord & 4095)) AS minute_start_ord,
        ord - ({{ DAY_US * 4096 }} + (ord & 4095)) AS day_start_ord
    FROM {{ ref('stg_logs') }}
    WHERE partition_date BETWEEN DATE '{{ lookback_start }}' AND DATE '{{ partition_date }}'
),
recent AS (
    -- the events a minute window of the day's events can reach (the day's events are on its UTC day:
    -- stg_logs): the minute's aggregates frame these, not the whole previous day
    SELECT * FROM events WHERE ts >= TIMESTAMP '{{ partition_date }}' - INTERVAL 1 MINUTE
),
bounded AS (
    -- Each window as the rows from the service's first event at or after its start (the event itself at
    -- the latest) to the event: the as-of joins find that event once, and the aggregates below take
    -- ROWS frames of that many rows. RANGE frames over a service's hundreds of thousands of events cost
    -- DuckDB ~8x more, per aggregate.
    SELECT
        e.*,
        e.service_rank - m.service_rank AS minute_rows_before,
        e.service_rank - d.service_rank + 1 AS events_24h,
        epoch(e.ts - d.ts) / 60.0 AS minutes_24h  -- from the 24-hour window's first event to this one
    FROM recent AS e
    ASOF JOIN recent AS m ON m.service_key = e.service_key AND m.ord >= e.minute_start_ord
    ASOF JOIN events AS d ON d.service_key = e.service_key AND d.ord >= e.day_start_ord
),
windowed AS (
    SELECT
        partition_date,
        event_key,
        minute_rows_before + 1 AS events_1m,
        events_24h,
        minutes_24h,
        sum((level_num >= 3)::INT) OVER m1 / (minute_rows_before + 1) AS error_share,
        sum((level_num = 2)::INT) OVER m1 / (minute_rows_before + 1) AS warn_share,
        count(DISTINCT ip_key) OVER m1 AS distinct_ips,
        quantile_cont(response_time_ms, 0.95) OVER m1 AS p95_response_time_ms,
        max(timeout_rate) OVER m1 AS max_timeout_rate,
        max(error_rate) OVER m1 AS max_error_rate,
        min(cache_hit_rate) OVER m1 AS min_cache_hit_rate,
        max(replication_lag_s) OVER m1 AS max_replication_lag_s,
        max(requests_per_second) OVER m1 AS max_requests_per_second,
        max(files_modified) OVER m1 AS max_files_modified
    FROM bounded
    WINDOW m1 AS (
        PARTITION BY service_key ORDER BY ord ROWS BETWEEN minute_rows_before PRECEDING AND CURRENT ROW
    )
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
