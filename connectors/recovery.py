"""Bytewax recovery partitions, guarded.

Bytewax resumes whatever state its SQLite partitions hold under the step ids it finds:
a flow whose step ids changed would silently restart those steps from zero while its
sources resume (losing or double-counting), a damaged file fails with a bare SQLite error.
This module keeps, next to the partitions, a fingerprint of what wrote them — the step ids
and everything that shapes state (source partitions, windows, grouping sets, ...) — and
refuses to start on a mismatch or a damaged store, telling the operator what to do. It
never restarts from zero on its own.

It also discards, before each execution, the snapshots an interrupted execution wrote
for epochs it never committed (:meth:`RecoveryStore.discard_uncommitted`). Bytewax 0.21
keeps them: a later execution overwrites only the keys it touches in those epochs, and a
key it leaves alone there (a step woken only by some items) would resume, one crash
later, from the dead execution's state rather than its own — counting that stretch of
input twice. And a run (`pulse run` or Bytewax's runner) holds the store exclusively
(:meth:`RecoveryStore.exclusive`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, closing
from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir

from connectors.locks import held_exclusively
from operators.errors import PulseError, WriteFailedError, causes

log = logging.getLogger("pulse.recovery")

FINGERPRINT_FILE = "feedback-pulse.json"
LOCK_FILE = ".lock"
_SQLITE_HEADER = b"SQLite format 3\x00"
_DISCARDED_SUFFIX = ".discarded"
_MOVE_AWAY = (
    "move the directory away to start over from the beginning of the event log (the outputs "
    "are idempotent, so a replay rewrites the same rows)"
)


class RecoveryStoreError(PulseError):
    """The recovery store cannot be used as it is; the message says what to do."""


def step_ids(flow: Dataflow) -> list[str]:
    return [step.step_id for step in flow.substeps]


def fingerprint(flow: Dataflow, shape: dict[str, Any]) -> dict[str, Any]:
    return {"flow_id": flow.flow_id, "steps": step_ids(flow), **shape}


class SnapshotWriteError(WriteFailedError):
    """The recovery store refused a snapshot (disk full, read-only, I/O error): exit 3,
    as a ClickHouse write that failed for good. The epoch being snapshotted never
    commits, so a restart resumes from the last committed snapshot and loses nothing."""


_SQLITE_FAILURE = re.compile(
    r'SqliteFailure\(Error \{ code: (\w+)[^}]*\}, (?:Some\("([^"]*)"\)|None)\)'
)


def snapshot_write_failure(exc: BaseException, directory: Path) -> SnapshotWriteError | None:
    """The snapshot failure behind `exc`, if it is one. Bytewax writes snapshots to the
    store's SQLite files in Rust and panics when a write fails; the panic reaches Python
    as a RuntimeError whose text carries rusqlite's error (the store is the flow's only
    SQLite database, so that text identifies it)."""
    for error in causes(exc):
        found = _SQLITE_FAILURE.search(str(error))
        if found is not None:
            code, detail = found.group(1), found.group(2) or found.group(1)
            return SnapshotWriteError(
                f"the recovery store {directory} could not be written ({detail}; SQLite "
                f"{code}). Free space on its volume or fix its permissions, then start "
                f"again: the flow resumes from its last committed snapshot"
            )
    return None


class RecoveryStore:
    def __init__(self, directory: Path, partitions: int = 1) -> None:
        self.directory = Path(directory)
        self.partitions = partitions

    @property
    def _fingerprint_file(self) -> Path:
        return self.directory / FINGERPRINT_FILE

    def _part_files(self) -> list[Path]:
        return sorted(self.directory.glob("part-*.sqlite3")) if self.directory.exists() else []

    def open(self, expected: dict[str, Any], backup_interval: timedelta) -> RecoveryConfig:
        """Create the store, or check it belongs to this flow; the config to run with."""
        parts = self._part_files()
        if not parts:
            if self.directory.exists() and any(
                p.name != LOCK_FILE for p in self.directory.iterdir()
            ):
                raise RecoveryStoreError(
                    f"{self.directory} is not empty but holds no recovery partitions "
                    "(part-*.sqlite3); point run.recovery_dir elsewhere or clear it"
                )
            self.directory.mkdir(parents=True, exist_ok=True)
            init_db_dir(self.directory, self.partitions)
            self._write(expected)
        else:
            self.guard(expected)
        return RecoveryConfig(str(self.directory), backup_interval)

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the store for one run. Two runs on one store would interleave their
        snapshots, and each would discard the other's newest as uncommitted."""

        def busy(holder: str) -> RecoveryStoreError:
            return RecoveryStoreError(
                f"the recovery store {self.directory} is in use by another run (pid {holder}); "
                "stop that run first, or give this one its own PULSE_HOME or run.recovery_dir"
            )

        return held_exclusively(self.directory / LOCK_FILE, busy)

    def check(self, expected: dict[str, Any]) -> None:
        """Raise unless the store is intact and was written by a flow like `expected`."""
        parts = self._part_files()
        used, counts, indices = False, set(), set()
        for part in parts:
            part_used, index, count = self._inspect(part)
            used = used or part_used
            counts.add(count)
            indices.add(index)
        if len(counts) > 1 or indices != set(range(max(counts))):
            raise RecoveryStoreError(
                f"the recovery store {self.directory} is incomplete or mixed: partition files "
                f"{sorted(indices)} of a set of {sorted(counts)}. Every partition of the set "
                f"must be present (restore the missing ones from a backup), or {_MOVE_AWAY}."
            )
        if not self._fingerprint_file.exists():
            if used:
                raise RecoveryStoreError(
                    f"the recovery store {self.directory} holds snapshots but no "
                    f"{FINGERPRINT_FILE}: it was not written by Feedback Pulse or was damaged. "
                    f"Restore it from a backup, or {_MOVE_AWAY}."
                )
            self._write(expected)
            return
        try:
            stored = json.loads(self._fingerprint_file.read_text())
        except (OSError, ValueError) as exc:
            raise RecoveryStoreError(
                f"{self._fingerprint_file} is unreadable ({exc}); restore it, or {_MOVE_AWAY}."
            ) from None
        changed = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        if changed:
            details = "; ".join(
                f"{k}: stored {stored.get(k)!r}, now {expected.get(k)!r}" for k in changed
            )
            raise RecoveryStoreError(
                f"the recovery store {self.directory} was written by a different flow ({details}). "
                "Resuming would restart the changed state from zero while the sources resume. "
                f"Run the version and settings that wrote it, or {_MOVE_AWAY}."
            )

    def _inspect(self, part: Path) -> tuple[bool, int, int]:
        """(holds snapshots, partition index, partition count) of one partition file."""
        with part.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
        if header != _SQLITE_HEADER:
            raise RecoveryStoreError(
                f"the recovery store {self.directory} is damaged: {part.name} is not a SQLite "
                f"database. Restore it from a backup, or {_MOVE_AWAY}."
            )
        try:
            # Read-write, as Bytewax opens it: a read-only connection to a WAL database
            # leaves -wal/-shm files behind; this one reads nothing but cleans up.
            with closing(sqlite3.connect(part)) as db:
                problems = [row[0] for row in db.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise sqlite3.DatabaseError("; ".join(problems[:3]))
                used = bool(db.execute("SELECT count(*) FROM exs").fetchone()[0])
                index, count = db.execute("SELECT part_index, part_count FROM parts").fetchone()
        except (sqlite3.DatabaseError, TypeError) as exc:
            raise RecoveryStoreError(
                f"the recovery store {self.directory} is damaged: {part.name}: {exc}. "
                f"Restore it from a backup, or {_MOVE_AWAY}."
            ) from None
        return used, int(index), int(count)

    def guard(self, expected: dict[str, Any]) -> None:
        """For partitions made by ``python -m bytewax.recovery`` (Bytewax's runner, ``-r``):
        check them, or claim them if new. Without partitions, say how to make them."""
        if not self._part_files():
            raise RecoveryStoreError(
                f"the recovery directory {self.directory} holds no recovery partitions "
                "(part-*.sqlite3); create them once (one partition set per cluster) with "
                f"`python -m bytewax.recovery {self.directory} 1`, or run without -r"
            )
        self.check(expected)
        self.discard_uncommitted()

    def resume_epoch(self) -> int:
        """The epoch Bytewax will resume from: the smallest frontier any worker of the
        last execution recorded (the execution's start epoch for a worker that recorded
        none), as Bytewax's own `resume_from` computes it over all partitions."""
        executions: dict[int, tuple[int, int]] = {}
        fronts: dict[tuple[int, int], int] = {}
        for part in self._part_files():
            with closing(sqlite3.connect(part)) as db:
                for ex_num, workers, start in db.execute(
                    "SELECT ex_num, worker_count, resume_epoch FROM exs"
                ):
                    executions[ex_num] = (workers, start)
                for ex_num, worker, frontier in db.execute(
                    "SELECT ex_num, worker_index, worker_frontier FROM fronts"
                ):
                    key = (ex_num, worker)
                    fronts[key] = max(frontier, fronts.get(key, frontier))
        if not executions:
            return 1  # Bytewax's default: nothing ran, nothing to resume
        last = max(executions)
        workers, start = executions[last]
        return min(max(start, fronts.get((last, w), start)) for w in range(workers))

    def discard_uncommitted(self) -> int:
        """Delete snapshots at or after the resume epoch; how many there were.

        Only an execution that died before committing those epochs wrote them. Bytewax
        never loads them for this resume (it loads the latest snapshot *before* the
        resume epoch) but keeps them, and the next execution overwrites only the keys it
        touches in those epochs: a key it leaves alone would, after one more crash,
        resume from the dead execution's state while its inputs resume from this one's.
        """
        epoch = self.resume_epoch()
        discarded = 0
        for part in self._part_files():
            with closing(sqlite3.connect(part)) as db, db:
                discarded += db.execute(
                    "DELETE FROM snaps WHERE snap_epoch >= ?", (epoch,)
                ).rowcount
        if discarded:
            log.info(
                "discarded %d snapshots an interrupted run wrote at or after epoch %d, which "
                "it never committed; resuming from epoch %d",
                discarded, epoch, epoch,
            )  # fmt: skip
        return discarded

    def _write(self, expected: dict[str, Any]) -> None:
        tmp = self._fingerprint_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(expected, indent=1, sort_keys=True))
        tmp.replace(self._fingerprint_file)

    def reset(self, keep_partitions: bool = False) -> None:
        """Forget everything (after a bounded run completed: the next run starts over).

        The directory is renamed away first, atomically: a crash halfway through deleting
        it in place would leave a fingerprint without partitions (or the reverse), which
        the next start refuses as damaged although the run had completed. With
        `keep_partitions` an empty partition set of the same size is made again (Bytewax's
        runner needs one; `pulse run` creates its own)."""
        if not self.directory.exists():
            return
        count = len(self._part_files())
        doomed = self.directory.with_name(f"{self.directory.name}{_DISCARDED_SUFFIX}")
        shutil.rmtree(doomed, ignore_errors=True)  # left by a crash during a previous reset
        self.directory.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        if keep_partitions and count:
            self.directory.mkdir()
            init_db_dir(self.directory, count)


def bytewax_run_recovery_directory(
    argv: Sequence[str], environ: Mapping[str, str] = os.environ
) -> Path | None:
    """The ``-r`` directory of a ``python -m bytewax.run`` command line, if any."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-r", "--recovery-directory", type=Path)
    known, _ = parser.parse_known_args(list(argv))
    directory = known.recovery_directory or environ.get("BYTEWAX_RECOVERY_DIRECTORY")
    return Path(directory) if directory else None


def bytewax_run_clustered(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a ``python -m bytewax.run`` command line runs one of several processes."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-a", "--addresses")
    parser.add_argument("-i", "--process-id")
    known, _ = parser.parse_known_args(list(argv))
    names = ("BYTEWAX_ADDRESSES", "BYTEWAX_PROCESS_ID", "BYTEWAX_HOSTFILE_PATH")
    return bool(known.addresses or known.process_id or any(environ.get(n) for n in names))
