-- Validated log events, typed and flattened: one row per event, each known metric as a column (validation
-- guarantees they are numbers in range), the message reduced to its template (identifiers and numbers
-- masked), time and level encodings, and the event's place in the one total order of events (ord).
{{ config(materialized='table', partitioned=true, compression={
    'event_id': 'fsst', 'message': 'fsst', 'correlation_id': 'fsst',
    'source_service': 'dictionary', 'log_level': 'dictionary', 'template': 'dictionary', 'user_id': 'dictionary',
    'ip_address': 'dictionary', 'geo_location': 'dictionary', 'country': 'dictionary'}) }}
-- Text columns keep the compression DuckDB picks for them on a generated day (pinned: left to choose, it
-- tries each method on every row group it writes).
SELECT
    partition_date,
    event_id,
    hash(event_id) AS event_key,  -- compact join key for the feature models
    ts,
    -- The order every feature is defined in, (ts, event_id), as one BIGINT (docs/features.md): microseconds
    -- since 2020 times 4096, plus the event's rank by event_id among the events of its microsecond. The
    -- feature windows order by it, so an event never counts a later one, even one of the same microsecond.
    (epoch_us(ts) - epoch_us(TIMESTAMP '2020-01-01')) * 4096
        + CASE WHEN tie > 4094 THEN error(
            'stg_logs: more than 4095 events share the timestamp ' || ts::VARCHAR
            || '; the event order (ord) holds at most 4095 events per microsecond'
        )
        -- the lookback models read the previous day only as far back as their windows reach from this
        -- day's start, so every event of the day must be on it (validation quarantines the others)
        WHEN ts < TIMESTAMP '{{ partition_date }}' THEN error(
            'stg_logs: event ' || event_id || ' at ' || ts::VARCHAR
            || ' is before its partition day {{ partition_date }}'
        ) ELSE tie END AS ord,
    source_service,
    log_level,
    CASE log_level WHEN 'DEBUG' THEN 0 WHEN 'INFO' THEN 1 WHEN 'WARN' THEN 2 WHEN 'ERROR' THEN 3 ELSE 4 END
        AS level_num,
    message,
    regexp_replace(
        regexp_replace(message, '(USR|TXN|ORD|SES|CUS)-[0-9A-Za-z]+|svc-[a-z]+|[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+',
                       '<id>', 'g'),
        '[0-9]+(\.[0-9]+)?', '#', 'g'
    ) AS template,
    correlation_id,
    user_id,
    ip_address,
    geo_location,
    split_part(geo_location, '-', 1) AS country,
    hour(ts) + minute(ts) / 60.0 AS hour_of_day,
    isodow(ts) AS weekday,
    m.response_time_ms AS response_time_ms,
    m.requests_per_second AS requests_per_second,
    m.error_rate AS error_rate,
    m.timeout_rate AS timeout_rate,
    m.success_rate AS success_rate,
    m.failed_attempts AS failed_attempts,
    m.unique_ips AS unique_ips,
    m.unique_users AS unique_users,
    m.attempts_per_minute AS attempts_per_minute,
    m.amount AS amount,
    m.risk_score AS risk_score,
    m.query_time_ms AS query_time_ms,
    m.active_connections AS active_connections,
    m.max_connections AS max_connections,
    m.replication_lag_s AS replication_lag_s,
    m.cache_hit_rate AS cache_hit_rate,
    m.cpu_percent AS cpu_percent,
    m.records_accessed AS records_accessed,
    m.bytes_out AS bytes_out,
    m.concurrent_sessions AS concurrent_sessions,
    m.vpn_connections AS vpn_connections,
    m.files_modified AS files_modified,
    m.consumer_lag AS consumer_lag
FROM (
    SELECT
        *,
        row_number() OVER (PARTITION BY ts ORDER BY event_id) - 1 AS tie,
        from_json(metrics, '{"response_time_ms":"DOUBLE","requests_per_second":"DOUBLE","error_rate":"DOUBLE","timeout_rate":"DOUBLE","success_rate":"DOUBLE","failed_attempts":"DOUBLE","unique_ips":"DOUBLE","unique_users":"DOUBLE","attempts_per_minute":"DOUBLE","amount":"DOUBLE","risk_score":"DOUBLE","query_time_ms":"DOUBLE","active_connections":"DOUBLE","max_connections":"DOUBLE","replication_lag_s":"DOUBLE","cache_hit_rate":"DOUBLE","cpu_percent":"DOUBLE","records_accessed":"DOUBLE","bytes_out":"DOUBLE","concurrent_sessions":"DOUBLE","vpn_connections":"DOUBLE","files_modified":"DOUBLE","consumer_lag":"DOUBLE"}') AS m
    FROM {{ source('raw', 'validated_logs') }}
    WHERE partition_date = DATE '{{ partition_date }}'
)
