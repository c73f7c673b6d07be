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
and one reader call per batch. When the reader rejects a line, its error names it; the
lines before it are read again, and reading goes on after it in windows (16 lines,
doubling after each clean read), so a rejection reads again at most what was read since
the last one. An error that names no line cuts the window in halves (bisection).

A line the Structs refuse only for an unknown field is read alone, its unknown fields
moved into `attributes` by today's rule and read again by the Structs
(:func:`operators.decode.move_unknown_fields`, which today's decoder uses too): about
3 µs, where the pydantic verdict costs ~12.
The parser remembers the last unknown field names it met, and the next batches' lines
holding one skip the bulk reader. Every other rejected line goes through today's
:class:`operators.decode.BatchDecoder`, so dead letters are today's, word for word. The
`ts` range and the extra dims' reserved values are checked on the accepted events as
today (the range as one array comparison).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import is_not
from typing import Any, cast

import msgspec
import numpy as np
from numpy.typing import NDArray

from operators.batches import DeadLetter
from operators.decode import BatchDecoder, _reserved_extra_dim
from operators.decode import move_unknown_fields as _move_unknown_fields
from operators.events import STRUCT_VALUES, VALUE_TYPES, Event, Feedback, epoch_ms

_lines_decoder = msgspec.json.Decoder(Event)
_value_decoders = {kind: msgspec.json.Decoder(t) for kind, t in VALUE_TYPES.items()}
_LINE_IN_ERROR = re.compile(r"at `\$\[(\d+)\]")
_BYTE_IN_ERROR = re.compile(r"\(byte (\d+)\)")
_OPEN_BRACE = ord("{")
_UNKNOWN_FIELD = "Object contains unknown field"
_UNKNOWN_NAME = re.compile(r"Object contains unknown field `(.*)` - at `\$\[\d+\]`$", re.S)
_KEYS_KEPT = 8  # unknown field names remembered
_WINDOW = 16  # lines per reader call after a rejection (docs/columnar.md: measured)
_GROWTH = 2  # the window after a read without rejection
_ReaderErrors = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
_encode = msgspec.json.encode


@dataclass(slots=True)
class ParsedBatch:
    """Valid events in log order with their columns, and dead letters by offset."""

    events: list[Event] = field(default_factory=list)
    offsets: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ts: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    is_feedback: NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, dtype=np.bool_))
    dead_letters: list[DeadLetter] = field(default_factory=list)


class ColumnarParser:
    """Parses batches with today's limits; `decoder` is also the rejected lines' judge.

    It remembers the last unknown field names the reader refused (`unknown_keys`, as
    they appear in a line: ``"name":``), and sends the lines of the next batches that
    hold one straight to the unknown-field path: a producer that adds a field to every
    event would otherwise make the reader stop at each of its lines. A line that holds
    the text but no unknown field goes to the judge: the outcome never depends on it."""

    __slots__ = ("decoder", "unknown_keys")

    def __init__(self, decoder: BatchDecoder) -> None:
        self.decoder = decoder
        self.unknown_keys: dict[bytes, None] = {}  # the last _KEYS_KEPT, oldest first

    def parse(
        self, topic: str, partition: int, lines: list[bytes], offsets: list[int]
    ) -> ParsedBatch:
        n = len(lines)
        decoded: list[Event | None] = [None] * n
        suspect, hinted, blob = self._prefilter(lines)
        rejected = list(np.flatnonzero(suspect).tolist())
        moved: list[int] = np.flatnonzero(hinted & ~suspect).tolist()
        plain = np.flatnonzero(~(suspect | hinted))
        self._read(lines, plain, decoded, rejected, moved, blob if len(plain) == n else None)
        moved.sort()
        for i in moved:
            if (event := _move_unknown_fields(lines[i])) is None:
                rejected.append(i)
            else:
                decoded[i] = event
        read = np.fromiter(map(is_not, decoded, repeat(None)), np.bool_, n)
        fast = np.flatnonzero(read).tolist()
        events = decoded if len(fast) == n else list(compress(decoded, read.tolist()))
        fast_ts, fast_feedback = _finish(fast, events, decoded, rejected)
        out = ParsedBatch()
        dead = out.dead_letters
        min_ts, max_ts = self.decoder.min_ts, self.decoder.max_ts
        outside = np.flatnonzero((fast_ts < min_ts) | (fast_ts >= max_ts))
        for k in outside.tolist():
            i = fast[k]
            if decoded[i] is None:  # its value was rejected: the judge has it
                continue
            stamp = cast(Event, decoded[i]).ts
            dead.append(
                DeadLetter(topic, partition, offsets[i], lines[i], "ts_out_of_range",
                           f"ts {stamp} is outside [{min_ts}, {max_ts}) epoch ms")
            )  # fmt: skip
            decoded[i] = None
        if self.decoder.extra_dims:
            self._check_extra_dims(topic, partition, lines, offsets, decoded, dead)
        if not rejected and not dead and len(fast) == n:  # the common batch: all valid
            out.events = cast(list[Event], decoded)
            out.offsets = np.asarray(offsets, dtype=np.int64)
            out.ts, out.is_feedback = fast_ts, fast_feedback
            return out
        ts = np.zeros(n, dtype=np.int64)  # by line, then the lines kept
        is_feedback = np.zeros(n, dtype=np.bool_)
        ts[fast], is_feedback[fast] = fast_ts, fast_feedback
        if rejected:
            rejected.sort()
            judged = self.decoder.decode(
                topic, partition, [lines[i] for i in rejected], [offsets[i] for i in rejected]
            )
            position = {offsets[i]: i for i in rejected}
            for event, offset in zip(judged.events, judged.offsets, strict=True):
                i = position[offset]
                decoded[i], ts[i], is_feedback[i] = event, event.ts, type(event) is Feedback
            dead.extend(judged.dead_letters)
        dead.sort(key=lambda letter: letter.offset)
        alive = np.fromiter(map(is_not, decoded, repeat(None)), np.bool_, n)
        out.events = list(compress(cast(list[Event], decoded), alive.tolist()))
        out.offsets = np.asarray(offsets, dtype=np.int64)[alive]
        out.ts, out.is_feedback = ts[alive], is_feedback[alive]
        return out

    def _prefilter(self, lines: list[bytes]) -> tuple[NDArray[np.bool_], NDArray[np.bool_], bytes]:
        """Lines the bulk reader must not see: oversize, not starting with ``{``, or
        holding a newline (``decode_lines`` would read them as several values, or none);
        lines that hold an unknown field name seen before; and the batch joined, for
        the reader when every line passes."""
        n = len(lines)
        sizes = np.fromiter(map(len, lines), np.int64, n)
        suspect = (sizes > self.decoder.max_event_bytes) | (sizes == 0)
        hinted = np.zeros(n, dtype=np.bool_)
        blob = b"\n".join(lines)
        if not blob.strip(b"\n"):
            return np.ones(n, dtype=np.bool_), hinted, blob
        starts = np.cumsum(sizes + 1) - (sizes + 1)
        first = np.frombuffer(blob, dtype=np.uint8)[np.minimum(starts, len(blob) - 1)]
        suspect |= first != _OPEN_BRACE
        if blob.count(b"\n") != n - 1:  # some line holds a newline: find which (rare)
            suspect |= np.fromiter((b"\n" in line for line in lines), np.bool_, n)
        for key in self.unknown_keys:
            found, at = [], blob.find(key)
            while at >= 0:
                found.append(at)
                at = blob.find(key, at + len(key))
            hinted[np.searchsorted(starts, found, side="right") - 1] = True
        return suspect, hinted, blob

    def _learn(self, error: str) -> None:
        """Remember the unknown field a reader error names, as a line spells it."""
        if (match := _UNKNOWN_NAME.match(error)) is None:
            return
        key = _encode(match.group(1)) + b":"
        self.unknown_keys.pop(key, None)
        self.unknown_keys[key] = None
        if len(self.unknown_keys) > _KEYS_KEPT:
            del self.unknown_keys[next(iter(self.unknown_keys))]

    def _read(
        self,
        lines: list[bytes],
        chunk: NDArray[np.intp],
        decoded: list[Event | None],
        rejected: list[int],
        moved: list[int],
        joined: bytes | None = None,
    ) -> None:
        """One reader call for the chunk (`joined`: its lines joined, when at hand). When
        the reader rejects it, its error names the first bad line (`$[i]`, or a byte
        offset): the lines before it are read again, that line is rejected (to `moved`
        when its only fault may be an unknown field), and reading goes on after it in
        windows of `_WINDOW` lines, so that the next rejection reads again at most a
        window (slices of one joined buffer: nothing is copied). An error that names no
        line cuts the window in halves (bisection)."""
        if len(chunk) == 0:
            return
        picked = [lines[i] for i in chunk.tolist()] if joined is None else lines
        blob = memoryview(b"\n".join(picked) if joined is None else joined)
        sizes = np.fromiter(map(len, picked), np.int64, len(picked))
        starts = np.concatenate([[0], np.cumsum(sizes + 1)]).tolist()  # each line's byte
        pos, span, n = 0, len(chunk), len(chunk)
        while pos < n:
            end = min(pos + span, n)
            try:
                events = _lines_decoder.decode_lines(blob[starts[pos] : starts[end] - 1])
            except _ReaderErrors as exc:
                span = _WINDOW
                bad = _bad_line(exc, starts, pos, end)
                if bad is None:
                    self._bisect(lines, chunk[pos:end], decoded, rejected, moved)
                    pos = end
                    continue
                try:  # the lines before the bad one, read again from the same buffer
                    events = _lines_decoder.decode_lines(blob[starts[pos] : starts[pos + bad] - 1])
                except _ReaderErrors:
                    events = []
                if len(events) == bad:
                    self._keep(chunk[pos : pos + bad], events, decoded)
                else:
                    self._bisect(lines, chunk[pos : pos + bad], decoded, rejected, moved)
                if unknown := (error := str(exc)).startswith(_UNKNOWN_FIELD):
                    self._learn(error)
                (moved if unknown else rejected).append(int(chunk[pos + bad]))
                pos += bad + 1
                continue
            if len(events) != end - pos:  # a line held several values: find it by halves
                self._bisect(lines, chunk[pos:end], decoded, rejected, moved)
            else:
                self._keep(chunk[pos:end], events, decoded)
            pos, span = end, span * _GROWTH

    @staticmethod
    def _keep(chunk: NDArray[np.intp], events: list[Event], decoded: list[Event | None]) -> None:
        if len(chunk) and chunk[-1] - chunk[0] + 1 == len(chunk):  # consecutive lines
            decoded[chunk[0] : chunk[0] + len(chunk)] = events
            return
        for i, event in zip(chunk.tolist(), events, strict=True):
            decoded[i] = event

    def _bisect(
        self,
        lines: list[bytes],
        chunk: NDArray[np.intp],
        decoded: list[Event | None],
        rejected: list[int],
        moved: list[int],
    ) -> None:
        if len(chunk) == 1:
            rejected.append(int(chunk[0]))
            return
        half = len(chunk) // 2
        self._read(lines, chunk[:half], decoded, rejected, moved)
        self._read(lines, chunk[half:], decoded, rejected, moved)

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


def _finish(
    fast: list[int], events: list[Any], decoded: list[Event | None], rejected: list[int]
) -> tuple[NDArray[np.int64], NDArray[np.bool_]]:
    """What today's fast path does after the Structs, in bulk: each feedback kind's values
    typed in one reader call (a value its kind rejects sends its line to the judge), and
    RFC 3339 `ts` as epoch ms by :func:`operators.events.epoch_ms` (a pyarrow cast of
    the datetimes measured slower: building its array is a Python step per value).
    `events` are the lines `fast` read. Returns the `ts` and the type (feedback or not)
    of each."""
    stamps: list[Any] = [event.ts for event in events]
    stamped = [k for k, t in enumerate(stamps) if type(t) is not int]
    for k in stamped:  # RFC 3339 instants (datetimes): today's rule (faster than a cast)
        stamps[k] = events[k].ts = epoch_ms(stamps[k])
    is_feedback = np.fromiter(map(isinstance, events, repeat(Feedback)), np.bool_, len(fast))
    by_kind: dict[str, list[int]] = {}
    for k in np.flatnonzero(is_feedback).tolist():
        by_kind.setdefault(events[k].kind, []).append(k)
    for kind, ks in by_kind.items():
        values = _values(kind, [events[k].value for k in ks])
        struct = kind in STRUCT_VALUES
        for k, value in zip(ks, values, strict=True):
            if value is _REJECTED:
                rejected.append(fast[k])
                decoded[fast[k]] = None
            else:
                events[k].value = msgspec.structs.asdict(value) if struct else value
    try:
        ts = np.array(stamps, dtype=np.int64)
    except OverflowError:  # an epoch beyond int64: out of any range, clamped to its end
        ts = np.array([min(max(t, _INT64_MIN), _INT64_MAX) for t in stamps], dtype=np.int64)
    return ts, is_feedback


_REJECTED = object()
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _values(kind: str, raws: list[msgspec.Raw]) -> list[Any]:
    """Feedback values of one kind typed in one call; past a rejected value (named by
    the error), on from the next one."""
    decoder = _value_decoders[kind]
    out: list[Any] = []
    pos = 0
    while pos < len(raws):
        try:
            values = decoder.decode_lines(b"\n".join(raws[pos:]))
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            match = _LINE_IN_ERROR.search(str(exc))
            bad = min(int(match.group(1)), len(raws) - pos - 1) if match else 0
            head = raws[pos : pos + bad]
            try:  # the values before the named one, again in one call
                values = decoder.decode_lines(b"\n".join(head)) if head else []
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                values = []
            out.extend(values if len(values) == bad else _one_by_one(decoder, head))
            out.extend(_one_by_one(decoder, raws[pos + bad : pos + bad + 1]))
            pos += bad + 1
            continue
        if len(values) != len(raws) - pos:
            out.extend(_one_by_one(decoder, raws[pos:]))
        else:
            out.extend(values)
        break
    return out


def _one_by_one(decoder: msgspec.json.Decoder[Any], raws: list[msgspec.Raw]) -> list[Any]:
    out: list[Any] = []
    for raw in raws:
        try:
            out.append(decoder.decode(raw))
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            out.append(_REJECTED)
    return out


def _bad_line(exc: Exception, starts: list[int], pos: int, end: int) -> int | None:
    """Which line (counted from `pos`) a reader error over lines `pos` to `end` is
    about, from its message, if it says (`starts`: each line's first byte, then one past
    the end)."""
    text = str(exc)
    if match := _LINE_IN_ERROR.search(text):
        index = int(match.group(1))
    elif match := _BYTE_IN_ERROR.search(text):  # malformed JSON: the byte's line
        byte = int(match.group(1)) + starts[pos]
        index = bisect_right(starts, byte) - 1 - pos
    else:
        return None
    return index if 0 <= index < end - pos else None
