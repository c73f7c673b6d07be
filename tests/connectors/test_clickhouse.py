"""The ClickHouse connector against the real engine (chDB)."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from connectors.clickhouse import ClickHouseError, describe, migrate, migrations, to_arrow
from operators.batches import NullableColumn
from operators.cells import CellDims
from operators.columnar.join_buffer import InferenceColumns
from operators.events import Feedback, Inference
from operators.metrics import (
    HISTOGRAM_METRIC,
    KIND_CODES,
    LATENCY_METRICS,
    METRIC_COLUMNS,
    METRICS,
    as_label,
    value_numbers,
)
from operators.rows import EventRows, InferenceRows, LateRows, ReadValues
from tests.conftest import ROOT, Store


def test_migrations_are_idempotent_and_create_every_table(store: Store) -> None:
    client = store.open()
    migrate(client, "pulse")
    assert migrate(client, "pulse") == []
    tables = {r[0] for r in store.rows("SHOW TABLES FROM pulse")}
    assert {"inferences", "events", "dead_letters", "metrics", "metrics_late", "late_counts",
            "metrics_classes", "metrics_preferences", "metrics_reports", "schema_migrations"} <= tables  # fmt: skip
    assert [v for v, _, _ in migrations()] == sorted(v for v, _, _ in migrations())


def test_metrics_table_has_a_column_for_every_catalogue_metric(store: Store) -> None:
    migrate(store.open(), "pulse")
    columns = [name for name, _ in describe(store.client, "pulse", "metrics")]
    assert columns[columns.index("version") + 1 :] == list(METRIC_COLUMNS)
    assert set(METRIC_COLUMNS) >= set(METRICS) | set(LATENCY_METRICS) | {HISTOGRAM_METRIC}


def test_rows_of_every_raw_table_convert_to_their_column_types(store: Store) -> None:
    client = store.open()
    migrate(client, "pulse")
    inference = Inference(request_id="r", ts=1_767_225_600_123, tenant="t", model_id="m",
                          model_version="v", deployment="primary", segment="s", endpoint="e",
                          prediction=1.0, confidence=None, attributes={"k": "v"})  # fmt: skip
    rows = InferenceRows()
    label = as_label(inference.prediction)
    rows.extend(
        [inference],
        InferenceColumns.of([inference], np.array([inference.ts]), [0], [label]),
        [inference.request_id],
        [17],
        np.zeros(1, np.bool_),
    )
    taken = rows.take(2, partial(CellDims().columns, [("t", "m", "primary", "v", "s", "e")]))
    client.insert_arrow(
        "pulse.inferences", to_arrow(taken.columns, describe(client, "pulse", "inferences"))
    )
    assert store.rows(
        "SELECT request_id, toUnixTimestamp64Milli(ts), prediction, attributes, version FROM pulse.inferences"
    ) == [("r", 1_767_225_600_123, "1", {"k": "v"}, (1 << 63) - 1 - 17)]
    late = LateRows(())
    late.add("1m", 60_000, 120_000, [("t", "m", "p", "v", "*", "*")], "feedback", "e1", 61_000)
    client.insert_arrow(
        "pulse.metrics_late",
        to_arrow(late.take().columns, describe(client, "pulse", "metrics_late")),
    )
    assert store.rows(
        "SELECT window, model_version, segment, late_count FROM pulse.late_counts"
    ) == [("1m", "v", "*", 1)]
    events = EventRows()
    feedback = Feedback(event_id="e", request_id="r", ts=5_000, kind="report", user_id="u",
                        value={"category": "fraud", "amount": None})  # fmt: skip
    unjoined = InferenceColumns(  # an unjoined event's columns: none is read
        np.zeros(1, np.int64), np.zeros(1, np.int64), np.full(1, None, dtype=np.object_),
        np.full(1, np.nan), np.full(1, np.nan),
    )  # fmt: skip
    number = value_numbers(np.array([KIND_CODES["report"]]), [feedback.value])  # no amount
    read = ReadValues(
        np.array([feedback.ts]), np.array([KIND_CODES["report"]]), [feedback.value], number,
        np.full(1, None, np.object_), NullableColumn(np.zeros(1, np.bool_), np.zeros(1, np.bool_)),
    )  # fmt: skip
    events.extend([feedback], read, unjoined, np.zeros(1, np.bool_), [3], np.ones(1, np.bool_))
    taken = events.take(0, partial(CellDims().columns, [("unknown",) * 6]))
    client.insert_arrow(
        "pulse.events", to_arrow(taken.columns, describe(client, "pulse", "events"))
    )
    assert store.rows(
        "SELECT kind, value, value_num, joined, late, inference_ts, prediction, confidence "
        "FROM pulse.events"
    ) == [("report", '{"category":"fraud","amount":null}', None, 0, 1, None, None, None)]


def test_attribute_maps_keep_every_row_s_own_pairs(store: Store) -> None:
    """Every row keeps its own attributes through the Arrow conversion and chDB: empty
    maps between full ones, several keys, unicode, empty values."""
    client = store.open()
    migrate(client, "pulse")
    attributes = [
        {},
        {"country": "de", "exp": "b"},
        {},
        {"k": ""},
        {"é": "ü", "a": "1", "b": "2"},
        {},
    ]
    rows = InferenceRows()
    for i, attrs in enumerate(attributes):
        inference = Inference(request_id=f"r{i}", ts=1_767_225_600_000 + i, model_id="m",
                              model_version="v", endpoint="e", attributes=attrs)  # fmt: skip
        rows.extend(
            [inference],
            InferenceColumns.of([inference], np.array([inference.ts]), [0], [None]),
            [inference.request_id],
            [i],
            np.zeros(1, np.bool_),
        )
    taken = rows.take(
        0, partial(CellDims().columns, [("default", "m", "primary", "v", "default", "e")])
    )
    client.insert_arrow(
        "pulse.inferences", to_arrow(taken.columns, describe(client, "pulse", "inferences"))
    )
    stored = store.rows("SELECT attributes FROM pulse.inferences ORDER BY request_id")
    assert [row[0] for row in stored] == attributes


def test_event_rows_keep_each_row_s_nulls_in_flags_times_and_labels(store: Store) -> None:
    """The events' `correct`, `inference_ts` and `label` go to Arrow as arrays with their
    nulls (a validity mask, None in an object array): each row keeps its own."""
    client = store.open()
    migrate(client, "pulse")
    kinds = ["label", "label", "thumbs"]
    values: list = ["cat", "dog", True]
    events = [
        Feedback(event_id=f"e{i}", request_id=f"r{i}", ts=5_000 + i, kind=kind, user_id="u",
                 value=value)
        for i, (kind, value) in enumerate(zip(kinds, values, strict=True))
    ]  # fmt: skip
    joined = np.array([True, True, False])
    context = InferenceColumns(  # the third is unjoined: its inference columns are null
        np.array([4_000, 4_001, 0]), np.zeros(3, np.int64),
        np.array(["cat", "cat", None], dtype=np.object_), np.full(3, np.nan), np.full(3, np.nan),
    )  # fmt: skip
    codes = np.array([KIND_CODES[kind] for kind in kinds])
    read = ReadValues(
        np.array([e.ts for e in events]), codes, values, value_numbers(codes, values),
        np.array(["cat", "dog", None], dtype=np.object_),
        NullableColumn(np.array([True, False, False]), np.array([True, True, False])),
    )  # fmt: skip
    rows = EventRows()
    rows.extend(events, read, context, joined, [0, 1, 2], np.zeros(3, np.bool_))
    taken = rows.take(0, partial(CellDims().columns, [("t", "m", "p", "v", "s", "e")]))
    client.insert_arrow(
        "pulse.events", to_arrow(taken.columns, describe(client, "pulse", "events"))
    )
    assert store.rows(
        "SELECT event_id, kind, label, correct, toUnixTimestamp64Milli(inference_ts), prediction "
        "FROM pulse.events ORDER BY event_id"
    ) == [
        ("e0", "label", "cat", 1, 4_000, "cat"),
        ("e1", "label", "dog", 0, 4_001, "cat"),
        ("e2", "thumbs", None, None, None, None),
    ]


def test_a_nullable_column_of_another_type_is_refused_not_written_without_its_nulls() -> None:
    """A NullableColumn's mask applies to integer and time columns; for a float or string
    column it would be dropped (NaN is a float column's null), so it is refused."""
    flags = np.array([True, False])
    for ch_type in ("Nullable(Float64)", "Nullable(String)"):
        column = NullableColumn(np.array([0.5, 1.5]), flags)
        with pytest.raises(ClickHouseError, match="integer and time columns"):
            to_arrow({"x": column}, [("x", ch_type)])


def test_numpy_metric_columns_keep_nulls_and_arrays(store: Store) -> None:
    client = store.open()
    migrate(client, "pulse")
    schema = describe(client, "pulse", "metrics")
    n = 2
    columns: dict = {name: np.zeros(n) for name, _ in schema}
    columns.update({name: ["x"] * n for name in ("window", "tenant", "model_id", "deployment",
                                                   "model_version", "segment", "endpoint", "extra_dims")})  # fmt: skip
    columns["window_start"] = np.array([0, 60_000])
    columns["window_end"] = np.array([60_000, 120_000])
    columns["accuracy"] = np.array([0.5, np.nan])
    columns[HISTOGRAM_METRIC] = np.array([[1.0, 2.0], [0.0, 3.0]])
    client.insert_arrow("pulse.metrics", to_arrow(columns, schema))
    assert store.rows(
        "SELECT accuracy, confidence_hist FROM pulse.metrics ORDER BY window_start"
    ) == [(0.5, [1, 2]), (None, [0, 3])]


def test_the_sink_writes_batches_with_different_dictionaries_in_one_block(store: Store) -> None:
    from connectors.clickhouse_sink import ClickHouseSink
    from operators.batches import Categorical, TableRows
    from operators.stats import FlowStats

    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")

    def batch(window: str, event_id: str) -> TableRows:
        columns: dict = {name: [""] for name, _ in schema}
        columns.update(window=Categorical(np.array([0], dtype=np.int32), [window]),
                       window_start=[0], window_end=[60_000], ts=[1], event_id=[event_id])  # fmt: skip
        return TableRows("metrics_late", columns)

    sink = ClickHouseSink(store.target, block_rows=1000, flush_interval_ms=60_000,
                          max_pending_rows=1000, retry_backoff_max_ms=100, stats=FlowStats())  # fmt: skip
    part = sink.build_part("clickhouse", "clickhouse", None)
    part.write_batch([batch("1m", "a"), batch("5m", "b")])
    part.snapshot()  # flushes: both batches in one insert
    part.close()
    assert store.rows("SELECT window, event_id FROM pulse.metrics_late ORDER BY event_id") == [
        ("1m", "a"),
        ("5m", "b"),
    ]


def _table_settings(store: Store, table: str) -> dict[str, str]:
    """The SETTINGS clause of `table`'s engine, as name -> value."""
    engine = store.scalar(
        f"SELECT engine_full FROM system.tables WHERE database = 'pulse' AND name = '{table}'"
    )
    return dict(pair.strip().split(" = ") for pair in engine.split(" SETTINGS ", 1)[1].split(","))


WIDE_TABLES = ("metrics", "metrics_classes", "metrics_preferences", "metrics_reports",
               "metrics_late", "events", "inferences", "sessions")  # fmt: skip


def test_wide_tables_merge_vertically_with_small_compression_buffers(store: Store) -> None:
    """A horizontal merge of wide `metrics` parts held 145-220 MiB (docs/performance.md):
    every table the flow writes in volume merges a column at a time, 256 KiB buffers."""
    migrate(store.open(), "pulse")
    for table in WIDE_TABLES:
        settings = _table_settings(store, table)
        assert settings["vertical_merge_algorithm_min_rows_to_activate"] == "1", table
        assert settings["vertical_merge_algorithm_min_columns_to_activate"] == "1", table
        assert settings["max_compress_block_size"] == "262144", table


METRIC_TABLES = ("metrics", "metrics_classes", "metrics_preferences", "metrics_reports")


def test_metric_tables_wait_for_more_parts_before_merging(store: Store) -> None:
    """chDB's background merges were ~16 % of a bounded run's CPU, most of it `metrics`
    (docs/performance.md, "Profile of the bounded flow"): the metric tables merge parts
    only once ~20 of a similar size are there (the default is 5), rewriting each row
    fewer times."""
    migrate(store.open(), "pulse")
    for table in METRIC_TABLES:
        settings = _table_settings(store, table)
        assert settings["merge_selector_base"] == "20", table


RAW_TABLES = ("events", "inferences", "metrics_late", "sessions")


def test_raw_tables_wait_for_more_parts_before_merging(store: Store) -> None:
    """After 0007 the raw tables' merges were most of what chDB still merged in a bounded
    run (docs/performance.md, "The sink's share ..."): they too merge once ~20 parts of a
    similar size are there. `inferences` is also read by request id (the join store's
    lookups): ~0.4-0.9 ms more CPU per lookup and extra part, and a 300k-event run leaves
    10 parts instead of 6 and makes 35 lookups, against 0.17 s of its merges saved."""
    migrate(store.open(), "pulse")
    for table in RAW_TABLES:
        settings = _table_settings(store, table)
        assert settings["merge_selector_base"] == "20", table


def test_migrating_a_fresh_store_does_not_import_pandas(tmp_path: Path) -> None:
    """Every fresh run migrates: recording a migration used clickhouse-connect's
    `insert`, which imports pandas (~0.4 s of start-up) to look at one row."""
    child = (
        "import sys; from pulse_migrate_child import run; run(sys.argv[1]); "
        "assert 'pandas' not in sys.modules, 'pandas was imported'"
    )
    (tmp_path / "pulse_migrate_child.py").write_text(
        "from pathlib import Path\n"
        "import clickhouse_connect\n"
        "from connectors.clickhouse import migrate\n"
        "def run(path):\n"
        "    client = clickhouse_connect.get_client(dsn=f'chdb://{path}')\n"
        "    assert migrate(client, 'pulse')\n"
        "    client.close()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(tmp_path)))}
    subprocess.run(
        [sys.executable, "-c", child, str(tmp_path / "olap")], env=env, check=True, timeout=120
    )


def test_converting_rows_to_arrow_does_not_import_pandas() -> None:
    """pyarrow imports pandas at its first conversion, only to ask whether a column is a
    pandas object: 0.3 s of imports in the sink's writer thread, mid-run. Every kind of
    column the sink converts leaves pandas unloaded; a conversion *to* pandas still works."""
    child = (
        "import sys, numpy as np\n"
        "from operators.arrow import binaries, string_maps, strings\n"
        "built = [strings(['a', None]), binaries([b'{}', b'1']), string_maps([{}, {'k': 'v'}])]\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported by the row builders'\n"
        "from connectors.clickhouse import to_arrow\n"
        "from operators.batches import Categorical, NullableColumn\n"
        "flags = np.array([True, False])\n"
        "table = to_arrow(\n"
        "    {'s': ['a', None], 'n': [1, 2], 'f': np.array([0.5, np.nan]), 'u': np.array([1, 2]),\n"
        "     'ts': [1, 2], 'd': Categorical(np.array([1, 0], np.int32), ['x', 'y']),\n"
        "     'o': np.array(['a', None], dtype=object), 't': np.array([1, 2]),\n"
        "     'nu': NullableColumn(flags, flags), 'nt': NullableColumn(np.array([1, 2]), flags),\n"
        "     'as': built[0], 'ab': built[1], 'am': built[2]},\n"
        "    [('s', 'Nullable(String)'), ('n', 'Int64'), ('f', 'Nullable(Float64)'),\n"
        "     ('u', 'UInt32'), ('ts', \"DateTime64(3, 'UTC')\"), ('d', 'LowCardinality(String)'),\n"
        "     ('o', 'Nullable(String)'), ('t', \"DateTime64(3, 'UTC')\"),\n"
        "     ('nu', 'Nullable(UInt8)'), ('nt', \"Nullable(DateTime64(3, 'UTC'))\"),\n"
        "     ('as', 'Nullable(String)'), ('ab', 'String'), ('am', 'Map(String, String)')],\n"
        ")\n"
        "assert [table.column(c).null_count for c in ('f', 'o', 'nu', 'nt', 'as')] == [1] * 5\n"
        "assert table.column('am').to_pylist() == [[], [('k', 'v')]]\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
        "assert table.to_pandas()['d'].tolist() == ['y', 'x']\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", child], env=env, check=True, timeout=120)
