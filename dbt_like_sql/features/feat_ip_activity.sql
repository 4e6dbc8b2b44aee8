-- Per event with a source IP: what that source, and its /24 network, has been doing in the last ten
-- minutes. Serves BANK-002 and BANK-004 (a few sources in one network, many users, mostly failed
-- logins) and BANK-014 (errors from one source).
{{ config(materialized='table', partitioned=true, lookback_days=1, follows_upstream=true) }}
WITH events AS (
    SELECT
        partition_date, event_key, ts,
        -- 64-bit hashes stand in for the text keys, so the windows sort and compare integers, which is
        -- cheaper; two addresses or users share a hash with odds of ~1e-19 a pair. hash(NULL) is
        -- not NULL, and count(DISTINCT) must skip missing users: hence the CASE
        hash(ip_address) AS ip_key,
        hash(regexp_extract(ip_address, '^(.*)[.:][^.:]*$', 1)) AS network_key,
        CASE WHEN user_id IS NOT NULL THEN hash(user_id) END AS user_key,
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
        count(DISTINCT user_key) OVER w10 AS ip_distinct_users_10m,
        (sum(is_login_failure) OVER w10)::BIGINT AS ip_failed_logins_10m,
        (sum(is_error) OVER w10)::BIGINT AS ip_error_events_10m,
        count(DISTINCT user_key) OVER net10 AS network_distinct_users_10m,
        count(DISTINCT ip_key) OVER net10 AS network_distinct_ips_10m,
        (sum(is_login_failure) OVER net10)::BIGINT AS network_failed_logins_10m
    FROM events
    WINDOW
        w10 AS (PARTITION BY ip_key ORDER BY ts RANGE BETWEEN INTERVAL 10 MINUTES PRECEDING AND CURRENT ROW),
        net10 AS (PARTITION BY network_key ORDER BY ts RANGE BETWEEN INTERVAL 10 MINUTES PRECEDING AND CURRENT ROW)
)
SELECT * FROM windowed
WHERE partition_date = DATE '{{ partition_date }}'
