-- Per event with a source IP: what that source, and its /24 network, has done in the ten minutes up to
-- the event (point in time: docs/features.md). Serves BANK-002 and BANK-004 (a few sources in one
-- network, many users, mostly failed logins) and BANK-014 (errors from one source).
{{ config(materialized='table', partitioned=true, lookback_days=1, follows_upstream=true) }}
{#- The window of length `us` microseconds ending at the event, in the order ord (stg_logs): from the
    first event of the microsecond `us` before the event's own (its ord less its tie, ord & 4095) up to
    the event itself. -#}
{% macro trailing(us) %}ORDER BY ord RANGE BETWEEN ({{ us * 4096 }} + (ord & 4095)) PRECEDING AND CURRENT ROW{% endmacro %}
WITH events AS (
    SELECT
        partition_date, event_key, ord,
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
      -- only the events a window of the day's can reach (the day's events are on its UTC day: stg_logs);
      -- the rest of the previous day would be sorted and framed for nothing
      AND ts >= TIMESTAMP '{{ partition_date }}' - INTERVAL 10 MINUTE
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
        w10 AS (PARTITION BY ip_key {{ trailing(600000000) }}),  -- 10 minutes
        net10 AS (PARTITION BY network_key {{ trailing(600000000) }})
)
SELECT * FROM windowed
WHERE partition_date = DATE '{{ partition_date }}'
