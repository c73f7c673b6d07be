"""Order a partition's two streams by event time, deterministically.

A partition reads an inferences topic partition and a feedback topic partition; how far
the reader has got in each depends on fetch sizes and timing. Processing them in
whatever order they arrive would make joins and lateness depend on that. Like a Kafka
Streams task, the partition stage instead buffers each stream and always takes the
event with the smaller timestamp from the two heads (inferences first on ties). It waits
for a stream only while the source says more of it is there to read: a stream that is
caught up or ended does not block the other. Silence alone does not count: a worker busy
with a backlog (or held by a slow sink) polls its sources late, and taking that for a
quiet stream would join and close windows without the events it has yet to read (as
Kafka Streams since KIP-695 waits for partitions that still have lag). Within each
stream, log order is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from operators.batches import STREAMS
from operators.events import Event, peek_ts


@dataclass(slots=True)
class StreamBuffer:
    events: list[Event] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    head: int = 0
    caught_up: bool = False
    ended: bool = False

    def __len__(self) -> int:
        return len(self.events) - self.head

    def compact(self) -> None:
        if self.head:
            del self.events[: self.head]
            del self.offsets[: self.head]
            self.head = 0


Run = tuple[str, list[Event], list[int]]  # (stream, events, offsets)


class StreamMerge:
    def __init__(self) -> None:
        self.buffers: dict[str, StreamBuffer] = {name: StreamBuffer() for name in STREAMS}

    def __len__(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def push(
        self, stream: str, events: list[Event], offsets: list[int], *, caught_up: bool, ended: bool
    ) -> None:
        buffer = self.buffers[stream]
        if events:
            buffer.events.extend(events)
            buffer.offsets.extend(offsets)
        buffer.caught_up = caught_up
        buffer.ended = buffer.ended or ended

    def restart(self) -> None:
        """After a resume: no stream is caught up until its source says so."""
        for buffer in self.buffers.values():
            buffer.caught_up = False

    def ended(self, stream: str) -> bool:
        buffer = self.buffers[stream]
        return buffer.ended and not len(buffer)

    def runs(self) -> Iterator[Run]:
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
            elif has_first and self._not_blocking(second):
                yield first_name, *self._take_all(first)
            elif has_second and self._not_blocking(first):
                yield second_name, *self._take_all(second)
            else:
                break
        first.compact()
        second.compact()

    @staticmethod
    def _not_blocking(buffer: StreamBuffer) -> bool:
        return buffer.ended or buffer.caught_up

    def caught_up(self) -> bool:
        """Every stream has nothing more to read now (or has ended)."""
        return all(b.ended or b.caught_up for b in self.buffers.values())

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


ALIGNMENT_SLACK_MS = 1_000


def reads_ahead(stream: str, read_ts: Mapping[str, int | None], reading: Iterable[str]) -> bool:
    """Whether `stream` was read more than :data:`ALIGNMENT_SLACK_MS` past, in event time,
    another stream that still has lines to read (`reading`: neither caught up nor ended).
    Its source should read the others first (as Flink's watermark alignment pauses splits
    that run ahead): what one stream is read ahead of the other waits in this merge, in
    memory and in every snapshot. The slack keeps live streams, whose latest events are
    about equally recent, from being paused and resumed at every poll.

    `read_ts` is the event time of the last line read per stream; a stream with lines to
    read but none read yet counts as behind (a consumer's first fetch may bring one topic
    long before the other)."""
    mine = read_ts.get(stream)
    if mine is None:
        return False
    for other in reading:
        theirs = read_ts.get(other)
        if other != stream and (theirs is None or theirs + ALIGNMENT_SLACK_MS < mine):
            return True
    return False


class ReadAlignment:
    """A source's side of the alignment: the event time of the last line it read per
    stream, and which stream to hold back (:func:`reads_ahead`)."""

    __slots__ = ("read_ts",)

    def __init__(self) -> None:
        self.read_ts: dict[str, int | None] = dict.fromkeys(STREAMS)

    def read(self, stream: str, lines: list[bytes]) -> None:
        if lines:
            ts = peek_ts(lines[-1])
            if ts is not None:
                self.read_ts[stream] = ts

    def ahead(self, stream: str, ended: set[str], caught_up: Mapping[str, bool | None]) -> bool:
        """Hold `stream` back: it was read ahead of one that still has lines to read."""
        if stream in ended:
            return False
        reading = [s for s in STREAMS if s not in ended and not caught_up[s]]
        return reads_ahead(stream, self.read_ts, reading)
