-- Per event with a source IP: what that source, and its /24 network, has been doing in the last ten
-- minutes. Serves BANK-002 and BANK-004 (a few sources in one network, many users, mostly failed
-- logins) and BANK-014 (errors from one source).
{{ config(materialized='table', partitioned=true, lookback_days=1) }}
WITH events AS (
    SELECT
        partition_date, event_key, ip_address, ts, user_id,
        regexp_extract(ip_address, '^(.*)[.:][^.:]*$', 1) AS network,
        (message LIKE 'Login failed%')::INT AS is_login_failure,
        (level_num >= 3)::INT AS is_error
    FROM {{ ref('stg_logs') }}
    WHERE partition_date BETWEEN DATE '{{ lookback_start }}' AND DATE '{{ partition_date }}'
      AND ip_address IS NOT NULL
),
windowed AS (
    SELECT
        partition_date,
        event_key,
        count(*) OVER w10 AS ip_events_10m,
        count(DISTINCT user_id) OVER w10 AS ip_distinct_users_10m,
        (sum(is_login_failure) OVER w10)::BIGINT AS ip_failed_logins_10m,
        (sum(is_error) OVER w10)::BIGINT AS ip_error_events_10m,
        count(DISTINCT user_id) OVER net10 AS network_distinct_users_10m,
        count(DISTINCT ip_address) OVER net10 AS network_distinct_ips_10m,
        (sum(is_login_failure) OVER net10)::BIGINT AS network_failed_logins_10m
    FROM events
    WINDOW
        w10 AS (PARTITION BY ip_address ORDER BY ts RANGE BETWEEN INTERVAL 10 MINUTES PRECEDING AND CURRENT ROW),
        net10 AS (PARTITION BY network ORDER BY ts RANGE BETWEEN INTERVAL 10 MINUTES PRECEDING AND CURRENT ROW)
)
SELECT * FROM windowed
WHERE partition_date = DATE '{{ partition_date }}'
