"""The local log's writer keeps each partition's files open between appends: what it
must still see (other writers, rolled and deleted segments, a killed writer's partial
line) and what it must no longer do (reopen files on every append)."""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectors.local_log import LocalLog
from tests.connectors.test_local_log import lines, read_all

ROOT = Path(__file__).resolve().parents[2]


def test_an_append_after_the_first_opens_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reopening the lock, listing and opening the segment each round cost the ingestion
    committer a wait for the GIL after each call (docs/performance.md, "HTTP API")."""
    log = LocalLog(tmp_path, partitions=2)
    log.append_many({("feedback", 0): lines(1), ("inferences", 1): lines(1)})
    opened: list[object] = []
    real_open = os.open

    def counting_open(*args: object, **kwargs: object) -> int:
        opened.append(args[0])
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    log.append_many({("feedback", 0): lines(2, 1), ("inferences", 1): lines(2, 1)})
    assert opened == []
    monkeypatch.undo()
    assert read_all(log, "feedback", 0)[0] == lines(3)
    assert read_all(log, "inferences", 1)[0] == lines(3)


def test_two_writers_interleave_and_roll_segments_with_stable_positions(tmp_path: Path) -> None:
    """Two logs on one directory stand for two processes: each sees the other's lines
    and the other's roll to a new segment, so segments stay within their size and
    positions stay the byte offsets of the whole partition."""
    a = LocalLog(tmp_path, partitions=1, segment_bytes=100)
    b = LocalLog(tmp_path, partitions=1, segment_bytes=100)
    expected: list[bytes] = []
    for i in range(40):
        batch = lines(1 + i % 3, 10 * i)
        (a if i % 2 else b).append("feedback", 0, batch)
        expected += batch
    got, offsets = read_all(log=LocalLog(tmp_path), stream="feedback", partition=0)
    assert got == expected
    assert offsets == [sum(len(x) + 1 for x in expected[:i]) for i in range(len(expected))]
    segments = a.segments("feedback", 0)
    assert len(segments) > 5
    for (base, path), (next_base, _) in itertools.pairwise(segments):
        size = path.stat().st_size
        assert next_base == base + size
        assert size < 100 + 3 * 40  # rolled once full: one append past the size at most


def test_a_partition_deleted_under_a_writer_is_written_again(tmp_path: Path) -> None:
    """Its kept descriptors point at deleted files: appending there would lose the line."""
    log = LocalLog(tmp_path, partitions=1)
    log.append("feedback", 0, lines(2))
    shutil.rmtree(log.partition_dir("feedback", 0))
    log.append("feedback", 0, lines(1, 5))
    assert read_all(LocalLog(tmp_path), "feedback", 0)[0] == lines(1, 5)


def _partial_line(segment: Path, text: bytes) -> None:
    with segment.open("ab") as f:
        f.write(text)  # as a writer killed mid-write leaves it: no newline


def test_a_partial_last_line_is_cut_back_before_the_next_append(tmp_path: Path) -> None:
    """Before, the next line continued the broken one, and both were lost as one bad line."""
    log = LocalLog(tmp_path, partitions=1)
    log.append("feedback", 0, [b"first"])
    segment = log.segments("feedback", 0)[-1][1]
    _partial_line(segment, b'{"cut":')  # after this log's own append (its files are open)
    log.append("feedback", 0, [b"second"])
    _partial_line(segment, b'{"cut again":')
    LocalLog(tmp_path).append("feedback", 0, [b"third"])  # a writer opening the partition
    assert read_all(LocalLog(tmp_path), "feedback", 0)[0] == [b"first", b"second", b"third"]
    assert segment.read_bytes() == b"first\nsecond\nthird\n"


_WRITER = """
import sys
from connectors.local_log import LocalLog
log = LocalLog(sys.argv[1], partitions=4)
line = b"y" * (8 << 20)
print("ready", flush=True)
while True:
    log.append_many({("feedback", p): [line] for p in range(4)})
"""


def test_a_writer_killed_mid_round_leaves_whole_lines_only(tmp_path: Path) -> None:
    """SIGKILL a process appending 8 MiB lines to four partitions (until a kill lands
    mid-write and leaves a partial line), then append again: every line read is whole.
    Each round ends with an fsync, where most kills land when the disk is busy (under
    the whole suite, ten attempts once all missed): up to 60, at times spread by a
    seeded jitter."""
    LocalLog(tmp_path, partitions=4)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    partial = False
    jitter = random.Random(1)
    for _attempt in range(60):
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        time.sleep(0.2 + 0.7 * jitter.random())
        child.send_signal(signal.SIGKILL)
        child.wait()
        log = LocalLog(tmp_path)
        for p in range(4):
            segments = log.segments("feedback", p)
            if not segments:  # killed before its first append reached this partition
                continue
            with segments[-1][1].open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - 1))
                partial = partial or f.read(1) not in (b"\n", b"")
        if partial:
            break
    log = LocalLog(tmp_path)
    log.append_many({("feedback", p): [b"after"] for p in range(4)})
    for p in range(4):
        got = read_all(log, "feedback", p, size=1 << 20)[0]
        assert got[-1] == b"after"
        assert all(line == b"y" * (8 << 20) for line in got[:-1])
    assert partial, "no kill landed mid-write: the cut-back was not exercised"


def test_closing_a_log_writer_closes_the_files_its_log_kept_open(tmp_path: Path) -> None:
    from connectors.event_writer import LogWriter

    def open_fds() -> set[str]:
        return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")}  # fmt: skip

    writer = LogWriter(LocalLog(tmp_path, partitions=2))
    writer.write([("feedback", f"r{i}", b'{"x": 1}') for i in range(8)])
    kept = {path for path in open_fds() if path.startswith(str(tmp_path))}
    assert kept  # the lock files and segments of both partitions
    writer.close()
    assert not {path for path in open_fds() if path.startswith(str(tmp_path))}
