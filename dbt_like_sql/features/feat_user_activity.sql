-- Per event of a known user: what that user has done up to the event, looking back at most 24 hours
-- (point in time: docs/features.md). Serves BANK-001 (failed logins), BANK-003 (amount against the
-- user's own history), BANK-005/007/008 (unusual country, distinct IPs, travel speed, VPN use, a session
-- id used from several addresses), BANK-006/015 (records and bytes read).
{{ config(materialized='table', partitioned=true, lookback_days=1, follows_upstream=true) }}
{#- The window of length `us` microseconds ending at the event, in the order ord (stg_logs): from the
    first event of the microsecond `us` before the event's own (its ord less its tie, ord & 4095) up to
    the event itself. -#}
{% macro trailing(us) %}ORDER BY ord RANGE BETWEEN ({{ us * 4096 }} + (ord & 4095)) PRECEDING AND CURRENT ROW{% endmacro %}
{%- set DAY_US = 86400000000 %}
WITH events AS (
    SELECT
        s.partition_date, s.event_key, s.ts, s.ord, s.amount, s.records_accessed, s.bytes_out, g.lat, g.lon,
        -- the user, country and address as 64-bit hashes where the windows partition, sort or count by
        -- them (integers sort and compare cheaper than text; a shared hash has odds of ~1e-19 a pair);
        -- NULL kept where count(DISTINCT) must skip it, and where a missing country or address is a
        -- value of its own in the shares (PARTITION BY puts the NULLs together)
        hash(s.user_id) AS user_key,
        CASE WHEN s.country IS NOT NULL THEN hash(s.country) END AS country_key,
        CASE WHEN s.ip_address IS NOT NULL THEN hash(s.ip_address) END AS ip_key,
        (s.message LIKE 'Login failed%')::INT AS is_login_failure,
        (s.message LIKE 'VPN connection%')::INT AS is_vpn,
        -- LIKE first, so the regular expression runs only on the lines that can name a session
        -- (no match is '', which would make every id-less "SES-" line one session: NULL instead)
        CASE WHEN s.message LIKE '%SES-%' THEN nullif(regexp_extract(s.message, 'SES-[0-9A-Za-z]+'), '') END
            AS session_id,
        ln(1 + s.amount) AS log_amount
    FROM {{ ref('stg_logs') }} AS s
    LEFT JOIN {{ ref('geo_regions') }} AS g ON g.geo = s.geo_location
    WHERE s.partition_date BETWEEN DATE '{{ lookback_start }}' AND DATE '{{ partition_date }}'
      AND s.user_id IS NOT NULL
),
windowed AS (
    SELECT
        partition_date, event_key, ts, ord, lat, lon, log_amount, session_id, ip_key,
        -- how usual this country and this IP are for the user over the last 24 hours
        count(*) OVER (PARTITION BY user_key, country_key {{ trailing(DAY_US) }}) / count(*) OVER w24
            AS user_country_share,
        count(*) OVER (PARTITION BY user_key, ip_key {{ trailing(DAY_US) }}) / count(*) OVER w24
            AS user_ip_share,
        -- the user's earlier amounts of the last 24 hours: the window's sums less the current row (one
        -- frame shared by all three, where a frame ending one row earlier would build its own trees)
        count(log_amount) OVER w24 - (log_amount IS NOT NULL)::INT AS prior_amounts,
        sum(log_amount) OVER w24 - coalesce(log_amount, 0) AS prior_sum_log_amount,
        sum(log_amount * log_amount) OVER w24 - coalesce(log_amount * log_amount, 0) AS prior_sumsq_log_amount,
        last_value(lat IGNORE NULLS) OVER earlier AS prev_lat,
        last_value(lon IGNORE NULLS) OVER earlier AS prev_lon,
        last_value(CASE WHEN lat IS NOT NULL THEN ts END IGNORE NULLS) OVER earlier AS prev_geo_ts
    FROM events
    WINDOW
        w24 AS (PARTITION BY user_key {{ trailing(DAY_US) }}),  -- 24 hours
        -- the same 24 hours, strictly before the event
        earlier AS (PARTITION BY user_key {{ trailing(DAY_US) }} EXCLUDE CURRENT ROW)
),
-- the windows of an hour or less, over the events they can reach from the day's (the day's events are on
-- its UTC day: stg_logs), not the whole previous day
recent AS (
    SELECT
        event_key,
        count(*) OVER w10 AS user_events_10m,
        (sum(is_login_failure) OVER w10)::BIGINT AS user_failed_logins_10m,
        count(DISTINCT ip_key) OVER w60 AS user_distinct_ips_1h,
        count(DISTINCT country_key) OVER w60 AS user_distinct_countries_1h,
        (sum(is_vpn) OVER w60)::BIGINT AS user_vpn_connections_1h,
        coalesce(sum(records_accessed) OVER w10, 0) AS user_records_10m,
        coalesce(sum(bytes_out) OVER w30, 0) AS user_bytes_out_30m
    FROM events
    WHERE ts >= TIMESTAMP '{{ partition_date }}' - INTERVAL 1 HOUR
    WINDOW
        w10 AS (PARTITION BY user_key {{ trailing(600000000) }}),  -- 10 minutes
        w30 AS (PARTITION BY user_key {{ trailing(1800000000) }}),  -- 30 minutes
        w60 AS (PARTITION BY user_key {{ trailing(3600000000) }})  -- 1 hour
),
-- a session id is issued to one client: the same id validated from a second address is a stolen
-- session (BANK-007); only lines naming a session, so the window does not sort the whole day once more
sessions AS (
    SELECT
        event_key,
        count(DISTINCT ip_key) OVER (PARTITION BY session_id {{ trailing(DAY_US) }}) AS session_distinct_ips
    FROM windowed
    WHERE session_id IS NOT NULL
),
travel AS (
    SELECT
        *,
        CASE WHEN lat IS NOT NULL AND prev_lat IS NOT NULL THEN
            2 * 6371 * asin(sqrt(
                pow(sin(radians(lat - prev_lat) / 2), 2)
                + cos(radians(prev_lat)) * cos(radians(lat)) * pow(sin(radians(lon - prev_lon) / 2), 2)
            ))
        END AS travel_km
    FROM windowed
    JOIN recent USING (event_key)
    LEFT JOIN sessions USING (event_key)
)
SELECT
    partition_date,
    event_key,
    user_events_10m,
    user_failed_logins_10m,
    user_distinct_ips_1h,
    user_distinct_countries_1h,
    user_vpn_connections_1h,
    user_records_10m,
    user_bytes_out_30m,
    user_country_share,
    user_ip_share,
    coalesce(session_distinct_ips, 0) AS session_distinct_ips,
    -- standard score of the amount against the user's earlier amounts (0 until 3 are known)
    CASE WHEN log_amount IS NULL OR prior_amounts < 3 THEN 0
         ELSE (log_amount - prior_sum_log_amount / prior_amounts) / (0.25 + sqrt(greatest(
             (prior_sumsq_log_amount - prior_sum_log_amount * prior_sum_log_amount / prior_amounts)
             / (prior_amounts - 1), 0)))  -- sample standard deviation; rounding can dip it below 0
    END AS user_amount_z,
    coalesce(travel_km, 0) AS travel_km,
    -- speed needed to get here from the previous location (at least one minute apart)
    coalesce(travel_km / greatest(epoch(ts - prev_geo_ts) / 3600.0, 1 / 60.0), 0) AS travel_speed_kmh
FROM travel
WHERE partition_date = DATE '{{ partition_date }}'
