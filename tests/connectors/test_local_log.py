from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

import pytest

from connectors.local_log import LocalLog, LogError
from connectors.local_log_source import LocalLogSource
from tests.connectors.alignment import FEEDBACK, INFERENCES, read_aligned


def lines(n: int, start: int = 0) -> list[bytes]:
    return [f'{{"i":{i},"pad":"{"x" * (i % 9)}"}}'.encode() for i in range(start, start + n)]


def read_all(
    log: LocalLog, stream: str, partition: int, position: int = 0, size: int = 37
) -> tuple[list[bytes], list[int]]:
    reader = log.reader(stream, partition, position)
    got, offsets = [], []
    while True:
        result = reader.read(size)
        got += result.lines
        offsets += result.offsets
        if result.caught_up and not result.lines:
            return got, offsets


def test_append_and_read_back_across_segments_with_stable_positions(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, partitions=2, segment_bytes=64)
    for i in range(0, 40, 5):
        log.append("feedback", 1, lines(5, i))
    assert len(log.segments("feedback", 1)) > 3
    got, offsets = read_all(log, "feedback", 1)
    assert got == lines(40)
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert log.end_position("feedback", 1) == offsets[-1] + len(got[-1]) + 1
    # Resume from any line's position.
    again, _ = read_all(log, "feedback", 1, position=offsets[17])
    assert again == lines(40)[17:]


def test_a_partial_last_line_is_not_read_until_complete(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, partitions=1)
    log.append("inferences", 0, [b'{"a":1}'])
    segment = log.segments("inferences", 0)[0][1]
    with segment.open("ab") as f:
        f.write(b'{"b":')
    reader = log.reader("inferences", 0)
    first = reader.read(1024)
    assert first.lines == [b'{"a":1}'] and first.caught_up
    assert log.end_position("inferences", 0) == 8
    with segment.open("ab") as f:
        f.write(b"2}\n")
    assert reader.read(1024).lines == [b'{"b":2}']


def test_lines_longer_than_a_read_are_read_whole(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, partitions=1)
    log.append("feedback", 0, [b"a" * 100_000, b"b"])
    got, _ = read_all(log, "feedback", 0, size=1000)
    assert [len(x) for x in got] == [100_000, 1]


def test_limits_and_errors(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, partitions=3)
    with pytest.raises(LogError, match="has 3 partitions"):
        LocalLog(tmp_path, partitions=4)
    assert LocalLog(tmp_path).partitions == 3
    with pytest.raises(LogError, match="newline"):
        log.append("feedback", 0, [b"a\nb"])
    with pytest.raises(LogError, match="out of range"):
        log.append("feedback", 3, [b"x"])


def test_bounded_source_reads_what_was_there_when_built_then_stops(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, partitions=1)
    log.append("inferences", 0, lines(10))
    log.append("feedback", 0, lines(3))
    source = LocalLogSource(tmp_path, read_bytes=50, poll_interval_ms=10, bounded=True)
    part = source.build_part("events", "0", None)
    log.append("inferences", 0, lines(5, 100))  # after the start: not part of this run
    got: dict[str, list[bytes]] = {"inferences": [], "feedback": []}
    ended = set()
    with pytest.raises(StopIteration):
        for _ in range(1000):
            for batch in part.next_batch():
                got[batch.stream] += batch.lines
                if batch.end_of_input:
                    ended.add(batch.stream)
    assert got == {"inferences": lines(10), "feedback": lines(3)}
    assert ended == {"inferences", "feedback"}
    resumed = source.build_part("events", "0", part.snapshot())
    assert resumed.snapshot() == part.snapshot()


def test_caught_up_only_at_the_end_of_the_newest_segment(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, partitions=1)
    log.append("feedback", 0, lines(200))
    reader = log.reader("feedback", 0)
    flags = []
    while True:
        result = reader.read(100)  # reads end inside lines
        flags.append(result.caught_up)
        if result.caught_up:
            break
    assert flags.count(True) == 1 and len(flags) > 10
    assert reader.position == log.end_position("feedback", 0)


def test_a_backlog_is_read_aligned_in_event_time(tmp_path: Path) -> None:
    """Equal byte reads would deliver inferences 10x ahead of feedback in event time (all
    of that waiting in the partition stage); the source reads the stream that is behind."""
    log = LocalLog(tmp_path, partitions=1)
    log.append("inferences", 0, INFERENCES)
    log.append("feedback", 0, FEEDBACK)
    source = LocalLogSource(tmp_path, read_bytes=400, poll_interval_ms=10, bounded=True)
    got, gap = read_aligned(source.build_part("events", "0", None).next_batch)
    assert got == {"inferences": INFERENCES, "feedback": FEEDBACK}  # all, once, in order
    assert gap <= 15_000  # a read of inferences covers ~10 s; unaligned this reaches ~500 s


def test_append_many_writes_every_partition_or_none_when_a_line_is_bad(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, partitions=4)
    groups = {("inferences", p): lines(3, 10 * p) for p in range(4)}
    assert log.append_many({**groups, ("feedback", 2): lines(2)}) == 14
    for p in range(4):
        assert read_all(log, "inferences", p)[0] == lines(3, 10 * p)
    assert read_all(log, "feedback", 2)[0] == lines(2)
    # A newline in the last partition's lines: nothing of the call is written.
    with pytest.raises(LogError, match="newline"):
        log.append_many({("feedback", 0): lines(2), ("feedback", 1): [b"ok", b"a\nb"]})
    assert log.end_position("feedback", 0) == log.end_position("feedback", 1) == 0


def test_a_write_the_disk_refuses_leaves_no_partial_line(tmp_path: Path) -> None:
    """A write cut short (here: the file size limit, as a full disk would) is cut back to
    the last complete line, so the next append does not continue a broken one."""
    log = LocalLog(tmp_path, partitions=1)
    log.append("feedback", 0, [b"first"])
    end = log.end_position("feedback", 0)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (end + 100, limits[1]))
    try:
        with pytest.raises(OSError):
            log.append("feedback", 0, [b"x" * 1000])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    segment = log.segments("feedback", 0)[-1][1]
    assert segment.stat().st_size == end
    log.append("feedback", 0, [b"second"])
    assert read_all(log, "feedback", 0)[0] == [b"first", b"second"]


def test_a_forked_child_appends_to_several_partitions(tmp_path: Path) -> None:
    """The fsync threads are the parent's: a child forked after the parent used them must
    start its own, not queue its fsyncs for threads it does not have (it would hang)."""
    log = LocalLog(tmp_path, partitions=4)
    log.append_many({("feedback", p): lines(1) for p in range(4)})  # the pool has threads
    time.sleep(0.2)  # they are idle: a child's fsync would be handed to one of them
    pid = os.fork()
    if pid == 0:  # the child: exit 0 once its append returned
        try:
            log.append_many({("feedback", p): lines(1, 1) for p in range(2)})
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done[0] == pid, "the child's append never returned"
    assert [read_all(log, "feedback", p)[0] for p in range(2)] == [lines(2)] * 2
