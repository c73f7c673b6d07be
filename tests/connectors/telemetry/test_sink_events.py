"""The sink's retries and failures log with stable event names and count in FlowStats,
against the real engine (chDB) and a real refused connection."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from connectors import clickhouse_sink
from connectors.clickhouse import Target, connect, describe, migrate
from operators.stats import FlowStats
from tests.conftest import Store
from tests.connectors.test_clickhouse_sink import _late_rows


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None)]


def test_a_transient_failure_logs_sink_retry_then_sink_resumed(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    migrate(store.open(), "pulse")
    schema = describe(store.client, "pulse", "metrics_late")

    class DroppedOnce:
        """The real client, whose first insert finds the connection reset (a server
        restarting)."""

        failed = False

        def __init__(self, target: Target) -> None:
            self.client = connect(target)

        def insert_arrow(self, table: str, arrow: Any, settings: Any = None) -> Any:
            if not DroppedOnce.failed:
                DroppedOnce.failed = True
                raise ConnectionResetError("connection reset by peer")
            return self.client.insert_arrow(table, arrow, settings=settings)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

    stats = FlowStats()
    writer = clickhouse_sink._Writer(
        store.target, block_rows=100, flush_interval=0.05, max_pending_rows=1000,
        retry_backoff_max=0.1, stats=stats, client_factory=DroppedOnce, exit_on_failure=False,
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="pulse.clickhouse")
    writer.add([_late_rows(schema, 0, 30)])
    writer.close()
    assert store.scalar("SELECT count() FROM {db}.metrics_late") == 30
    named = events(caplog)
    assert [r.event for r in named] == ["sink_retry", "sink_resumed"]  # type: ignore[attr-defined]
    assert named[0].attempt == 1 and named[1].table == "metrics_late"  # type: ignore[attr-defined]
    assert (stats.sink_retries, stats.sink_inserts, stats.rows_written) == (1, 1, 30)
    assert stats.sink_pending == 0


def test_a_permanent_failure_logs_sink_failed(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stats = FlowStats()
    writer = clickhouse_sink._Writer(
        Target(f"http://pulse:secret@127.0.0.1:{port}", "pulse"), block_rows=10,
        flush_interval=0.05, max_pending_rows=100, retry_backoff_max=0.1, stats=stats,
        exit_on_failure=False,
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="pulse.clickhouse")
    columns = [("event_id", "String")]
    writer.add([_late_rows(columns, 0, 5)])
    with pytest.raises(RuntimeError, match="ClickHouse writes failed"):
        writer.flush()
    writer._thread.join(30)  # the writer logs once it has recorded the failure
    assert [r.event for r in events(caplog)] == ["sink_failed"]  # type: ignore[attr-defined]
    assert stats.sink_pending == 5 and stats.rows_written == 0
