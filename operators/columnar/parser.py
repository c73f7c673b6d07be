"""A batch of raw NDJSON lines → validated events with their columns, in bulk.

The reader, chosen by measurement (``scripts/bench_columnar.py``, ``docs/columnar.md``):
msgspec's ``Decoder.decode_lines`` over the whole batch, into the contract's Structs
(:mod:`operators.events`): one C call per batch, validating everything the Structs
check. polars ``read_ndjson`` reads faster but coerces a field's mixed JSON types to
one (``true`` and ``"true"``, ``1`` and ``"1"`` become the same string), which the
contract tells apart; ``pyarrow.json`` refuses a column that is a string in one line
and a number in the next, which is every batch with mixed RFC 3339 / epoch ``ts``.

Invalid lines never slow the common path: a vectorized pre-filter (size, a line that
starts with ``{`` and holds no newline, so each line is one value of ``decode_lines``)
and one reader call per batch; when the reader rejects a batch it is cut in halves
(bisection) down to the lines it rejects, and those go through today's
:class:`operators.decode.BatchDecoder`, so their dead letters (and unknown fields kept
in `attributes`) are today's, word for word. The `ts` range and the extra dims' reserved
values are checked on the accepted events as today (the range as one array comparison).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import msgspec
import numpy as np
from numpy.typing import NDArray

from operators.batches import DeadLetter
from operators.decode import BatchDecoder, _reserved_extra_dim
from operators.events import STRUCT_VALUES, VALUE_TYPES, Event, Feedback, epoch_ms

_lines_decoder = msgspec.json.Decoder(Event)
_value_decoders = {kind: msgspec.json.Decoder(t) for kind, t in VALUE_TYPES.items()}
_LINE_IN_ERROR = re.compile(r"at `\$\[(\d+)\]")
_BYTE_IN_ERROR = re.compile(r"\(byte (\d+)\)")
_OPEN_BRACE = ord("{")


@dataclass(slots=True)
class ParsedBatch:
    """Valid events in log order with their columns, and dead letters by offset."""

    events: list[Event] = field(default_factory=list)
    offsets: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ts: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    is_feedback: NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, dtype=np.bool_))
    dead_letters: list[DeadLetter] = field(default_factory=list)


class ColumnarParser:
    """Parses batches with today's limits; `decoder` is also the rejected lines' judge."""

    __slots__ = ("decoder",)

    def __init__(self, decoder: BatchDecoder) -> None:
        self.decoder = decoder

    def parse(
        self, topic: str, partition: int, lines: list[bytes], offsets: list[int]
    ) -> ParsedBatch:
        n = len(lines)
        decoded: list[Event | None] = [None] * n
        suspect = self._prefilter(lines)
        plain = np.flatnonzero(~suspect)
        rejected = list(np.flatnonzero(suspect).tolist())
        self._read(lines, plain, decoded, rejected)
        out = ParsedBatch()
        fast = [i for i in range(n) if decoded[i] is not None]
        fast_ts = np.fromiter((cast(Event, decoded[i]).ts for i in fast), np.int64, len(fast))
        in_range = (fast_ts >= self.decoder.min_ts) & (fast_ts < self.decoder.max_ts)
        dead = out.dead_letters
        for i in np.asarray(fast)[~in_range].tolist():
            dead.append(
                DeadLetter(topic, partition, offsets[i], lines[i], "ts_out_of_range",
                           f"ts {cast(Event, decoded[i]).ts} is outside "
                           f"[{self.decoder.min_ts}, {self.decoder.max_ts}) epoch ms")
            )  # fmt: skip
            decoded[i] = None
        if self.decoder.extra_dims:
            self._check_extra_dims(topic, partition, lines, offsets, decoded, dead)
        if rejected:
            rejected.sort()
            judged = self.decoder.decode(
                topic, partition, [lines[i] for i in rejected], [offsets[i] for i in rejected]
            )
            position = {offsets[i]: i for i in rejected}
            for event, offset in zip(judged.events, judged.offsets, strict=True):
                decoded[position[offset]] = event
            dead.extend(judged.dead_letters)
        dead.sort(key=lambda letter: letter.offset)
        kept = [i for i in range(n) if decoded[i] is not None]
        out.events = [cast(Event, decoded[i]) for i in kept]
        out.offsets = np.asarray([offsets[i] for i in kept], dtype=np.int64)
        out.ts = np.fromiter((e.ts for e in out.events), np.int64, len(kept))
        out.is_feedback = np.fromiter(
            (type(e) is Feedback for e in out.events), np.bool_, len(kept)
        )
        return out

    def _prefilter(self, lines: list[bytes]) -> NDArray[np.bool_]:
        """Lines the bulk reader must not see: oversize, not starting with ``{``, or
        holding a newline (``decode_lines`` would read them as several values, or none)."""
        n = len(lines)
        sizes = np.fromiter(map(len, lines), np.int64, n)
        suspect = (sizes > self.decoder.max_event_bytes) | (sizes == 0)
        blob = b"\n".join(lines)
        if not blob.strip(b"\n"):
            return np.ones(n, dtype=np.bool_)
        starts = np.cumsum(sizes + 1) - (sizes + 1)
        first = np.frombuffer(blob, dtype=np.uint8)[np.minimum(starts, len(blob) - 1)]
        suspect |= first != _OPEN_BRACE
        if blob.count(b"\n") != n - 1:  # some line holds a newline: find which (rare)
            suspect |= np.fromiter((b"\n" in line for line in lines), np.bool_, n)
        return suspect

    def _read(
        self,
        lines: list[bytes],
        chunk: NDArray[np.intp],
        decoded: list[Event | None],
        rejected: list[int],
    ) -> None:
        """One reader call for the chunk. When the reader rejects it, its error names the
        first bad line (`$[i]`, or a byte offset): the lines before it are read again in
        one call, that line is rejected, and reading goes on after it (slices of one
        joined buffer: nothing is copied again). An error that names no line cuts the
        chunk in halves (bisection)."""
        if len(chunk) == 0:
            return
        picked = [lines[i] for i in chunk.tolist()]
        blob = memoryview(b"\n".join(picked))
        sizes = np.fromiter(map(len, picked), np.int64, len(picked))
        starts = np.concatenate([[0], np.cumsum(sizes + 1)])  # byte offset of each line
        pos = 0
        while pos < len(chunk):
            try:
                events = _lines_decoder.decode_lines(blob[starts[pos] :])
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
                bad = _bad_line(exc, starts[pos:] - starts[pos])
                if bad is None:
                    self._bisect(lines, chunk[pos:], decoded, rejected)
                    return
                head = chunk[pos : pos + bad]
                try:  # the lines before the bad one, read again from the same buffer
                    events = _lines_decoder.decode_lines(blob[starts[pos] : starts[pos + bad] - 1])
                except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                    events = []
                if len(events) == bad:
                    self._keep(head, events, decoded, rejected)
                else:
                    self._bisect(lines, head, decoded, rejected)
                rejected.append(int(chunk[pos + bad]))
                pos += bad + 1
                continue
            rest = chunk[pos:]
            if len(events) != len(rest):  # a line held several values: find it by halves
                self._bisect(lines, rest, decoded, rejected)
                return
            self._keep(rest, events, decoded, rejected)
            return

    @staticmethod
    def _keep(
        chunk: NDArray[np.intp], events: list[Event], decoded: list[Event | None],
        rejected: list[int],
    ) -> None:  # fmt: skip
        """Read events finished as today's fast path does; a value its kind rejects
        sends its line to the judge."""
        for i, event in zip(chunk.tolist(), events, strict=True):
            try:
                _finish(event)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                rejected.append(i)
                continue
            decoded[i] = event

    def _bisect(
        self,
        lines: list[bytes],
        chunk: NDArray[np.intp],
        decoded: list[Event | None],
        rejected: list[int],
    ) -> None:
        if len(chunk) == 1:
            rejected.append(int(chunk[0]))
            return
        half = len(chunk) // 2
        self._read(lines, chunk[:half], decoded, rejected)
        self._read(lines, chunk[half:], decoded, rejected)

    def _check_extra_dims(
        self,
        topic: str,
        partition: int,
        lines: list[bytes],
        offsets: list[int],
        decoded: list[Event | None],
        dead: list[DeadLetter],
    ) -> None:
        names = self.decoder.extra_dims
        for i, event in enumerate(decoded):
            if event is not None and (reason := _reserved_extra_dim(event, names)) is not None:
                dead.append(DeadLetter(topic, partition, offsets[i], lines[i], "invalid", reason))
                decoded[i] = None


def _finish(event: Event) -> None:
    """What today's fast path does after the Structs: a feedback's value typed by its
    kind (raises when invalid), `ts` as epoch ms."""
    if type(event) is Feedback:
        value = _value_decoders[event.kind].decode(event.value)
        event.value = msgspec.structs.asdict(value) if event.kind in STRUCT_VALUES else value
    if type(event.ts) is not int:
        event.ts = epoch_ms(cast(datetime, event.ts))


def _bad_line(exc: Exception, starts: NDArray[np.int64]) -> int | None:
    """The index of the line a reader error is about, from its message, if it says
    (`starts`: each line's first byte, and one past the end)."""
    text, count = str(exc), len(starts) - 1
    if match := _LINE_IN_ERROR.search(text):
        index = int(match.group(1))
    elif match := _BYTE_IN_ERROR.search(text):  # malformed JSON: the byte's line
        index = int(np.searchsorted(starts, int(match.group(1)), side="right")) - 1
    else:
        return None
    return index if 0 <= index < count else None
