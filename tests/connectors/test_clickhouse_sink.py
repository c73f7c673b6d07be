"""The ClickHouse sink's memory bound against the real engine (chDB): rows being inserted
count towards backpressure, a large batch is bounded slice by slice, the writer
converts one block to Arrow at a time, and a wide table's blocks and the rows waiting are
bounded in bytes as well as rows (chDB's insert memory follows a block's bytes)."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from connectors import clickhouse_sink
from connectors.clickhouse import Target, connect, describe, migrate
from connectors.sink_demand import SinkDemand
from operators.batches import Categorical, TableRows
from operators.stats import FlowStats
from tests.conftest import Store


def _late_rows(schema: list[tuple[str, str]], first: int, n: int) -> TableRows:
    columns: dict[str, Any] = {name: [""] * n for name, _ in schema}
    columns.update(
        window=Categorical(np.zeros(n, dtype=np.int32), ["1m"]),
        window_start=np.zeros(n, dtype=np.int64),
        window_end=np.full(n, 60_000, dtype=np.int64),
        ts=np.ones(n, dtype=np.int64),
        event_id=[f"e{first + i}" for i in range(n)],
    )
    return TableRows("metrics_late", columns)


def test_a_large_batch_waits_slice_by_slice_while_rows_are_being_inserted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    converted: list[int] = []  # rows of each Arrow conversion
    real_to_arrow = clickhouse_sink.to_arrow

    def to_arrow(columns: dict[str, Any], schema: list[tuple[str, str]]) -> Any:
        table = real_to_arrow(columns, schema)
        converted.append(table.num_rows)
        return table

    monkeypatch.setattr(clickhouse_sink, "to_arrow", to_arrow)
    inserting, release = threading.Event(), threading.Event()
    inserts: list[tuple[int, int]] = []  # (rows of the block, rows converted so far)

    class HeldClient:
        """The real client, whose inserts wait until the test lets them go (a slow server)."""

        def __init__(self, target: Target) -> None:
            self.client = connect(target)

        def insert_arrow(self, table: str, arrow: Any, settings: Any = None) -> Any:
            inserts.append((arrow.num_rows, sum(converted)))
            inserting.set()
            release.wait()
            return self.client.insert_arrow(table, arrow, settings=settings)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

    writer = clickhouse_sink._Writer(
        store.target, block_rows=50, flush_interval=0.05, max_pending_rows=100,
        retry_backoff_max=0.1, stats=FlowStats(), client_factory=HeldClient,
        exit_on_failure=False,
    )  # fmt: skip
    batch = [_late_rows(schema, i * 60, 60) for i in range(4)]  # 240 rows in one hand-over
    adder = threading.Thread(target=writer.add, args=(batch,))
    adder.start()
    try:
        assert inserting.wait(30)
        # The first insert is held: what was handed over counts until it is written, so
        # the rest of the batch waits (it used to be taken whole, and the bound ignored).
        adder.join(timeout=0.5)
        assert adder.is_alive()
        assert inserts[0] == (50, 50)  # one block converted to Arrow, not everything taken
    finally:
        release.set()
        adder.join(timeout=60)
        writer.close()
    assert not adder.is_alive()
    assert max(rows for rows, _ in inserts) <= 50
    assert store.rows("SELECT count(), uniqExact(event_id) FROM pulse.metrics_late") == [(240, 240)]


class _HeldClient:
    """The real client; each insert is recorded, and waits until `release` is set (a
    slow server)."""

    def __init__(self, target: Target, release: threading.Event, inserts: list[int]) -> None:
        self.client = connect(target)
        self.release = release
        self.inserts = inserts

    def insert_arrow(self, table: str, arrow: Any, settings: Any = None) -> Any:
        self.inserts.append(arrow.num_rows)
        self.release.wait()
        return self.client.insert_arrow(table, arrow, settings=settings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_row_bytes_counts_a_matrix_column_by_its_row_and_strings_by_their_length() -> None:
    rows = TableRows(
        "t",
        {
            "a": np.zeros(4, dtype=np.int64),  # 8
            "m": np.zeros((4, 10), dtype=np.int64),  # 80
            "c": Categorical(np.zeros(4, dtype=np.int32), ["x"]),  # 4
            "s": ["abcd"] * 4,  # 8 + 4
        },
    )
    assert clickhouse_sink.row_bytes(rows) == 104


def test_a_wide_tables_blocks_are_bounded_in_bytes_and_every_row_is_written(
    store: Store,
) -> None:
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    width = clickhouse_sink.row_bytes(_late_rows(schema, 0, 1))
    release, inserts = threading.Event(), []
    release.set()
    writer = clickhouse_sink._Writer(
        store.target, block_rows=1000, flush_interval=0.05, max_pending_rows=10_000,
        retry_backoff_max=0.1, stats=FlowStats(), block_bytes=width * 40,
        client_factory=lambda target: _HeldClient(target, release, inserts),
        exit_on_failure=False,
    )  # fmt: skip
    try:
        assert writer.block_rows_of("metrics_late") == 1000  # before its rows are seen
        writer.add([_late_rows(schema, i * 60, 60) for i in range(4)])
        assert writer.block_rows_of("metrics_late") == 40
        writer.flush()
    finally:
        writer.close()
    assert inserts and max(inserts) <= 40  # 1000 rows a block by count alone
    assert sum(inserts) == 240
    assert store.rows("SELECT count(), uniqExact(event_id) FROM pulse.metrics_late") == [(240, 240)]


def test_rows_waiting_are_bounded_in_bytes_when_the_row_bound_is_far(store: Store) -> None:
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    width = clickhouse_sink.row_bytes(_late_rows(schema, 0, 1))
    release, inserts = threading.Event(), []
    writer = clickhouse_sink._Writer(
        store.target, block_rows=50, flush_interval=0.05, max_pending_rows=1_000_000,
        retry_backoff_max=0.1, stats=FlowStats(), max_pending_bytes=width * 100,
        client_factory=lambda target: _HeldClient(target, release, inserts),
        exit_on_failure=False,
    )  # fmt: skip
    adder = threading.Thread(target=writer.add, args=([_late_rows(schema, 0, 60)],))
    adder.start()
    adder.join(timeout=30)
    assert not adder.is_alive()  # 60 rows: within 100 rows' bytes
    batch = [_late_rows(schema, 60 + i * 60, 60) for i in range(3)]
    adder = threading.Thread(target=writer.add, args=(batch,))
    adder.start()
    try:
        adder.join(timeout=0.5)
        assert adder.is_alive()  # 120 rows' bytes wait while the held insert is not written
    finally:
        release.set()
        adder.join(timeout=60)
        writer.close()
    assert not adder.is_alive()
    assert store.rows("SELECT count(), uniqExact(event_id) FROM pulse.metrics_late") == [(240, 240)]


def test_write_batch_lets_go_of_each_item_it_hands_over(store: Store) -> None:
    """Bytewax's list is the only other reference to the rows: emptied as they are handed
    over, a large batch (on_eof's) is freed as it is written, not kept whole."""
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    writer = clickhouse_sink._Writer(
        store.target, block_rows=50, flush_interval=0.05, max_pending_rows=1000,
        retry_backoff_max=0.1, stats=FlowStats(), exit_on_failure=False,
    )  # fmt: skip
    partition = clickhouse_sink.ClickHouseSinkPartition(writer)
    batch = [_late_rows(schema, i * 60, 60) for i in range(4)]
    try:
        partition.write_batch(batch)
        assert batch == []
    finally:
        partition.close()
    assert store.rows("SELECT count(), uniqExact(event_id) FROM pulse.metrics_late") == [(240, 240)]


def _dead_letter_rows(first: int, n: int) -> TableRows:
    return TableRows(
        "dead_letters",
        {
            "topic": ["t"] * n,
            "partition": np.zeros(n, dtype=np.uint32),
            "offset": np.arange(first, first + n, dtype=np.uint64),
            "error": ["e"] * n,
            "reason": ["r"] * n,
            "raw": ["x"] * n,
            "raw_size": np.ones(n, dtype=np.uint64),
        },
    )


def _hour_interval_writer(store: Store, stats: FlowStats, inserts: list[int]) -> Any:
    """A writer whose tables wait an hour between writes unless something else asks."""
    release = threading.Event()
    release.set()
    return clickhouse_sink._Writer(
        store.target, block_rows=1000, flush_interval=3600.0, max_pending_rows=10_000,
        retry_backoff_max=0.1, stats=stats,
        client_factory=lambda target: _HeldClient(target, release, inserts),
        exit_on_failure=False,
    )  # fmt: skip


def _written(stats: FlowStats, rows: int) -> bool:
    """Whether `rows` are written within 30 s (an insert's time, far below the interval)."""
    for _ in range(300):
        if stats.rows_written >= rows:
            return True
        threading.Event().wait(0.1)
    return False


def test_each_table_keeps_its_own_flush_interval(store: Store) -> None:
    """Rows of a table not written for an interval go out when they arrive, although
    another table was just written (an early-row emission is not held until the raw
    tables' interval next ends); a table written within its interval waits."""
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    stats, inserts = FlowStats(), []
    writer = _hour_interval_writer(store, stats, inserts)

    try:
        writer.add([_late_rows(schema, 0, 60)])
        assert _written(stats, 60)
        writer.add([_dead_letter_rows(0, 5)])
        assert _written(stats, 65)  # its own interval: never written before
        writer.add([_late_rows(schema, 60, 60)])
        threading.Event().wait(0.5)
        assert stats.rows_written == 65  # written 0.5 s ago, interval 3,600 s: waits
        writer.flush()
        assert stats.rows_written == 125
    finally:
        writer.close()
    assert inserts == [60, 5, 60]
    assert store.rows("SELECT count() FROM pulse.metrics_late") == [(120,)]


def test_rows_marked_write_now_do_not_wait_for_their_tables_interval(store: Store) -> None:
    """Early rows marked `write_now` (a spec that emits at every tick) are written when
    they arrive, with the rows their lane holds, although the lane was written within
    its interval; unmarked ones wait for the interval (an hour here)."""
    migrate(store.open(), "pulse")
    stats, inserts = FlowStats(), []
    writer = _hour_interval_writer(store, stats, inserts)
    try:
        writer.add([_class_rows(0, 3, final=False)])
        assert _written(stats, 3)  # the lane's first rows: written at once
        writer.add([_class_rows(3, 4, final=False)])
        threading.Event().wait(0.5)
        assert stats.rows_written == 3  # within the interval: waits
        marked = _class_rows(7, 5, final=False)
        marked.write_now = True
        writer.add([marked])
        assert _written(stats, 12)  # with the 4 that waited, in one insert
        writer.add([_class_rows(12, 2, final=False)])
        threading.Event().wait(0.5)
        assert stats.rows_written == 12  # the mark went with its rows
        assert marked.slice(1, 3).write_now  # a block's remainder keeps it
    finally:
        writer.close()
    assert inserts == [3, 9, 2]


def _class_rows(first: int, n: int, final: bool) -> TableRows:
    """`metrics_classes` rows of one window, early (final = 0) or final."""
    dims = {name: [""] * n for name in ("tenant", "model_id", "deployment", "model_version",
                                        "segment", "endpoint", "extra_dims")}  # fmt: skip
    counts = {name: np.ones(n, dtype=np.uint64) for name in ("tp", "fp", "fn", "support")}
    return TableRows(
        "metrics_classes",
        {
            "window": Categorical(np.zeros(n, dtype=np.int32), ["1m"]),
            "window_start": np.zeros(n, dtype=np.int64),
            "window_end": np.full(n, 60_000, dtype=np.int64),
            **dims,
            "class": [f"c{first + i}" for i in range(n)],
            "final": np.full(n, 1 if final else 0, dtype=np.uint8),
            "version": np.full(n, 2**62 if final else 1, dtype=np.uint64),
            **counts,
            **{name: np.full(n, 0.5) for name in ("precision", "recall", "f1")},
        },
    )


def test_a_snapshot_waits_for_durable_rows_not_for_early_rows(store: Store) -> None:
    """`flush` (a snapshot) writes and waits for every row that must survive a crash, but
    early window rows (replaced by a later row of their key, at last the final one) stay
    buffered for their interval: they are buffered apart from the same table's final
    rows, so a flush never waits for them. Closing writes them."""
    migrate(store.open(), "pulse")
    stats, inserts = FlowStats(), []
    writer = _hour_interval_writer(store, stats, inserts)
    early, final = _class_rows(0, 40, final=False), _class_rows(40, 10, final=True)
    assert early.provisional and not final.provisional
    assert not _dead_letter_rows(0, 5).provisional  # no `final` column: durable

    try:
        first = [_dead_letter_rows(0, 5), _class_rows(100, 1, final=True),
                 _class_rows(200, 1, final=False)]  # fmt: skip
        writer.add(first)
        assert _written(stats, 7)  # each lane's first rows: written at once
        writer.add([early, final, _dead_letter_rows(5, 5)])
        threading.Event().wait(0.3)
        assert stats.rows_written == 7  # within the interval: all wait
        writer.flush()
        assert stats.rows_written == 22  # the final and dead-letter rows, not the early
        assert store.rows("SELECT count() FROM pulse.metrics_classes WHERE final = 0") == [(1,)]
    finally:
        writer.close()
    assert sorted(inserts[:3]) == [1, 1, 5] and sorted(inserts[3:5]) == [5, 10]
    assert inserts[5:] == [40]  # the early rows at close
    assert store.rows("SELECT count() FROM pulse.metrics_classes WHERE final = 0") == [(41,)]


def test_a_stage_waiting_on_the_sink_has_it_write_at_once(store: Store) -> None:
    """Asked through the flow's SinkDemand, the writer writes what it holds, and what comes
    until it holds nothing, without waiting for the table's interval; then the interval
    applies again (the merge stage's final windows waiting on the sink, not both idle)."""
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    stats, inserts = FlowStats(), []
    writer = _hour_interval_writer(store, stats, inserts)
    demand = SinkDemand()
    demand.attach(writer.hurry)

    try:
        writer.add([_late_rows(schema, 0, 60)])
        assert _written(stats, 60)  # the table's first rows: no interval yet
        writer.add([_late_rows(schema, 60, 60)])
        threading.Event().wait(0.3)
        assert stats.rows_written == 60  # within the interval: waits
        demand.ask()
        assert _written(stats, 120)  # asked: written now
        demand.ask()  # asked while it holds nothing: the next rows go at once
        writer.add([_late_rows(schema, 120, 10)])
        assert _written(stats, 130)
        writer.add([_late_rows(schema, 130, 10)])
        threading.Event().wait(0.3)
        assert stats.rows_written == 130  # all it held was written: the interval again
    finally:
        writer.close()
    assert inserts == [60, 60, 10, 10]


def test_a_blocks_chunks_are_joined_before_their_one_conversion(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many small chunks (a live source's batches) are converted to Arrow once per block,
    not once per chunk, with Categoricals of different categories recoded: the rows
    written are the same."""
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    conversions: list[int] = []
    real_to_arrow = clickhouse_sink.to_arrow

    def to_arrow(columns: dict[str, Any], schema: list[tuple[str, str]]) -> Any:
        table = real_to_arrow(columns, schema)
        conversions.append(table.num_rows)
        return table

    monkeypatch.setattr(clickhouse_sink, "to_arrow", to_arrow)
    chunks = [_late_rows(schema, i * 3, 3) for i in range(20)]
    for i, chunk in enumerate(chunks):  # each chunk its own window dictionary
        chunk.columns["window"] = Categorical(np.full(3, i % 2, dtype=np.int32), ["1m", f"w{i}"])
    writer = clickhouse_sink._Writer(
        store.target, block_rows=1000, flush_interval=0.05, max_pending_rows=10_000,
        retry_backoff_max=0.1, stats=FlowStats(), exit_on_failure=False,
    )  # fmt: skip
    try:
        writer.add(chunks)
        writer.flush()
    finally:
        writer.close()
    assert conversions == [60]
    got = store.rows("SELECT window, count() FROM pulse.metrics_late GROUP BY window ORDER BY 1")
    expected = sorted([("1m", 30)] + [(f"w{i}", 3) for i in range(1, 20, 2)])
    assert got == expected


class _OrderedClient:
    """The real client; records each insert's (table, rows) and holds the inserts whose
    number (from 1) is in `holds` until their event is set, setting `started` first."""

    def __init__(self, target: Target, holds: dict[int, threading.Event],
                 started: dict[int, threading.Event], inserts: list[tuple[str, int]]) -> None:  # fmt: skip
        self.client = connect(target)
        self.holds, self.started, self.inserts = holds, started, inserts

    def insert_arrow(self, table: str, arrow: Any, settings: Any = None) -> Any:
        self.inserts.append((table.split(".")[-1], arrow.num_rows))
        number = len(self.inserts)
        if number in self.holds:
            self.started[number].set()
            assert self.holds[number].wait(30)
        return self.client.insert_arrow(table, arrow, settings=settings)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _ordered_writer(
    store: Store, held: tuple[int, ...]
) -> tuple[Any, dict[int, threading.Event], dict[int, threading.Event], list[tuple[str, int]]]:
    """A writer with hour-long intervals, whose inserts numbered `held` wait for the test."""
    holds = {n: threading.Event() for n in held}
    started = {n: threading.Event() for n in held}
    inserts: list[tuple[str, int]] = []
    writer = clickhouse_sink._Writer(
        store.target, block_rows=10, flush_interval=3600.0, max_pending_rows=10_000,
        retry_backoff_max=0.1, stats=FlowStats(),
        client_factory=lambda target: _OrderedClient(target, holds, started, inserts),
        exit_on_failure=False,
    )  # fmt: skip
    return writer, holds, started, inserts


def _write_now(rows: TableRows) -> TableRows:
    rows.write_now = True
    return rows


def test_rows_to_write_at_once_go_first_in_a_round_of_blocks(store: Store) -> None:
    """Rows marked `write_now` that wait while an insert runs go before the durable
    blocks due with them (a window's final rows, raw rows): the minute's early rows
    wait for one block, not for the round."""
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    writer, holds, started, inserts = _ordered_writer(store, held=(1,))
    try:
        writer.add([_late_rows(schema, 0, 6)])
        assert started[1].wait(30)  # its insert runs (held)
        writer.add([_dead_letter_rows(0, 10), _write_now(_class_rows(0, 3, final=False))])
        holds[1].set()
        writer.flush()
        assert _written(writer.stats, 19)
    finally:
        writer.close()
    assert inserts == [("metrics_late", 6), ("metrics_classes", 3), ("dead_letters", 10)]


def _inserts_around_a_round(
    store: Store, round_rows: list[TableRows], during: list[TableRows]
) -> tuple[list[int], FlowStats]:
    """Rows of each insert when `round_rows` are due in one round of blocks and `during`
    arrive while its first block is written (after a first insert of 6 rows)."""
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")
    writer, holds, started, inserts = _ordered_writer(store, held=(1, 2))
    total = 6 + sum(map(len, round_rows)) + sum(map(len, during))
    try:
        writer.add([_late_rows(schema, 0, 6)])
        assert started[1].wait(30)
        writer.add(round_rows)
        holds[1].set()
        assert started[2].wait(30)  # the round's first block is being written
        writer.add(during)
        holds[2].set()
        writer.flush()
        assert _written(writer.stats, total)
    finally:
        writer.close()
    return [rows for _, rows in inserts], writer.stats


def test_rows_to_write_at_once_go_between_two_blocks_of_a_round(store: Store) -> None:
    """Rows marked `write_now` that arrive while a round of blocks is written go after
    the block being written, before the round's other blocks."""
    # Two durable lanes, never written: both due in the next round.
    inserts, stats = _inserts_around_a_round(
        store, [_dead_letter_rows(0, 5), _class_rows(0, 7, final=True)],
        during=[_write_now(_class_rows(7, 3, final=False))],
    )  # fmt: skip
    assert inserts == [6, 5, 3, 7]
    assert stats.now_written == stats.sink_now_in == 3


def test_a_lanes_rows_go_in_order_when_picked_up_between_blocks(store: Store) -> None:
    """Rows to write at once that arrive during a round go before its other blocks,
    except behind a block of their own lane still to be written: a lane's rows are
    written in the order they were handed over."""
    # The round: dead letters (durable) first, then classes; during it, more of both.
    inserts, _ = _inserts_around_a_round(
        store,
        [_write_now(_class_rows(0, 3, final=False)), _write_now(_dead_letter_rows(0, 5))],
        during=[_write_now(_class_rows(3, 4, final=False)), _write_now(_dead_letter_rows(5, 2))],
    )
    # The new dead letters go before the round's classes block; the new classes after it.
    assert inserts == [6, 5, 2, 3, 4]
