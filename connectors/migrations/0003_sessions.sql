-- Session windows (operators/sessions.py): one row per final session of a user. The
-- view session_metrics, aggregating them by dims and rollups per hour of closing, is
-- created at start from the configured grouping sets (connectors/clickhouse.py).
CREATE TABLE IF NOT EXISTS {db}.sessions
(
    window             LowCardinality(String),
    user_id            String,
    session_start      DateTime64(3, 'UTC'),
    session_end        DateTime64(3, 'UTC'),
    closes_at          DateTime64(3, 'UTC'),
    tenant             LowCardinality(String),
    model_id           LowCardinality(String),
    deployment         LowCardinality(String),
    model_version      LowCardinality(String),
    segment            LowCardinality(String),
    endpoint           LowCardinality(String),
    extra_dims         String,
    session_events     UInt64,
    session_duration_s Float64,
    ratings            UInt64,
    rating_mean        Nullable(Float64),
    thumbs             UInt64,
    thumbs_up_rate     Nullable(Float64),
    late               UInt8
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(session_start)
ORDER BY (window, user_id, session_start);
