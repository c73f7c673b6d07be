-- Background merges of the wide tables bounded in memory (docs/performance.md, "Memory at
-- the end of a bounded run"). A horizontal merge writes every column of its new part at
-- once, each stream with its own compression buffers: a merge of six 20k-row `metrics`
-- parts held 145-220 MiB, the largest share of what the end of a bounded run added.
-- * Vertical merges whenever the new part is wide (ClickHouse merges compact parts
--   horizontally whatever these say): the sort key first, then one column at a time.
-- * max_compress_block_size 256 KiB (the session default is 1 MiB): each column stream
--   of a wide part being written, by a merge or a large INSERT, buffers a quarter as much.
-- Settings only: existing parts are untouched, and repeating these is harmless.
ALTER TABLE {db}.metrics MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1, max_compress_block_size = 262144;
ALTER TABLE {db}.metrics_classes MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1, max_compress_block_size = 262144;
ALTER TABLE {db}.metrics_preferences MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1, max_compress_block_size = 262144;
ALTER TABLE {db}.metrics_reports MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1, max_compress_block_size = 262144;
ALTER TABLE {db}.metrics_late MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1, max_compress_block_size = 262144;
ALTER TABLE {db}.events MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1, max_compress_block_size = 262144;
ALTER TABLE {db}.inferences MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1, max_compress_block_size = 262144;
ALTER TABLE {db}.sessions MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1, vertical_merge_algorithm_min_columns_to_activate = 1, max_compress_block_size = 262144;
