"""Order a partition's two streams by event time, deterministically.

A partition reads an inferences topic partition and a feedback topic partition; how far
the reader has got in each depends on fetch sizes and timing. Processing them in
whatever order they arrive would make joins and lateness depend on that. Like a Kafka
Streams task, the partition stage instead buffers each stream and always takes the
event with the smaller timestamp from the two heads (inferences first on ties). It waits
for a stream only while the source says more of it is already there to read: a stream
that is caught up, ended, or (unbounded runs) silent for `idle_timeout` does not block
the other. Within each stream, log order is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from operators.batches import STREAMS
from operators.events import Event


@dataclass(slots=True)
class StreamBuffer:
    events: list[Event] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    head: int = 0
    caught_up: bool = False
    ended: bool = False
    last_data: float = 0.0

    def __len__(self) -> int:
        return len(self.events) - self.head

    def compact(self) -> None:
        if self.head:
            del self.events[: self.head]
            del self.offsets[: self.head]
            self.head = 0


Run = tuple[str, list[Event], list[int]]  # (stream, events, offsets)


class StreamMerge:
    def __init__(self, idle_timeout: int, bounded: bool, now: float) -> None:
        self.idle_timeout = idle_timeout
        self.bounded = bounded
        self.buffers: dict[str, StreamBuffer] = {
            name: StreamBuffer(last_data=now) for name in STREAMS
        }

    def __len__(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def push(
        self,
        stream: str,
        events: list[Event],
        offsets: list[int],
        *,
        caught_up: bool,
        ended: bool,
        now: float,
    ) -> None:
        buffer = self.buffers[stream]
        if events:
            buffer.events.extend(events)
            buffer.offsets.extend(offsets)
        if events or caught_up or ended:
            buffer.last_data = now
        buffer.caught_up = caught_up
        buffer.ended = buffer.ended or ended

    def restart(self, now: float) -> None:
        """After a resume: no stream is idle or caught up until its source says so."""
        for buffer in self.buffers.values():
            buffer.last_data = now
            buffer.caught_up = False

    def ended(self, stream: str) -> bool:
        buffer = self.buffers[stream]
        return buffer.ended and not len(buffer)

    def runs(self, now: float) -> Iterator[Run]:
        """Runs of consecutive events of one stream, in merged timestamp order."""
        (first_name, first), (second_name, second) = (
            (name, self.buffers[name]) for name in STREAMS
        )
        while True:
            has_first, has_second = len(first) > 0, len(second) > 0
            if has_first and has_second:
                first_ts = first.events[first.head].ts
                second_ts = second.events[second.head].ts
                if first_ts <= second_ts:
                    yield first_name, *self._take_while(first, lambda ts, t=second_ts: ts <= t)
                else:
                    yield second_name, *self._take_while(second, lambda ts, t=first_ts: ts < t)
            elif has_first and self._not_blocking(second, now):
                yield first_name, *self._take_all(first)
            elif has_second and self._not_blocking(first, now):
                yield second_name, *self._take_all(second)
            else:
                break
        first.compact()
        second.compact()

    def _not_blocking(self, buffer: StreamBuffer, now: float) -> bool:
        if buffer.ended or buffer.caught_up:
            return True
        return not self.bounded and now - buffer.last_data >= self.idle_timeout

    @staticmethod
    def _take_while(buffer: StreamBuffer, keep: Any) -> tuple[list[Event], list[int]]:
        events, start = buffer.events, buffer.head
        end = start + 1
        stop = len(events)
        while end < stop and keep(events[end].ts):
            end += 1
        buffer.head = end
        return events[start:end], buffer.offsets[start:end]

    @staticmethod
    def _take_all(buffer: StreamBuffer) -> tuple[list[Event], list[int]]:
        start = buffer.head
        buffer.head = len(buffer.events)
        return buffer.events[start:], buffer.offsets[start:]
