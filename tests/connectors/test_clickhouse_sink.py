"""The ClickHouse sink's memory bound against the real engine (chDB): rows being inserted
count towards backpressure, a large batch is bounded slice by slice, and the writer
converts one block to Arrow at a time."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from connectors import clickhouse_sink
from connectors.clickhouse import Target, connect, describe, migrate
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
