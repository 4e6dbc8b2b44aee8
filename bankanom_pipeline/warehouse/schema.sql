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
