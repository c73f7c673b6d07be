-- Metrics keyed by a value within a window x dims cell (operators/families.py): label
-- classes, policy pairs, report categories; and macro-F1 on the main rows. Early/final
-- rows and versions work as in `metrics`.

ALTER TABLE {db}.metrics ADD COLUMN IF NOT EXISTS macro_f1 Nullable(Float64) AFTER error_rate;

CREATE TABLE IF NOT EXISTS {db}.metrics_classes
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
    class         String,
    final         UInt8,
    version       UInt64,
    tp            UInt64,
    fp            UInt64,
    fn            UInt64,
    support       UInt64,
    precision     Nullable(Float64),
    recall        Nullable(Float64),
    f1            Nullable(Float64)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window, tenant, model_id, model_version, segment, endpoint, deployment, extra_dims, class, window_start);

CREATE TABLE IF NOT EXISTS {db}.metrics_preferences
(
    window          LowCardinality(String),
    window_start    DateTime64(3, 'UTC'),
    window_end      DateTime64(3, 'UTC'),
    tenant          LowCardinality(String),
    model_id        LowCardinality(String),
    deployment      LowCardinality(String),
    model_version   LowCardinality(String),
    segment         LowCardinality(String),
    endpoint        LowCardinality(String),
    extra_dims      String,
    policy_a        String,
    policy_b        String,
    final           UInt8,
    version         UInt64,
    wins_a          UInt64,
    wins_b          UInt64,
    ties            UInt64,
    comparisons     UInt64,
    win_rate_a      Nullable(Float64),
    win_rate_a_low  Nullable(Float64),
    win_rate_a_high Nullable(Float64)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window, tenant, model_id, model_version, segment, endpoint, deployment, extra_dims, policy_a, policy_b, window_start);

CREATE TABLE IF NOT EXISTS {db}.metrics_reports
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
    category          String,
    final             UInt8,
    version           UInt64,
    report_count      UInt64,
    report_amount_sum Float64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (window, tenant, model_id, model_version, segment, endpoint, deployment, extra_dims, category, window_start);
