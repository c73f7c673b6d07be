-- Silences added at run time (`pulse silence add`; connectors/silence_store.py): one row per
-- change of a silence, the latest (highest `version`) per id wins. `until` is the absolute
-- expiry, compared with event time by the rules stage; `pulse silence expire` writes a new
-- version with `until` moved to the moment it was expired. Read with FINAL.
CREATE TABLE IF NOT EXISTS {db}.silences
(
    id         String,
    matchers   String,
    created_at DateTime64(3, 'UTC'),
    until      DateTime64(3, 'UTC'),
    comment    String,
    version    UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY id;
