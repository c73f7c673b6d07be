-- Fewer background merges of the raw tables, as 0007 did for the metric tables
-- (docs/performance.md, "The sink's share ..."): `events`, `inferences`, `metrics_late`
-- and `sessions` merge once ~20 parts of a similar size are there (the default is 5).
-- After 0007 these were most of what chDB still merged in a bounded run (0.4-1.1 s of
-- a 300k-event run; `inferences` and `events` ~0.2 s each). Rows read are the same: the
-- tables are ReplacingMergeTree, read with FINAL or argMax(..., version). The cost is
-- more active parts, and `inferences` is read by request id (the join store's lookups
-- after a feedback's wait): ~0.4-0.9 ms more CPU per lookup and extra part, measured
-- with 10 and 50 parts; a 300k-event run leaves 10 parts instead of 6 and looks up 35
-- times. Settings only: existing parts are untouched, and repeating these is harmless.
ALTER TABLE {db}.events MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.inferences MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.metrics_late MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.sessions MODIFY SETTING merge_selector_base = 20;
