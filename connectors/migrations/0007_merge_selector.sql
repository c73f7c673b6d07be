-- Fewer background merges of the metric tables (docs/performance.md, "Profile of the
-- bounded flow"): chDB's merges were ~16 % of a bounded run's CPU, most of it `metrics`
-- (48 columns, merged vertically since 0006). merge_selector_base sets how many parts of
-- a similar size the merge selector waits for before it merges them (default 5): a
-- higher base rewrites each row fewer times (write amplification ~ log_base of the parts
-- inserted) and keeps a few more parts active. Rows read are the same: the tables are
-- ReplacingMergeTree, read with FINAL, so when parts merge does not change a result.
-- Settings only: existing parts are untouched, and repeating these is harmless.
ALTER TABLE {db}.metrics MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.metrics_classes MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.metrics_preferences MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.metrics_reports MODIFY SETTING merge_selector_base = 20;
