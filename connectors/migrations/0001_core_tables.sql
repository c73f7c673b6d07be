-- Core tables. {db} is the configured database. Statements are separated by ";" at the
-- end of a line. Every table is keyed so that replaying input rewrites the same keys:
-- read them with FINAL (or argMax by version) to see one row per key.

-- One row per request_id. The first inference of a request wins: version falls as the
-- source offset grows, and ReplacingMergeTree keeps the highest version.
CREATE TABLE IF NOT EXISTS {db}.inferences
(
    request_id       String,
    ts               DateTime64(3, 'UTC'),
    tenant           LowCardinality(String),
    model_id         LowCardinality(String),
    model_version    LowCardinality(String),
    deployment       LowCardinality(String),
    segment          LowCardinality(String),
    endpoint         LowCardinality(String),
    prediction       Nullable(String),
    confidence       Nullable(Float64),
    latency_ms       Nullable(Float64),
    attributes       Map(String, String),
    late             UInt8,
    source_partition UInt32,
    source_offset    UInt64,
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY request_id;

-- One row per feedback event_id, enriched with its inference's fields (joined = 0 and
-- dims "unknown" when it gave up waiting). late = 1: it missed at least one window.
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id         String,
    request_id       String,
    ts               DateTime64(3, 'UTC'),
    kind             LowCardinality(String),
    value            String,
    value_num        Nullable(Float64),
    label            Nullable(String),
    correct          Nullable(UInt8),
    user_id          String,
    session_id       Nullable(String),
    attributes       Map(String, String),
    joined           UInt8,
    late             UInt8,
    inference_ts     Nullable(DateTime64(3, 'UTC')),
    tenant           LowCardinality(String),
    model_id         LowCardinality(String),
    deployment       LowCardinality(String),
    model_version    LowCardinality(String),
    segment          LowCardinality(String),
    endpoint         LowCardinality(String),
    prediction       Nullable(String),
    confidence       Nullable(Float64),
    latency_ms       Nullable(Float64),
    source_partition UInt32,
    source_offset    UInt64,
    INDEX idx_model_version model_version TYPE set(256) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (toStartOfHour(ts), event_id);

-- Events that could not be used, keyed by where they came from.
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    topic       LowCardinality(String),
    partition   UInt32,
    offset      UInt64,
    error       LowCardinality(String),
    reason      String,
    raw         String,
    raw_size    UInt64,
    received_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (topic, partition, offset);

-- One row per window x dims cell. Early rows (final = 0, version = emission time in ms)
-- are replaced by the final row (final = 1, version = 2^62). Metric columns follow
-- operators/metrics.py (README: metric reference).
CREATE TABLE IF NOT EXISTS {db}.metrics
(
    window            LowCardinality(String),
    window_start      DateTime64(3, 'UTC'),
    window_end        DateTime64(3, 'UTC'),
    tenant            LowCardinality(String),
    model_id          LowCardinality(String),
    deployment        LowCardinality(String),
    model_version     LowCardinality(String),
    segment           LowCardinality(String),
    endpoint          LowCardinality(String),
    extra_dims        String,
    final             UInt8,
    version           UInt64,
    feedback_count    UInt64,
    unjoined_count    UInt64,
    labeled_count     UInt64,
    correct_count     UInt64,
    accuracy          Nullable(Float64),
    error_rate        Nullable(Float64),
    thumbs_up         UInt64,
    thumbs_down       UInt64,
    thumbs_down_rate  Nullable(Float64),
    rating_count      UInt64,
    rating_mean       Nullable(Float64),
    csat              Nullable(Float64),
    reward_count      UInt64,
    reward_sum        Float64,
    reward_mean       Nullable(Float64),
    reward_stddev     Nullable(Float64),
    impressions       UInt64,
    clicks            UInt64,
    ctr               Nullable(Float64),
    conversions       UInt64,
    conversion_rate   Nullable(Float64),
    dwell_mean        Nullable(Float64),
    preference_count  UInt64,
    report_count      UInt64,
    report_amount_sum Float64,
    inference_count   UInt64,
    confidence_mean   Nullable(Float64),
    feedback_per_s    Float64,
    inference_per_s   Float64,
    errors_per_s      Float64,
    latency_p50       Nullable(Float64),
    latency_p95       Nullable(Float64),
    latency_p99       Nullable(Float64),
    confidence_hist   Array(UInt64)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window, tenant, model_id, model_version, segment, endpoint, deployment, extra_dims, window_start);

-- Late events: one row per event x window it missed x grouping cell.
CREATE TABLE IF NOT EXISTS {db}.metrics_late
(
    window        LowCardinality(String),
    window_start  DateTime64(3, 'UTC'),
    window_end    DateTime64(3, 'UTC'),
    tenant        LowCardinality(String),
    model_id      LowCardinality(String),
    deployment    LowCardinality(String),
    model_version LowCardinality(String),
    segment       LowCardinality(String),
    endpoint      LowCardinality(String),
    extra_dims    String,
    stream        LowCardinality(String),
    event_id      String,
    ts            DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (window, tenant, model_id, model_version, segment, endpoint, deployment, extra_dims, window_start, stream, event_id);

-- late_count / late_inference_count per window x dims cell, for joining to metrics.
CREATE VIEW IF NOT EXISTS {db}.late_counts AS
SELECT
    window, window_start, window_end, tenant, model_id, deployment, model_version, segment,
    endpoint, extra_dims,
    countIf(stream = 'feedback') AS late_count,
    countIf(stream = 'inference') AS late_inference_count
FROM {db}.metrics_late FINAL
GROUP BY window, window_start, window_end, tenant, model_id, deployment, model_version,
    segment, endpoint, extra_dims;
