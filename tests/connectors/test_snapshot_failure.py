"""A snapshot the recovery store refuses (its volume is full) ends the run with exit 3,
one line saying what to do, and a `snapshot_failed` log record, not a Rust panic's
traceback; once the volume has room, the same store resumes and the run completes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.recovery import SnapshotWriteError, snapshot_write_failure
from operators.errors import EXIT_WRITE_FAILED
from tests.conftest import pulse_env, run_pulse

# What Bytewax 0.21 raises when its SQLite write fails (src/run.rs unwraps the worker's
# error; the text is rusqlite's Debug form).
BYTEWAX_DISK_FULL = (
    "(src/run.rs:167:13) called `Result::unwrap()` on an `Err` value: SqliteFailure(Error "
    '{ code: DiskFull, extended_code: 13 }, Some("database or disk is full"))'
)


def test_the_failure_is_recognised_in_bytewax_s_error_and_its_causes() -> None:
    wrapped = RuntimeError("error during execution")
    wrapped.__cause__ = RuntimeError(BYTEWAX_DISK_FULL)
    error = snapshot_write_failure(wrapped, Path("/data/recovery"))
    assert isinstance(error, SnapshotWriteError) and error.exit_code == EXIT_WRITE_FAILED
    assert "/data/recovery could not be written (database or disk is full" in str(error)
    assert "resumes from its last committed snapshot" in str(error)
    no_detail = "SqliteFailure(Error { code: ReadOnly, extended_code: 8 }, None)"
    assert "(ReadOnly; SQLite ReadOnly)" in str(
        snapshot_write_failure(RuntimeError(no_detail), Path("/r"))
    )
    assert snapshot_write_failure(RuntimeError("a bug"), Path("/r")) is None


@pytest.fixture
def tiny_volume(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs: a few snapshots fill it (needs root, as CI here runs)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_recovery_volume_ends_the_run_with_exit_3_and_a_snapshot_failed_record(
    tmp_path: Path, tiny_volume: Path
) -> None:
    env = pulse_env(
        tmp_path / "home",
        PULSE_RUN_RECOVERY_DIR=str(tiny_volume / "recovery"),
        PULSE_RUN_SNAPSHOT_INTERVAL="200ms",
        PULSE_TELEMETRY_LOG_FORMAT="json",
    )
    run_pulse(["generate", "--seed", "3", "--duration", "60", "--rate", "1000"], env)
    result = run_pulse(["run", "--bounded", "--quiet"], env, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == EXIT_WRITE_FAILED, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pulse: error: the recovery store") and "disk is full" in last
    records = [json.loads(line) for line in output.splitlines() if line.startswith('{"ts"')]
    failed = [r for r in records if r.get("event") == "snapshot_failed"]
    assert len(failed) == 1, records
    assert failed[0]["recovery_dir"] == str(tiny_volume / "recovery")
    assert failed[0]["level"] == "ERROR"

    grown = subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_volume)], check=False)
    assert grown.returncode == 0
    resumed = run_pulse(["run", "--bounded", "--quiet"], env)
    assert "bounded run complete" in resumed.stdout + resumed.stderr
