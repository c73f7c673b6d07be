"""A run's store start: the lock at once, the engine and the migrations on a thread, its
errors where the run waits for it, and everything let go in order at the end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from connectors.clickhouse import ClickHouseError, Target, connect, migrations
from connectors.query_server import owned
from connectors.store_start import StoreStart
from tests.engine_probe import engine_survives_a_closed_client

SETS = [("model_version",), ()]  # the grouping sets the session view rolls up by


def _applied(target: Target) -> set[int]:
    client = connect(target)
    try:
        rows = client.query(f"SELECT version FROM {target.database}.schema_migrations")
        return {row[0] for row in rows.result_rows}
    finally:
        client.close()


def _has_session_view(target: Target) -> bool:
    client = connect(target)
    try:
        return bool(client.command(f"EXISTS VIEW {target.database}.session_metrics"))
    finally:
        client.close()


def test_the_store_is_held_at_once_migrated_and_kept_until_closed(tmp_path: Path) -> None:
    target = Target(f"chdb://{tmp_path / 'olap'}", "pulse")
    start = StoreStart(target, SETS)
    # Held from the start, before the run waits for it: another holder is refused.
    with pytest.raises(ClickHouseError, match=f"pid {os.getpid()}"), owned(target):
        pass
    with start:
        assert _applied(target) == {version for version, _, _ in migrations()}
        assert _has_session_view(target)  # ready for the flow: build() leaves it as it is
        assert engine_survives_a_closed_client(target)  # the engine is kept up
    with owned(target):  # released, and the engine closed before that
        assert not engine_survives_a_closed_client(target)


def test_an_error_of_the_thread_is_raised_where_the_run_waits() -> None:
    start = StoreStart(Target("http://127.0.0.1:1", "pulse"), SETS)  # nothing listens there
    with pytest.raises(ClickHouseError, match=r"cannot connect to ClickHouse at 127\.0\.0\.1"):
        start.__enter__()
    start.close()  # already let go: nothing more to do


def test_a_busy_store_is_refused_before_anything_starts(tmp_path: Path) -> None:
    target = Target(f"chdb://{tmp_path / 'olap'}", "pulse")
    with owned(target), pytest.raises(ClickHouseError, match="in use by another process"):
        StoreStart(target, SETS)
    assert not (tmp_path / "olap").exists()  # chDB never opened it
