-- Tables written by Python assets. (Tables built from dbt_like_sql/ models are created by the runner.)
-- Changed deliberately: a new column is added here and in the asset that writes it, in one commit.

CREATE TABLE IF NOT EXISTS raw_logs (
    partition_date  DATE NOT NULL,     -- the landing folder (UTC day) the line was delivered in
    source_file     VARCHAR NOT NULL,  -- relative to the landing logs root
    line_no         BIGINT NOT NULL,   -- 1-based line number inside source_file
    event_id        VARCHAR NOT NULL,
    "timestamp"     VARCHAR NOT NULL,  -- as sent; parsed and checked by validation
    source_service  VARCHAR NOT NULL,
    log_level       VARCHAR NOT NULL,
    message         VARCHAR NOT NULL,
    correlation_id  VARCHAR,
    user_id         VARCHAR,
    ip_address      VARCHAR,
    geo_location    VARCHAR,
    anomaly_details JSON,              -- ground truth of mock traffic: evaluation only, never a feature
    metrics         JSON,
    extra           JSON,              -- fields the format does not know, kept as sent
    ingested_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS raw_logs_rejected (
    partition_date  DATE NOT NULL,
    source_file     VARCHAR NOT NULL,
    line_no         BIGINT NOT NULL,
    raw_text        VARCHAR NOT NULL,  -- invalid UTF-8 bytes appear as \xNN escapes
    reason          VARCHAR NOT NULL,
    ingested_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS validated_logs (
    partition_date  DATE NOT NULL,
    event_id        VARCHAR NOT NULL,  -- unique within the partition
    ts              TIMESTAMP NOT NULL,-- UTC
    source_service  VARCHAR NOT NULL,
    log_level       VARCHAR NOT NULL,
    message         VARCHAR NOT NULL,
    correlation_id  VARCHAR,
    user_id         VARCHAR,
    ip_address      VARCHAR,
    geo_location    VARCHAR,
    metrics         JSON,              -- known metrics are numbers in range; flattened by stg_logs
    extra           JSON,
    source_file     VARCHAR NOT NULL,
    line_no         BIGINT NOT NULL
    -- no anomaly_details: ground truth never reaches validated or feature tables (see log_labels)
);

CREATE TABLE IF NOT EXISTS quarantine_logs (
    partition_date  DATE NOT NULL,
    source_file     VARCHAR NOT NULL,
    line_no         BIGINT NOT NULL,
    event_id        VARCHAR,
    rules           VARCHAR[] NOT NULL,-- every rule the row broke (log_rules.yaml), or duplicate_event_id
    kind            VARCHAR NOT NULL,  -- 'invalid' or 'duplicate'
    record          JSON NOT NULL,     -- the checked fields as sent
    quarantined_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS log_labels (
    partition_date  DATE NOT NULL,
    event_id        VARCHAR NOT NULL,
    is_anomaly      BOOLEAN NOT NULL,
    anomaly_id      VARCHAR,
    anomaly_name    VARCHAR,
    instance_id     VARCHAR,           -- one anomaly instance (falls back to anomaly_name)
    category        VARCHAR,
    severity        VARCHAR,
    correlation_event VARCHAR
);
