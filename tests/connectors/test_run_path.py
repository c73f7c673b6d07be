"""What the shared run path (`dataflows/running.py`) asks of the recovery store when a
bounded run under Bytewax's runner completes."""

from __future__ import annotations

from pathlib import Path

from bytewax.recovery import init_db_dir

from connectors.recovery import RecoveryStore, bytewax_run_clustered


def test_a_cleared_store_keeps_its_partition_count_for_bytewax_run(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    directory.mkdir()
    init_db_dir(directory, 3)  # what `python -m bytewax.recovery DIR 3` made
    (directory / "feedback-pulse.json").write_text("{}")
    RecoveryStore(directory).reset(keep_partitions=True)
    assert sorted(p.name for p in directory.iterdir()) == [f"part-{i}.sqlite3" for i in range(3)]
    assert RecoveryStore(directory).resume_epoch() == 1
    RecoveryStore(directory).reset()
    assert not directory.exists()


def test_a_clustered_bytewax_run_is_recognised() -> None:
    flow = "dataflows.feedback:flow"
    assert bytewax_run_clustered([flow, "-i", "0", "-a", "h0:2101;h1:2101"], {})
    assert bytewax_run_clustered([flow], {"BYTEWAX_ADDRESSES": "h0:2101;h1:2101"})
    assert not bytewax_run_clustered([flow, "-w", "2", "-r", "/data"], {})
