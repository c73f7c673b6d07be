"""The embedded event log: append-only, partitioned JSONL files under ``<home>/log``.

Layout mirrors Kafka: ``<root>/<stream>/p<partition>/<base>.jsonl`` segments, where
`base` is the byte position of the segment's first byte within its partition, so a
position (a byte offset) is stable across segment rolls, like a Kafka offset. Writers
append whole lines under an exclusive ``flock`` per partition (``pulse load``, ``pulse
generate`` and the demo may write concurrently); readers never lock and only consume up
to the last complete line, so they can tail a partition that is being written. An append
returns once its lines are fsynced (and a new segment's directory entry); an append to
several partitions writes them all, then fsyncs them concurrently (stdlib
``concurrent.futures``), as ext4 then commits its journal once for all of them. A
`LocalLog` keeps each partition's lock and last segment open between appends (fewer
calls that give up the GIL; :meth:`LocalLog.close` closes them), and cuts back a last
line a killed writer left without its newline before appending after it.
``meta.json`` fixes the partition count: an existing log cannot be re-partitioned.
Besides the two data streams, the log holds the flow's `actions` stream (partition 0,
``connectors/actions.py``).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import weakref
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


_logs: weakref.WeakSet[LocalLog] = weakref.WeakSet()  # each keeps files open to append


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's pool threads: it starts its own; and it
    opens its own files to append."""
    global _fsync_pool, _fsync_pool_lock
    _fsync_pool, _fsync_pool_lock = None, threading.Lock()
    for log in list(_logs):
        log._forget_appenders()


os.register_at_fork(after_in_child=_after_fork_in_child)


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


def _segments(directory: Path) -> list[tuple[int, Path]]:
    """(base position, path) of every segment in a partition's directory, oldest first."""
    if not directory.exists():
        return []
    found = [
        (int(p.name[: -len(SEGMENT_SUFFIX)]), p)
        for p in directory.iterdir()
        if p.name.endswith(SEGMENT_SUFFIX)
    ]
    return sorted(found)


def _open_directory(directory: Path) -> int:
    return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def _cut_partial_line(fd: int, size: int, chunk: int = 1 << 16) -> int:
    """The size of the file once a last line without its newline (left by a writer
    killed mid-write; under the partition's lock no writer is mid-line) is cut back."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - chunk)
        data = os.pread(fd, end - start, start)
        newline = data.rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    if end != size:
        os.ftruncate(fd, end)
    return end


class _Segment:
    """An open segment file, closed once it is retired (rolled, or its log closed) and no
    append still has to fsync it."""

    __slots__ = ("fd", "retired", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 0
        self.retired = False


class _Appender:
    """Appends to one partition with its files kept open between appends. Opening them
    each time (directory, lock file, listing, stats: about a dozen calls that release the
    GIL) cost the ingestion's committer a wait for the GIL after each call while the
    service's event loop ran, which was most of a round's tail (docs/performance.md,
    "HTTP API"); kept open, a round is flock, fstat, write, unlock per partition.

    The kept segment is still the partition's last one while it is linked and not full
    (only a full last segment is rolled; a deleted partition unlinks it): checked under
    the lock on every append (one fstat), as other processes may append too. A tail that does
    not end a line (a writer killed mid-write) is cut back before appending, so the next
    line never continues a broken one."""

    __slots__ = ("directory", "end", "lock_fd", "mutex", "segment", "segment_bytes")

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.mutex = threading.Lock()  # the flock excludes processes, not this one's threads
        self.lock_fd = -1
        self.segment: _Segment | None = None
        self.end = -1  # the segment's size after this appender's last write

    def append(self, data: bytes) -> tuple[_Segment, int | None]:
        """Write `data` at the end of the partition (rolling to a new segment when the
        last is full); the segment to fsync (the caller releases it after), and the
        directory's descriptor to fsync and close when the segment is new. A failed
        write is cut back, so no partial line is left for the next append to follow."""
        with self.mutex:
            if self.lock_fd < 0:
                self._open_lock()
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            try:
                segment, size, directory = self._tail()
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(segment.fd, view) :]
                except OSError:
                    os.ftruncate(segment.fd, size)
                    if directory is not None:
                        os.close(directory)
                    raise
                self.end = size + len(data)
                segment.users += 1
                return segment, directory
            finally:
                fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def _open_lock(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.lock_fd = os.open(
            self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666
        )

    def _tail(self) -> tuple[_Segment, int, int | None]:
        """Under the lock: the segment to append to, its size (a partial last line cut
        back), and its directory's descriptor when the segment is new."""
        if self.segment is not None:
            status = os.fstat(self.segment.fd)
            if status.st_nlink == 0:
                # The partition was deleted under us: start over as a first append does
                # (closing the deleted lock file's descriptor releases its flock).
                self._retire()
                os.close(self.lock_fd)
                self._open_lock()
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            else:
                size = status.st_size
                if size != self.end:  # another process appended, or died mid-line
                    size = _cut_partial_line(self.segment.fd, size)
                if size < self.segment_bytes:
                    return self.segment, size, None
        return self._open_last()

    def _open_last(self) -> tuple[_Segment, int, int | None]:
        """Under the lock: open the partition's last segment, or a new one after it when
        it is full or there is none."""
        self._retire()
        segments = _segments(self.directory)
        base, path = segments[-1] if segments else (0, self.directory / _segment_name(0))
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        directory = None if segments else _open_directory(self.directory)
        try:
            fd = os.open(path, flags, 0o666)
            size = _cut_partial_line(fd, os.fstat(fd).st_size)
            if size >= self.segment_bytes:
                os.close(fd)
                directory = _open_directory(self.directory)
                fd = os.open(self.directory / _segment_name(base + size), flags, 0o666)
                size = 0
        except OSError:
            if directory is not None:
                os.close(directory)
            raise
        self.segment = _Segment(fd)
        return self.segment, size, directory

    def _retire(self) -> None:
        if self.segment is not None:
            self.segment.retired = True
            if self.segment.users == 0:
                os.close(self.segment.fd)
            self.segment = None

    def release(self, segment: _Segment) -> None:
        """An append is done with `segment` (fsynced or failed)."""
        with self.mutex:
            segment.users -= 1
            if segment.retired and segment.users == 0:
                os.close(segment.fd)

    def close(self) -> None:
        with self.mutex:
            self._retire()
            if self.lock_fd >= 0:
                os.close(self.lock_fd)
                self.lock_fd = -1

    def forget(self) -> None:
        """In a forked child (see LocalLog._forget_appenders), without the mutex."""
        for fd in (self.lock_fd, -1 if self.segment is None else self.segment.fd):
            if fd >= 0:
                os.close(fd)


def _close_appenders(appenders: dict[tuple[str, int], _Appender]) -> None:
    for appender in appenders.values():
        appender.close()
    appenders.clear()


class LocalLog:
    def __init__(self, root: Path, partitions: int | None = None, segment_bytes: int = 64 << 20):
        """Open the log at `root`, creating it with `partitions` if it does not exist."""
        self.root = Path(root)
        self.segment_bytes = segment_bytes
        self._appenders: dict[tuple[str, int], _Appender] = {}
        self._appenders_lock = threading.Lock()
        weakref.finalize(self, _close_appenders, self._appenders)
        _logs.add(self)
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
        return _segments(self.partition_dir(stream, partition))

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
        written: list[tuple[_Appender, _Segment]] = []
        directories: list[int] = []  # new segments' directories: fsynced, then closed
        count = 0
        try:
            for (stream, partition), (data, n) in payloads:
                if n:
                    appender = self._appender(stream, partition)
                    segment, directory = appender.append(data)
                    written.append((appender, segment))
                    if directory is not None:
                        directories.append(directory)
                    count += n
            _fsync_all([segment.fd for _, segment in written] + directories)
        finally:
            for appender, segment in written:
                appender.release(segment)
            for fd in directories:
                os.close(fd)
        return count

    def _appender(self, stream: str, partition: int) -> _Appender:
        """The partition's open files, kept across appends (opened on first use)."""
        with self._appenders_lock:
            appender = self._appenders.get((stream, partition))
            if appender is None:
                appender = _Appender(self.partition_dir(stream, partition), self.segment_bytes)
                self._appenders[(stream, partition)] = appender
            return appender

    def close(self) -> None:
        """Close the files kept open for appending, once no append is under way
        (appending again reopens them)."""
        with self._appenders_lock:
            _close_appenders(self._appenders)

    def _forget_appenders(self) -> None:
        """In a forked child: the parent's descriptors are closed unused (its lock
        descriptor would not exclude the parent, and a lock a parent thread held at the
        fork would never be released here); the child opens its own."""
        self._appenders_lock = threading.Lock()
        for appender in self._appenders.values():
            appender.forget()
        self._appenders.clear()

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
