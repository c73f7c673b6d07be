"""The local log source tailing a live log: when it reads again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.local_log import LocalLog
from connectors.local_log_source import LocalLogSource


def _lines(n: int, start: int = 0) -> list[bytes]:
    return [b'{"n": %d}' % i for i in range(start, start + n)]


def _read(part, stream: str) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [line for batch in part.next_batch() if batch.stream == stream for line in batch.lines]


def test_a_live_source_caught_up_waits_a_poll_interval_before_reading_again(
    tmp_path: Path,
) -> None:
    """A read that reached the end of the log is followed by a wait, so the tail is taken
    in batches of one poll interval, not a few lines per call."""
    log = LocalLog(tmp_path, partitions=1)
    log.append("inferences", 0, _lines(5))
    log.append("feedback", 0, _lines(2))
    source = LocalLogSource(tmp_path, read_bytes=1 << 20, poll_interval_ms=200, bounded=False)
    part = source.build_part("events", "0", None)
    before = datetime.now(UTC)
    batches = part.next_batch()
    assert sum(len(b.lines) for b in batches) == 7
    assert all(b.caught_up for b in batches)
    awake = part.next_awake()
    assert awake is not None, "caught up: the next read should wait"
    assert awake >= before + timedelta(milliseconds=200)
    log.append("inferences", 0, _lines(3, 5))
    assert _read(part, "inferences") == _lines(3, 5)  # Bytewax calls again once awake


def test_a_live_source_with_a_backlog_reads_again_at_once(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, partitions=1)
    log.append("inferences", 0, _lines(100))
    log.append("feedback", 0, _lines(100))
    source = LocalLogSource(tmp_path, read_bytes=64, poll_interval_ms=200, bounded=False)
    part = source.build_part("events", "0", None)
    assert part.next_batch()
    assert part.next_awake() is None


def test_a_live_source_that_found_nothing_waits(tmp_path: Path) -> None:
    LocalLog(tmp_path, partitions=1)
    source = LocalLogSource(tmp_path, read_bytes=1 << 20, poll_interval_ms=200, bounded=False)
    part = source.build_part("events", "0", None)
    part.next_batch()  # tells the stage both streams are caught up
    assert part.next_batch() == []
    assert part.next_awake() is not None


def test_a_bounded_source_never_waits_while_it_has_lines(tmp_path: Path) -> None:
    log = LocalLog(tmp_path, partitions=1)
    log.append("inferences", 0, _lines(20))
    log.append("feedback", 0, _lines(20))
    source = LocalLogSource(tmp_path, read_bytes=64, poll_interval_ms=200, bounded=True)
    part = source.build_part("events", "0", None)
    try:
        while part.next_batch():
            assert part.next_awake() is None
    except StopIteration:  # both streams ended
        pass
