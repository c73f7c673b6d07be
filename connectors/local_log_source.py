"""Bytewax source over the local log: one source partition per partition number,
reading that partition of both streams (inferences and feedback).

Resume state is the byte position in each stream. A bounded source fixes each stream's
end when it is built ("everything in the log now"), delivers up to it, marks the stream
ended, and once both have, ends its input when the merge stage has emitted every final
window (:mod:`connectors.end_gate`).

Reading a backlog, the two streams are kept aligned in event time
(:class:`operators.stream_merge.ReadAlignment`): a stream whose last line read is ahead
of the other's is not read until the other catches up (or is caught up). Equal byte
reads of both cover different spans of event time (inference and feedback lines differ
in size and rate), so without this the gap, which waits in the partition stage, grows
with the backlog.

Tailing a live log, the source reads in batches of one `poll_interval`: after a read that
reached the end of every stream it reads (caught up), the next waits `poll_interval`, as
after a read that found nothing. Without that wait Bytewax calls again at once and each
call takes the few lines appended since (with a writer appending every 20 ms, up to 50
batches a second per stream and partition), so the partition stage's fixed cost per
batch, more than its cost per event, set the live flow's CPU (docs/performance.md, "Ceiling and
freshness"). A backlog is still read without waiting; the wait adds at most
`poll_interval` to an event's freshness.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from connectors.end_gate import POLL, EndGate, SourceEnd
from connectors.local_log import LocalLog, LogReader
from connectors.run_control import STOP
from operators.batches import STREAMS, RawBatch
from operators.stream_merge import ReadAlignment

Positions = dict[str, int]


class LocalLogPartition(StatefulSourcePartition[RawBatch, Positions]):
    def __init__(
        self,
        log: LocalLog,
        partition: int,
        positions: Positions,
        read_bytes: int,
        poll_interval: timedelta,
        bounded: bool,
        end_gate: EndGate | None = None,
    ) -> None:
        self.partition = partition
        self.read_bytes = read_bytes
        self.poll_interval = poll_interval
        self.readers: dict[str, LogReader] = {
            stream: log.reader(stream, partition, positions.get(stream, 0)) for stream in STREAMS
        }
        self.limits: dict[str, int | None] = {
            stream: log.end_position(stream, partition) if bounded else None for stream in STREAMS
        }
        self.ended: set[str] = set()
        self.caught_up: dict[str, bool | None] = dict.fromkeys(STREAMS)  # None: not told yet
        self.alignment = ReadAlignment()
        self.bounded = bounded
        self._awake: datetime | None = None
        self._end = SourceEnd(end_gate)

    def next_batch(self) -> list[RawBatch]:
        if STOP.is_set() or self._end.over():
            raise StopIteration
        if self._end.waiting:  # everything delivered: the merge stage drains (end_gate.py)
            self._awake = datetime.now(UTC) + POLL
            return []
        out = []
        idle = True
        for stream in STREAMS:
            if stream in self.ended or self.alignment.ahead(stream, self.ended, self.caught_up):
                continue
            limit = self.limits[stream]
            result = self.readers[stream].read(self.read_bytes, limit)
            ended = limit is not None and result.position >= limit
            if result.lines:
                idle = False
                self.alignment.read(stream, result.lines)
            if result.lines or ended or result.caught_up != self.caught_up[stream]:
                out.append(
                    RawBatch(
                        self.partition,
                        stream,
                        stream,
                        result.lines,
                        result.offsets,
                        caught_up=result.caught_up,
                        end_of_input=ended,
                    )
                )
                self.caught_up[stream] = result.caught_up
            if ended:
                self.ended.add(stream)
        if len(self.ended) == len(STREAMS):
            self._end.input_ended()
        self._awake = datetime.now(UTC) + self.poll_interval if self._wait(idle, out) else None
        return out

    def _wait(self, idle: bool, out: list[RawBatch]) -> bool:
        """Whether the next read waits `poll_interval`: nothing was read, or (live) every
        stream read is at the log's end, so an immediate read would find a few lines at
        most (see the module docstring)."""
        if idle:
            return not out
        if self.bounded:
            return False
        reading = [stream for stream in STREAMS if stream not in self.ended]
        return all(self.caught_up[stream] for stream in reading)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> Positions:
        return {stream: reader.position for stream, reader in self.readers.items()}

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()


class LocalLogSource(FixedPartitionedSource[RawBatch, Positions]):
    def __init__(
        self,
        root: Path,
        *,
        read_bytes: int,
        poll_interval_ms: int,
        bounded: bool,
        end_gate: EndGate | None = None,
    ) -> None:
        """`end_gate`: a bounded run's end waits for the merge stage (end_gate.py)."""
        self.log = LocalLog(root)
        self.read_bytes = read_bytes
        self.poll_interval = timedelta(milliseconds=poll_interval_ms)
        self.bounded = bounded
        self.end_gate = end_gate

    @property
    def partitions(self) -> int:
        return self.log.partitions

    def list_parts(self) -> list[str]:
        return [str(p) for p in range(self.log.partitions)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Positions | None
    ) -> LocalLogPartition:
        return LocalLogPartition(
            self.log,
            int(for_part),
            resume_state or {},
            self.read_bytes,
            self.poll_interval,
            self.bounded,
            self.end_gate,
        )
