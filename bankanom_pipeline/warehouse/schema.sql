-- Tables written by Python assets. (Tables built from dbt_like_sql/ models are created by the runner.)
-- Changed deliberately: a new column is added here and in the asset that writes it, in one commit.

-- The text columns of the two day-sized tables are pinned to the compression DuckDB chose for them on a
-- generated day (fsst for ids, messages and JSON; dictionary for the few-valued ones). Left to choose,
-- DuckDB tries every method on every row group it writes: ~1.5 s of a million events' 20 s pipeline.
-- A pin takes effect when the table is created (an older warehouse keeps DuckDB's choice per row group).
CREATE TABLE IF NOT EXISTS raw_logs (
    partition_date  DATE NOT NULL,     -- the landing folder (UTC day) the line was delivered in
    source_file     VARCHAR NOT NULL USING COMPRESSION dictionary, -- relative to the landing logs root
    line_no         BIGINT NOT NULL,   -- 1-based line number inside source_file
    event_id        VARCHAR NOT NULL USING COMPRESSION fsst,
    "timestamp"     VARCHAR NOT NULL USING COMPRESSION fsst, -- as sent; parsed and checked by validation
    source_service  VARCHAR NOT NULL USING COMPRESSION dictionary,
    log_level       VARCHAR NOT NULL USING COMPRESSION dictionary,
    message         VARCHAR NOT NULL USING COMPRESSION fsst,
    correlation_id  VARCHAR USING COMPRESSION fsst,
    user_id         VARCHAR USING COMPRESSION dictionary,
    ip_address      VARCHAR USING COMPRESSION dictionary,
    geo_location    VARCHAR USING COMPRESSION dictionary,
    anomaly_details JSON USING COMPRESSION dictionary, -- ground truth of mock traffic: evaluation only, never a feature
    metrics         JSON USING COMPRESSION fsst,
    extra           JSON USING COMPRESSION dictionary, -- fields the format does not know, kept as sent
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
    event_id        VARCHAR NOT NULL USING COMPRESSION fsst, -- unique within the partition
    ts              TIMESTAMP NOT NULL,-- UTC
    source_service  VARCHAR NOT NULL USING COMPRESSION dictionary,
    log_level       VARCHAR NOT NULL USING COMPRESSION dictionary,
    message         VARCHAR NOT NULL USING COMPRESSION fsst,
    correlation_id  VARCHAR USING COMPRESSION fsst,
    user_id         VARCHAR USING COMPRESSION dictionary,
    ip_address      VARCHAR USING COMPRESSION dictionary,
    geo_location    VARCHAR USING COMPRESSION dictionary,
    metrics         JSON USING COMPRESSION fsst, -- known metrics are numbers in range; flattened by stg_logs
    extra           JSON USING COMPRESSION dictionary,
    source_file     VARCHAR NOT NULL USING COMPRESSION dictionary,
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

-- Bank transactions (the "bank transactions for fraud detection" CSV layout), as sent: every field text.
CREATE TABLE IF NOT EXISTS raw_transactions (
    partition_date  DATE NOT NULL,     -- the landing folder (UTC day) the file was delivered in
    source_file     VARCHAR NOT NULL,  -- relative to the landing transactions root
    line_no         BIGINT NOT NULL,   -- 1-based line number inside source_file (1 is the header)
    transaction_id  VARCHAR,
    account_id      VARCHAR,
    transaction_amount VARCHAR,
    transaction_date VARCHAR,
    transaction_type VARCHAR,
    location        VARCHAR,
    device_id       VARCHAR,
    ip_address      VARCHAR,
    merchant_id     VARCHAR,
    channel         VARCHAR,
    customer_age    VARCHAR,
    customer_occupation VARCHAR,
    transaction_duration VARCHAR,
    login_attempts  VARCHAR,
    account_balance VARCHAR,
    previous_transaction_date VARCHAR,
    extra           JSON,              -- columns the layout does not know, kept as sent
    ingested_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS raw_transactions_rejected (
    partition_date  DATE NOT NULL,
    source_file     VARCHAR NOT NULL,
    line_no         BIGINT NOT NULL,
    raw_text        VARCHAR NOT NULL,
    reason          VARCHAR NOT NULL,
    ingested_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS validated_transactions (
    partition_date  DATE NOT NULL,
    transaction_id  VARCHAR NOT NULL,  -- unique across partitions
    account_id      VARCHAR NOT NULL,
    amount          DOUBLE NOT NULL,
    ts              TIMESTAMP NOT NULL,-- TransactionDate, as given (the layout has no time zone)
    transaction_type VARCHAR NOT NULL,
    location        VARCHAR NOT NULL,
    device_id       VARCHAR NOT NULL,
    ip_address      VARCHAR NOT NULL,
    merchant_id     VARCHAR NOT NULL,
    channel         VARCHAR NOT NULL,
    customer_age    INTEGER NOT NULL,
    customer_occupation VARCHAR NOT NULL,
    duration_s      INTEGER NOT NULL,
    login_attempts  INTEGER NOT NULL,
    balance         DOUBLE NOT NULL,
    previous_ts     TIMESTAMP,         -- PreviousTransactionDate as sent (not trusted by features)
    extra           JSON,
    source_file     VARCHAR NOT NULL,
    line_no         BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS quarantine_transactions (
    partition_date  DATE NOT NULL,
    source_file     VARCHAR NOT NULL,
    line_no         BIGINT NOT NULL,
    transaction_id  VARCHAR,
    rules           VARCHAR[] NOT NULL,-- every rule the row broke (transaction_rules.yaml), or duplicate_transaction_id
    kind            VARCHAR NOT NULL,  -- 'invalid' or 'duplicate'
    record          JSON NOT NULL,     -- the row as sent
    quarantined_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS transaction_labels (
    partition_date  DATE NOT NULL,
    transaction_id  VARCHAR NOT NULL,
    is_fraud        BOOLEAN NOT NULL,
    pattern         VARCHAR,
    instance_id     VARCHAR
);

CREATE TABLE IF NOT EXISTS transaction_evaluation_metrics (
    partition_date  DATE NOT NULL,
    model           VARCHAR NOT NULL,  -- isolation_forest | local_outlier_factor | ensemble | baseline_isolation_forest | incidents
    metric          VARCHAR NOT NULL,
    value           DOUBLE
);

CREATE TABLE IF NOT EXISTS transaction_evaluation_patterns (
    partition_date  DATE NOT NULL,
    pattern         VARCHAR,
    instances       BIGINT,
    detected        BIGINT,
    recall          DOUBLE,
    pattern_top1    DOUBLE             -- detected instances whose incident names the right pattern
);
