-- Rules and alerts (operators/rules/stage.py). One row per alert transition, keyed by its
-- identity (event time throughout), so a replay rewrites the same rows: read with FINAL.
-- A dim the alert does not carry is '' (a canary alert is per its `match` dims).
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    rule             LowCardinality(String),
    fingerprint      String,
    episode          Int64,
    sequence         Int64,
    state            LowCardinality(String),
    previous         LowCardinality(String),
    severity         LowCardinality(String),
    window           LowCardinality(String),
    window_start     DateTime64(3, 'UTC'),
    window_end       DateTime64(3, 'UTC'),
    event_time       DateTime64(3, 'UTC'),
    tenant           LowCardinality(String),
    model_id         LowCardinality(String),
    deployment       LowCardinality(String),
    model_version    LowCardinality(String),
    segment          LowCardinality(String),
    endpoint         LowCardinality(String),
    extra_dims       String,
    value            Nullable(Float64),
    threshold        Nullable(Float64),
    samples          UInt64,
    baseline_samples Nullable(UInt64),
    reason           String,
    targets          String,
    action           Nullable(String),
    muted            UInt8,
    notified         UInt8,
    idempotency_key  String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (rule, fingerprint, episode, state, sequence);

-- The final outcome of each delivery (connectors/delivery): one row per target and
-- request idempotency key; a delivery re-sent after a restart replaces its row.
CREATE TABLE IF NOT EXISTS {db}.deliveries
(
    target          LowCardinality(String),
    idempotency_key String,
    transition_keys Array(String),
    status          LowCardinality(String),
    attempts        UInt32,
    http_status     Nullable(UInt16),
    error           Nullable(String),
    finished_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(finished_at)
ORDER BY (target, idempotency_key);
