-- Tables written by Python assets, and the macro and view that read them. (Tables built from dbt_like_sql/
-- models are created by the runner.)
-- Changed deliberately: a new column is added here and in the asset that writes it, in one commit.

-- The text columns of raw_logs are pinned to the compression DuckDB chose for them on a
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

-- The one reading of a sent timestamp as a time, used by validation's rules and by validated_logs alike.
-- A timestamp with its zone (Z, +02:00, a zone name) is that instant; one without is UTC, whatever the
-- reading session's TimeZone (a plain TIMESTAMPTZ cast would read it in the session's zone).
CREATE OR REPLACE MACRO utc_time(sent) AS
    CASE WHEN ends_with(sent, 'Z')
              OR (contains(sent, ':') AND regexp_matches(sent, '([A-Za-z]|[+-][0-9]{2}(:?[0-9]{2})?)$'))
        THEN try_cast(sent AS TIMESTAMPTZ)
        ELSE try_cast(sent AS TIMESTAMP) AT TIME ZONE 'UTC'
    END;

-- The raw load of each day that validation checked: validated_logs shows a day's rows only while its
-- raw rows are the ones checked (a day loaded again is not validated until validation runs again).
CREATE TABLE IF NOT EXISTS validated_partitions (
    partition_date  DATE NOT NULL,
    raw_ingested_at TIMESTAMPTZ,       -- raw_logs.ingested_at of the checked load (one per day)
    validated_at    TIMESTAMPTZ NOT NULL
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

-- Validated events: the checked raw rows that are not quarantined (invalid, or a repeated event_id).
-- A view, not a copy: the rows differ from raw_logs only by what is left out and by ts, so copying a
-- million of them cost ~5 CPU-s a day and their size again on disk. Each rule holds for every row
-- (event_id, ts, source_service, log_level and message are never NULL; event_id is unique in its day).
-- No anomaly_details: ground truth never reaches validated or feature tables (see log_labels).
CREATE OR REPLACE VIEW validated_logs AS
SELECT r.partition_date, r.event_id, utc_time(r."timestamp") AT TIME ZONE 'UTC' AS ts,  -- UTC
    r.source_service, r.log_level, r.message, r.correlation_id, r.user_id, r.ip_address, r.geo_location,
    r.metrics,  -- known metrics are numbers in range; flattened by stg_logs
    r.extra, r.source_file, r.line_no
FROM raw_logs r
SEMI JOIN validated_partitions p ON p.partition_date = r.partition_date AND p.raw_ingested_at = r.ingested_at
ANTI JOIN quarantine_logs q
    ON q.partition_date = r.partition_date AND q.source_file = r.source_file AND q.line_no = r.line_no;

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
