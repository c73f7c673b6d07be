"""The recovery-store guard, on stores written by real Bytewax runs."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.recovery import (
    FINGERPRINT_FILE,
    RecoveryStore,
    RecoveryStoreError,
    bytewax_run_recovery_directory,
    fingerprint,
)


def counting_flow(step: str = "count") -> Dataflow:
    flow = Dataflow("recovery_test")
    items = op.input("in", flow, TestingSource([("k", 1), ("k", 2), ("j", 5)]))
    summed = op.stateful_map(step, items, lambda state, v: ((state or 0) + v, (state or 0) + v))
    op.output("out", summed, TestingSink([]))
    return flow


def used_store(directory: Path, shape: dict[str, object] | None = None) -> dict[str, object]:
    """A store that a real run has written snapshots to."""
    flow = counting_flow()
    expected = fingerprint(flow, shape or {"partitions": 4})
    config = RecoveryStore(directory).open(expected, timedelta(0))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=config)
    return expected


def test_a_new_store_is_created_and_reopens(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    expected = used_store(directory)
    assert (directory / "part-0.sqlite3").exists()
    assert json.loads((directory / FINGERPRINT_FILE).read_text()) == expected
    RecoveryStore(directory).open(expected, timedelta(0))  # same flow: fine


def test_changed_state_shape_is_refused_naming_the_field(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    expected = used_store(directory)
    with pytest.raises(
        RecoveryStoreError, match=r"partitions: stored 4, now 8.*move the directory"
    ):
        RecoveryStore(directory).open({**expected, "partitions": 8}, timedelta(0))


def test_changed_step_ids_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    used_store(directory)
    renamed = fingerprint(counting_flow("count_v2"), {"partitions": 4})
    with pytest.raises(RecoveryStoreError, match=r"steps: stored .*count'.*now .*count_v2"):
        RecoveryStore(directory).open(renamed, timedelta(0))


def test_a_partition_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    expected = used_store(directory)
    (directory / "part-0.sqlite3").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(RecoveryStoreError, match=r"damaged: part-0\.sqlite3 is not a SQLite"):
        RecoveryStore(directory).open(expected, timedelta(0))


def test_a_partition_with_damaged_pages_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    expected = used_store(directory)
    part = directory / "part-0.sqlite3"
    data = bytearray(part.read_bytes())
    assert len(data) > 8192
    data[4096:8192] = b"\xa5" * 4096  # a page after the header, overwritten
    part.write_bytes(bytes(data))
    with pytest.raises(RecoveryStoreError, match=r"is damaged: part-0\.sqlite3"):
        RecoveryStore(directory).open(expected, timedelta(0))


def test_a_missing_partition_of_a_set_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    directory.mkdir()
    init_db_dir(directory, 3)
    (directory / "part-1.sqlite3").unlink()
    with pytest.raises(RecoveryStoreError, match=r"partition files \[0, 2\] of a set of \[3\]"):
        RecoveryStore(directory).open({"steps": []}, timedelta(0))


def test_snapshots_without_a_fingerprint_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    expected = used_store(directory)
    (directory / FINGERPRINT_FILE).unlink()
    with pytest.raises(RecoveryStoreError, match=r"holds snapshots but no feedback-pulse\.json"):
        RecoveryStore(directory).open(expected, timedelta(0))


def test_an_unreadable_fingerprint_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    expected = used_store(directory)
    (directory / FINGERPRINT_FILE).write_text("{not json")
    with pytest.raises(RecoveryStoreError, match=r"feedback-pulse\.json is unreadable"):
        RecoveryStore(directory).open(expected, timedelta(0))


def test_partitions_made_by_bytewax_recovery_are_claimed_then_guarded(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    directory.mkdir()
    init_db_dir(directory, 2)  # what `python -m bytewax.recovery DIR 2` does
    store = RecoveryStore(directory)
    expected = fingerprint(counting_flow(), {"partitions": 4})
    store.guard(expected)
    assert json.loads((directory / FINGERPRINT_FILE).read_text()) == expected
    with pytest.raises(RecoveryStoreError, match="different flow"):
        store.guard({**expected, "partitions": 2})
    with pytest.raises(RecoveryStoreError, match=r"python -m bytewax\.recovery .*absent 1"):
        RecoveryStore(tmp_path / "absent").guard(expected)


def test_the_bytewax_run_recovery_directory_is_found() -> None:
    argv = ["dataflows.feedback:flow", "-w", "2", "-r", "/data/rec", "-s", "10", "-b", "0"]
    assert bytewax_run_recovery_directory(argv, {}) == Path("/data/rec")
    long_form = ["dataflows.feedback:flow", "--recovery-directory=/x"]
    assert bytewax_run_recovery_directory(long_form, {}) == Path("/x")
    env = {"BYTEWAX_RECOVERY_DIRECTORY": "/env"}
    assert bytewax_run_recovery_directory(["flow"], env) == Path("/env")
    assert bytewax_run_recovery_directory(["flow", "-w", "2"], {}) is None


def test_snapshots_an_interrupted_execution_never_committed_are_not_resumed(
    tmp_path: Path,
) -> None:
    """Execution 2 starts at epoch R, snapshots key `a` there (state 100) and is killed
    before committing R. Execution 3 resumes from R, commits later epochs without touching
    `a`, and crashes too. Execution 4 then loads the latest `a` before its resume epoch:
    the dead execution 2's, unless the store discarded it (Bytewax keeps it)."""
    b = ("b", 1)
    items = [("a", 1), b, TestingSource.EOF(), b, b, b, b, TestingSource.ABORT(), ("a", 1)]
    out: list[tuple[str, int]] = []
    flow = Dataflow("zombie_test")
    summed = op.stateful_map(
        "sum",
        op.input("in", flow, TestingSource(items)),
        lambda state, v: ((state or 0) + v, (state or 0) + v),
    )
    op.output("out", summed, TestingSink(out))
    expected = fingerprint(flow, {})
    store = RecoveryStore(tmp_path)

    def execute() -> None:
        config = store.open(expected, timedelta(0))
        run_main(flow, epoch_interval=timedelta(0), recovery_config=config)

    execute()  # a = 1, b = 1, committed
    resume = store.resume_epoch()
    with closing(sqlite3.connect(tmp_path / "part-0.sqlite3")) as db, db:
        step, last_ex = db.execute(
            "SELECT step_id, (SELECT max(ex_num) FROM exs) FROM snaps WHERE state_key = 'a'"
        ).fetchone()
        # What the killed execution 2 left behind: its start, and `a` at its first epoch.
        db.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (?, 1, ?)",
                   (last_ex + 1, resume))  # fmt: skip
        db.execute("INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) "
                   "VALUES (?, 'a', ?, ?)", (step, resume, pickle.dumps(100)))  # fmt: skip

    execute()  # execution 3: b = 2..5 over several epochs, `a` untouched; aborts
    assert store.resume_epoch() > resume, "execution 3 should have committed epochs"
    execute()  # execution 4
    assert out[-1] == ("a", 2), out


def test_the_resume_epoch_is_the_smallest_worker_frontier_of_the_last_execution(
    tmp_path: Path,
) -> None:
    init_db_dir(tmp_path, 2)
    store = RecoveryStore(tmp_path)
    assert store.resume_epoch() == 1  # nothing ran
    with closing(sqlite3.connect(tmp_path / "part-0.sqlite3")) as a, a:
        a.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (0, 1, 1)")
        a.execute("INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (0, 0, 9)")
        a.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (1, 3, 9)")
        a.execute("INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (1, 0, 14)")
    with closing(sqlite3.connect(tmp_path / "part-1.sqlite3")) as b, b:
        b.execute("INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (1, 1, 12)")
    # Worker 2 of execution 1 recorded no frontier: it is still at the start, epoch 9.
    assert store.resume_epoch() == 9
    with closing(sqlite3.connect(tmp_path / "part-1.sqlite3")) as b, b:
        b.execute("INSERT INTO fronts (ex_num, worker_index, worker_frontier) VALUES (1, 2, 13)")
    assert store.resume_epoch() == 12


def test_a_reset_leaves_nothing_behind_even_after_an_interrupted_one(tmp_path: Path) -> None:
    directory = tmp_path / "recovery"
    expected = used_store(directory)
    # What a crash in the middle of an earlier reset left: a half-deleted renamed store.
    leftover = tmp_path / "recovery.discarded"
    leftover.mkdir()
    (leftover / "part-0.sqlite3").write_bytes(b"half")
    RecoveryStore(directory).reset()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    RecoveryStore(directory).open(expected, timedelta(0))  # starts afresh
    assert RecoveryStore(directory).resume_epoch() == 1


def test_a_store_in_use_by_another_run_is_refused_naming_its_pid(tmp_path: Path) -> None:
    """Two runs on one store would interleave snapshots and discard each other's."""
    store = RecoveryStore(tmp_path / "recovery")
    with store.exclusive():
        store.open(fingerprint(counting_flow(), {}), timedelta(0))  # the lock file is no obstacle
        with (
            pytest.raises(
                RecoveryStoreError, match=rf"in use by another run \(pid {os.getpid()}\)"
            ),
            RecoveryStore(tmp_path / "recovery").exclusive(),
        ):
            pass
    with RecoveryStore(tmp_path / "recovery").exclusive():  # released with the run
        pass
