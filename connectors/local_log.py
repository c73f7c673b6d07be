"""The embedded event log: append-only, partitioned JSONL files under ``<home>/log``.

Layout mirrors Kafka: ``<root>/<stream>/p<partition>/<base>.jsonl`` segments, where
`base` is the byte position of the segment's first byte within its partition, so a
position (a byte offset) is stable across segment rolls, like a Kafka offset. Writers
append whole lines under an exclusive ``flock`` per partition (``pulse load``, ``pulse
generate`` and the demo may write concurrently); readers never lock and only consume up
to the last complete line, so they can tail a partition that is being written. An append
returns once its lines are fsynced (and a new segment's directory entry); an append to
several partitions writes them all, then fsyncs them concurrently (stdlib
``concurrent.futures``), as ext4 then commits its journal once for all of them.
``meta.json`` fixes the partition count: an existing log cannot be re-partitioned.
Besides the two data streams, the log holds the flow's `actions` stream (partition 0,
``connectors/actions.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from operators.batches import STREAMS
from operators.errors import PulseError

# Streams the flow does not read; the flow writes `actions` (to partition 0 only).
OUTPUT_STREAMS = ("dead-letters", "actions")
META_FILE = "meta.json"
SEGMENT_SUFFIX = ".jsonl"
LOCK_FILE = ".lock"
FSYNC_THREADS = 16  # both data streams' partitions at the default 4-8, and new segments' dirs


class LogError(PulseError):
    """The local log cannot be used as configured, or a line cannot be appended."""


def _segment_name(base: int) -> str:
    return f"{base:020d}{SEGMENT_SUFFIX}"


def _payload(lines: Iterable[bytes]) -> tuple[bytes, int]:
    """The lines as one write (each ended by a newline) and their count."""
    payload = []
    for line in lines:
        if b"\n" in line:
            raise LogError("an event line must not contain a newline byte")
        payload.append(line)
    return (b"\n".join(payload) + b"\n" if payload else b""), len(payload)


_fsync_pool: ThreadPoolExecutor | None = None
_fsync_pool_lock = threading.Lock()


def _forget_fsync_pool() -> None:
    """A forked child has none of the parent's pool threads: it starts its own."""
    global _fsync_pool, _fsync_pool_lock
    _fsync_pool, _fsync_pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_fsync_pool)


def _fsync_all(fds: list[int]) -> None:
    """fsync every descriptor, concurrently when there are several (os.fsync releases the
    GIL); the first error is raised once all have finished."""
    global _fsync_pool
    if len(fds) <= 1:
        for fd in fds:
            os.fsync(fd)
        return
    with _fsync_pool_lock:
        if _fsync_pool is None:
            _fsync_pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="pulse-log-fsync")
    others = [_fsync_pool.submit(os.fsync, fd) for fd in fds[1:]]
    errors: list[BaseException] = []
    try:
        os.fsync(fds[0])
    except OSError as exc:
        errors.append(exc)
    wait(others)
    errors += [error for f in others if (error := f.exception()) is not None]
    if errors:
        raise errors[0]


class LocalLog:
    def __init__(self, root: Path, partitions: int | None = None, segment_bytes: int = 64 << 20):
        """Open the log at `root`, creating it with `partitions` if it does not exist."""
        self.root = Path(root)
        self.segment_bytes = segment_bytes
        meta = self.root / META_FILE
        if meta.exists():
            existing = int(json.loads(meta.read_text())["partitions"])
            if partitions is not None and partitions != existing:
                raise LogError(
                    f"the local log at {self.root} has {existing} partitions, settings ask for "
                    f"{partitions}; set log.partitions={existing} or use another PULSE_HOME"
                )
            self.partitions = existing
        else:
            if partitions is None:
                raise LogError(f"no local log at {self.root}")
            self.partitions = partitions
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": 1, "partitions": partitions}))
            os.replace(tmp, meta)

    def partition_dir(self, stream: str, partition: int) -> Path:
        if stream not in (*STREAMS, *OUTPUT_STREAMS):
            raise LogError(f"unknown stream {stream!r}")
        if not 0 <= partition < self.partitions:
            raise LogError(f"partition {partition} out of range 0..{self.partitions - 1}")
        return self.root / stream / f"p{partition:04d}"

    def segments(self, stream: str, partition: int) -> list[tuple[int, Path]]:
        """(base position, path) of every segment, oldest first."""
        directory = self.partition_dir(stream, partition)
        if not directory.exists():
            return []
        found = [
            (int(p.name[: -len(SEGMENT_SUFFIX)]), p)
            for p in directory.iterdir()
            if p.name.endswith(SEGMENT_SUFFIX)
        ]
        return sorted(found)

    def end_position(self, stream: str, partition: int) -> int:
        """The position after the last complete line now in the partition."""
        segments = self.segments(stream, partition)
        if not segments:
            return 0
        base, path = segments[-1]
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return base
            # A writer holds the lock while appending; an incomplete tail is not counted.
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return base + size
        with path.open("rb") as f:
            data = f.read()
        return base + data.rfind(b"\n") + 1

    def append(self, stream: str, partition: int, lines: Iterable[bytes]) -> int:
        """Append lines (without newlines) to one partition, durable (fsynced) when it
        returns; returns how many."""
        return self.append_many({(stream, partition): lines})

    def append_many(self, groups: Mapping[tuple[str, int], Iterable[bytes]]) -> int:
        """Append to several partitions, every line durable when it returns; returns how
        many. Each partition is written under its lock, then all are fsynced at once
        (concurrently): ext4 commits its journal once for fsyncs that arrive together,
        once per fsync when they come one after the other (docs/performance.md, "HTTP
        API"). A line with a newline byte fails the whole call before anything is written."""
        payloads = [(key, _payload(lines)) for key, lines in groups.items()]
        synced: list[int] = []  # descriptors to fsync, then close
        count = 0
        try:
            for (stream, partition), (data, n) in payloads:
                if n:
                    synced += self._write(stream, partition, data)
                    count += n
            _fsync_all(synced)
        finally:
            for fd in synced:
                os.close(fd)
        return count

    def _write(self, stream: str, partition: int, data: bytes) -> list[int]:
        """Write `data` at the end of the partition's last segment (rolling to a new one
        when it is full) under the partition's lock; the descriptors to fsync for it to
        be durable: the segment's, and its directory's when the segment is new. A failed
        write is cut back, so no partial line is left for the next append to follow."""
        directory = self.partition_dir(stream, partition)
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / LOCK_FILE).open("a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            segments = self.segments(stream, partition)
            if segments:
                base, path = segments[-1]
                size = path.stat().st_size
                if size >= self.segment_bytes:
                    base, path = base + size, directory / _segment_name(base + size)
            else:
                base, path = 0, directory / _segment_name(0)
            fds = []
            if not path.exists():
                fds.append(os.open(directory, os.O_RDONLY | os.O_DIRECTORY))
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            fds.append(fd)
            start = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                os.ftruncate(fd, start)
                for opened in fds:
                    os.close(opened)
                raise
        return fds

    def reader(self, stream: str, partition: int, position: int = 0) -> LogReader:
        return LogReader(self, stream, partition, position)


@dataclass(slots=True)
class ReadResult:
    lines: list[bytes]
    offsets: list[int]
    position: int  # where the next read starts
    caught_up: bool  # nothing complete was left to read


class LogReader:
    """Reads complete lines of one partition from a position, across segments."""

    def __init__(self, log: LocalLog, stream: str, partition: int, position: int) -> None:
        self.log = log
        self.stream = stream
        self.partition = partition
        self.position = position
        self._file: BinaryIO | None = None
        self._file_base = -1
        self._file_end: int | None = None  # end of a segment that is no longer the last

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open_for(self, position: int) -> bool:
        """Open the segment holding `position`; False when there is none yet."""
        segments = self.log.segments(self.stream, self.partition)
        for i, (base, path) in enumerate(segments):
            next_base = segments[i + 1][0] if i + 1 < len(segments) else None
            if base <= position and (next_base is None or position < next_base):
                self.close()
                self._file = path.open("rb")
                self._file_base = base
                self._file_end = next_base
                return True
        return False

    def read(self, max_bytes: int, limit: int | None = None) -> ReadResult:
        """About `max_bytes` of complete lines (one read), never beyond position `limit`."""
        if limit is not None and self.position >= limit:
            return ReadResult([], [], self.position, True)
        past_segment = self._file_end is not None and self.position >= self._file_end
        if (self._file is None or past_segment) and not self._open_for(self.position):
            return ReadResult([], [], self.position, True)
        assert self._file is not None
        self._file.seek(self.position - self._file_base)
        want = max_bytes if limit is None else min(max_bytes, limit - self.position)
        chunk = self._file.read(want)
        cut = chunk.rfind(b"\n")
        while cut < 0 and len(chunk) >= want:
            # A line longer than the read size: keep reading until its end.
            more = self._file.read(max_bytes)
            if not more:
                break
            chunk += more
            cut = chunk.rfind(b"\n")
        if cut < 0:
            if self._file_end is not None:
                raise LogError(
                    f"segment of {self.stream}/p{self.partition} ends without a newline "
                    f"at position {self.position}: the log is damaged"
                )
            return ReadResult([], [], self.position, True)
        lines = chunk[:cut].split(b"\n")
        offsets = []
        start = self.position
        for line in lines:
            offsets.append(start)
            start += len(line) + 1
        self.position += cut + 1
        at_limit = limit is not None and self.position >= limit
        # Caught up: this read reached the end of the newest segment (a partial line a
        # writer is still appending may follow). A full read that merely stops inside a
        # line is not the end.
        caught_up = at_limit or (len(chunk) < want and self._file_end is None)
        return ReadResult(lines, offsets, self.position, caught_up)
