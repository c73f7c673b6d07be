"""A run keeps its embedded engine up from its lock to its end: chDB restarts an engine
whose last connection closed (loading every table again), which cost every start a
restart between the migrations' client and the sink's. A `Memory` table's rows live only
as long as the engine, so they show whether it restarted."""

from __future__ import annotations

from pathlib import Path

from config.settings import load_settings
from connectors.clickhouse import Target, engine_kept
from connectors.query_server import owned
from dataflows.running import FlowRun
from tests.engine_probe import engine_survives_a_closed_client


def test_the_engine_restarts_unless_kept(tmp_path: Path) -> None:
    target = Target(f"chdb://{tmp_path / 'olap'}", "pulse")
    assert not engine_survives_a_closed_client(target)
    with engine_kept(target):
        assert engine_survives_a_closed_client(target)


def test_a_server_dsn_is_left_alone() -> None:
    with engine_kept(Target("http://127.0.0.1:1", "pulse")):
        pass  # no connection attempted: nothing listens there


def test_a_run_keeps_the_engine_until_it_finishes(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    settings = load_settings(
        environ={"PULSE_HOME": str(tmp_path), "PULSE_SERVICE_ENABLED": "false"}
    ).with_overrides(run={"bounded": True, "recovery": False})
    target = Target.of(settings)
    run = FlowRun(settings, None, create_store=True)
    run.start()
    try:
        assert engine_survives_a_closed_client(target)
    finally:
        run.finish(completed=False)
    with owned(target):  # released, engine closed first
        assert not engine_survives_a_closed_client(target)
