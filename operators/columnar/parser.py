"""A batch of raw NDJSON lines → validated events as columns, in bulk.

The reader, chosen by measurement (``scripts/bench_columnar.py``, ``docs/columnar.md``):
msgspec's ``Decoder.decode_lines`` over the whole batch, into lenient twins of the
contract's Structs (:mod:`operators.columnar.lenient`): one C call per batch, validating
every field as the Structs do. polars ``read_ndjson`` coerces a field's mixed JSON types
to one (``true`` and ``"true"``, ``1`` and ``"1"``), which the contract tells apart;
``pyarrow.json`` refuses a column that is a string in one line and a number in the next
(every batch with mixed RFC 3339 / epoch ``ts``).

The Structs become columns at once (``msgspec.structs.astuple`` and one transpose per
event type), and every later step works on columns: feedback values typed in one reader
call per kind, RFC 3339 `ts` as epoch ms in one pyarrow cast, reserved dim values as one
set test per column, the `ts` range as one array comparison. Lines with unknown fields
(skipped by the lenient reader) are found by counting keys: a line holding more ``":``
than the fields it named is decoded alone, and its unknown fields moved into
`attributes` by today's rule (:func:`operators.decode._keep_unknown_fields`).

Invalid lines never slow the common path: a vectorized pre-filter (size; a line that
starts with ``{`` and holds no newline, so each line is one value of ``decode_lines``);
when the reader rejects a batch, its error names the first bad line and reading goes on
after it (or the batch is cut in halves). Rejected lines, and any the bulk checks refuse,
go through today's :class:`operators.decode.BatchDecoder`: their dead letters are today's,
word for word.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from operators.batches import DeadLetter
from operators.columnar.lenient import (
    FEEDBACK,
    INFERENCE,
    KEY_MARK,
    READER,
    LenientType,
    absent_counts,
    blank_colons,
    key_counts,
)
from operators.decode import BatchDecoder, _keep_unknown_fields, _reserved_extra_dim
from operators.events import STRUCT_VALUES, VALUE_TYPES, Event, Feedback, Inference
from operators.limits import RESERVED_DIM_VALUES

_value_decoders = {kind: msgspec.json.Decoder(t) for kind, t in VALUE_TYPES.items()}
_untyped = msgspec.json.Decoder()
_encode = msgspec.json.encode
_astuple = msgspec.structs.astuple
_ReaderErrors = (msgspec.ValidationError, msgspec.DecodeError, RecursionError)
_LINE_IN_ERROR = re.compile(r"at `\$\[(\d+)\]")
_BYTE_IN_ERROR = re.compile(r"\(byte (\d+)\)")
_OPEN_BRACE = ord("{")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_REJECTED = object()
_WINDOW = 64  # lines per reader call after a rejection


@dataclass(slots=True)
class ParsedBatch:
    """Valid events in log order with their columns, and dead letters by offset.

    `rows` are the events as the reader's lenient Structs (:mod:`operators.columnar.
    lenient`), their fields as the contract's events hold them (`ts` in epoch ms, values
    typed, defaults put back): building the contract's Structs costs more than reading
    them, so :meth:`events` does it only when asked, and :meth:`column` gives one field
    of one event type."""

    rows: list[Any] = field(default_factory=list)
    offsets: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    ts: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    is_feedback: NDArray[np.bool_] = field(default_factory=lambda: np.empty(0, dtype=np.bool_))
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def column(self, name: str, feedback: bool) -> list[Any]:
        """One field over the feedback (or the inferences), in log order."""
        flags = self.is_feedback if feedback else ~self.is_feedback
        return list(map(attrgetter(name), compress(self.rows, flags.tolist())))

    def events(self) -> list[Event]:
        """The events as the contract's Structs, in log order (built on demand)."""
        return [_CONTRACT[type(row)](*_astuple(row)) for row in self.rows]


_CONTRACT = {kind.lenient: kind.contract for kind in (INFERENCE, FEEDBACK)}
_attribute_readers = {
    kind.contract: msgspec.json.Decoder(kind.attributes_type) for kind in (INFERENCE, FEEDBACK)
}
_LENIENT = {kind.contract: kind.lenient for kind in (INFERENCE, FEEDBACK)}


class _Part:
    """One event type's rows of a batch while they are checked: their positions among
    the rows read, the Structs (written to) and their ``astuple`` (read from), and which
    leave the bulk (to the judge, or as dead letters)."""

    __slots__ = ("at", "drop", "judge", "structs", "ts", "tuples", "type")

    def __init__(
        self, kind: LenientType, at: NDArray[np.intp], structs: list[Any], tuples: list[Any]
    ) -> None:
        self.type = kind
        self.at = at
        self.structs = structs
        self.tuples = tuples
        self.ts = np.empty(0, dtype=np.int64)
        self.drop = np.zeros(len(structs), dtype=np.bool_)
        self.judge: list[int] = []  # rows whose verdict is today's decoder's

    def column(self, name: str) -> list[Any]:
        """One field as read (before the Structs are written to)."""
        return list(map(itemgetter(self.type.at(name)), self.tuples))

    def refuse(self, k: int) -> None:
        """Row `k` leaves the bulk: today's decoder judges its line."""
        if not self.drop[k]:
            self.drop[k] = True
            self.judge.append(k)


class ColumnarParser:
    """Parses batches with today's limits; `decoder` is also the rejected lines' judge."""

    __slots__ = ("decoder",)

    def __init__(self, decoder: BatchDecoder) -> None:
        self.decoder = decoder

    def parse(
        self, topic: str, partition: int, lines: list[bytes], offsets: list[int]
    ) -> ParsedBatch:
        n = len(lines)
        suspect, blob = self._prefilter(lines)
        rejected: list[int] = np.flatnonzero(suspect).tolist()
        plain = np.flatnonzero(~suspect)
        segments: list[tuple[NDArray[np.intp], list[Any]]] = []
        self._read(lines, plain, segments, rejected, blob if len(plain) == n else None)
        if len(segments) == 1 and len(segments[0][0]) == n:
            read, events, read_lines = segments[0][0], segments[0][1], lines
        else:  # segments come in log order
            read = np.concatenate([s[0] for s in segments] or [np.empty(0, dtype=np.intp)])
            events = list(chain.from_iterable(s[1] for s in segments))
            read_lines = [lines[i] for i in read.tolist()]
            blob = b"\n".join(read_lines)
        tuples = list(map(_astuple, events))
        absent, unset = absent_counts(tuples)
        keys = key_counts(read_lines)
        unsure = np.zeros(len(read), dtype=np.bool_)
        if blanks := blank_colons(blob):  # a key may be followed by a blank: count unsure
            sizes = np.fromiter(map(len, read_lines), np.int64, len(read_lines))
            starts = np.cumsum(sizes + 1) - (sizes + 1)
            unsure[np.searchsorted(starts, blanks, side="right") - 1] = True
        is_feedback = np.fromiter(
            map(isinstance, events, repeat(FEEDBACK.lenient)), np.bool_, len(events)
        )
        parts = []
        for kind, mask in ((INFERENCE, ~is_feedback), (FEEDBACK, is_feedback)):
            at, flags = np.flatnonzero(mask), mask.tolist()
            part = _Part(kind, at, list(compress(events, flags)), list(compress(tuples, flags)))
            nested = _type_values(part) if kind is FEEDBACK else np.zeros(len(at), np.int64)
            _stamp(part)
            _reserved_dims(part)
            _defaults(part, unset[at])
            attributes = part.column("attributes")
            sizes = np.fromiter(map(len, attributes), np.int64, len(at))
            odd = (keys[at] != kind.expected_keys(absent[at], sizes, nested)) | unsure[at]
            for k in np.flatnonzero(odd & ~part.drop).tolist():
                _move_unknown_fields(part, k, read_lines[at[k]])
            parts.append(part)
        out = ParsedBatch()
        for part in parts:
            lines_of = read[part.at]
            self._final_checks(part, lines_of, topic, partition, lines, offsets, out.dead_letters)
            rejected.extend(lines_of[part.judge].tolist())
        judged = self._judge(topic, partition, lines, offsets, rejected, out.dead_letters)
        return _assemble(out, events, read, parts, judged, offsets)

    def _final_checks(
        self,
        part: _Part,
        line_of: NDArray[np.intp],
        topic: str,
        partition: int,
        lines: list[bytes],
        offsets: list[int],
        dead: list[DeadLetter],
    ) -> None:
        """Today's checks after decoding, on what stays in the bulk: the `ts` range,
        then the configured extra dims (an attribute holding a reserved value)."""
        min_ts, max_ts = self.decoder.min_ts, self.decoder.max_ts
        outside = ((part.ts < min_ts) | (part.ts >= max_ts)) & ~part.drop
        for k in np.flatnonzero(outside).tolist():
            i = int(line_of[k])
            dead.append(
                DeadLetter(topic, partition, offsets[i], lines[i], "ts_out_of_range",
                           f"ts {part.structs[k].ts} is outside [{min_ts}, {max_ts}) epoch ms")
            )  # fmt: skip
            part.drop[k] = True
        names = self.decoder.extra_dims
        if not names:
            return
        probe: Any = None  # an event of this type: the rule reads its type and attributes
        for k in np.flatnonzero(~part.drop).tolist():
            row = part.structs[k]
            if not row.attributes:
                continue
            if probe is None:
                probe = part.type.contract(*_astuple(row))
            probe.attributes = row.attributes
            if (reason := _reserved_extra_dim(probe, names)) is not None:
                i = int(line_of[k])
                dead.append(DeadLetter(topic, partition, offsets[i], lines[i], "invalid", reason))
                part.drop[k] = True

    def _judge(
        self,
        topic: str,
        partition: int,
        lines: list[bytes],
        offsets: list[int],
        rejected: list[int],
        dead: list[DeadLetter],
    ) -> list[tuple[int, Event]]:
        """Today's decoder's verdict on the lines the bulk path did not take: their
        events (with their line indices) and dead letters."""
        if not rejected:
            return []
        rejected.sort()
        verdict = self.decoder.decode(
            topic, partition, [lines[i] for i in rejected], [offsets[i] for i in rejected]
        )
        dead.extend(verdict.dead_letters)
        line_of = {offsets[i]: i for i in rejected}
        return [(line_of[o], e) for e, o in zip(verdict.events, verdict.offsets, strict=True)]

    def _prefilter(self, lines: list[bytes]) -> tuple[NDArray[np.bool_], bytes]:
        """Lines the bulk reader must not see: oversize, not starting with ``{``, or
        holding a newline (``decode_lines`` would read them as several values, or none);
        and the batch joined, for the reader when every line passes."""
        n = len(lines)
        sizes = np.fromiter(map(len, lines), np.int64, n)
        suspect = (sizes > self.decoder.max_event_bytes) | (sizes == 0)
        blob = b"\n".join(lines)
        if not blob.strip(b"\n"):
            return np.ones(n, dtype=np.bool_), blob
        starts = np.cumsum(sizes + 1) - (sizes + 1)
        first = np.frombuffer(blob, dtype=np.uint8)[np.minimum(starts, len(blob) - 1)]
        suspect |= first != _OPEN_BRACE
        if blob.count(b"\n") != n - 1:  # some line holds a newline: find which (rare)
            suspect |= np.fromiter((b"\n" in line for line in lines), np.bool_, n)
        return suspect, blob

    def _read(
        self,
        lines: list[bytes],
        chunk: NDArray[np.intp],
        segments: list[tuple[NDArray[np.intp], list[Any]]],
        rejected: list[int],
        joined: bytes | None = None,
    ) -> None:
        """One reader call for the chunk (`joined`: its lines joined, when at hand). When
        the reader rejects it, its error names the first bad line (`$[i]`, or a byte
        offset): the lines before it are read again, that line is rejected, and reading
        goes on after it in windows of `_WINDOW` lines, so that the next rejection reads
        again at most a window (slices of one joined buffer: nothing is copied). An
        error that names no line cuts the window in halves (bisection). What is read
        goes to `segments` as (line indices, lenient Structs), in log order."""
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
                events = READER.decode_lines(blob[starts[pos] : starts[end] - 1])
            except _ReaderErrors as exc:
                span = _WINDOW
                bad = _bad_line(exc, starts, pos, end)
                if bad is None:
                    self._bisect(lines, chunk[pos:end], segments, rejected)
                    pos = end
                    continue
                try:  # the lines before the bad one, read again from the same buffer
                    events = READER.decode_lines(blob[starts[pos] : starts[pos + bad] - 1])
                except _ReaderErrors:
                    events = []
                if len(events) == bad:
                    if bad:
                        segments.append((chunk[pos : pos + bad], events))
                else:
                    self._bisect(lines, chunk[pos : pos + bad], segments, rejected)
                rejected.append(int(chunk[pos + bad]))
                pos += bad + 1
                continue
            if len(events) != end - pos:  # a line held several values: find it by halves
                self._bisect(lines, chunk[pos:end], segments, rejected)
            else:
                segments.append((chunk[pos:end], events))
            pos = end

    def _bisect(
        self,
        lines: list[bytes],
        chunk: NDArray[np.intp],
        segments: list[tuple[NDArray[np.intp], list[Any]]],
        rejected: list[int],
    ) -> None:
        if len(chunk) == 1:
            rejected.append(int(chunk[0]))
            return
        half = len(chunk) // 2
        self._read(lines, chunk[:half], segments, rejected)
        self._read(lines, chunk[half:], segments, rejected)


def _type_values(part: _Part) -> NDArray[np.int64]:
    """Each feedback kind's values typed in one reader call (a value its kind rejects
    sends its line to the judge; struct kinds kept as dicts, as today). Returns the keys
    inside each raw value (``":``), which its line's key count holds too."""
    structs = part.structs
    nested = np.zeros(len(structs), dtype=np.int64)
    by_kind: dict[str, list[int]] = {}
    for k, kind in enumerate(part.column("kind")):
        by_kind.setdefault(kind, []).append(k)
    raw_values = part.column("value")
    for kind, ks in by_kind.items():
        raws = [raw_values[k] for k in ks]
        typed = _values(kind, raws)
        if KEY_MARK in b"\n".join(raws):  # objects, or strings holding ``":``
            nested[ks] = [bytes(raw).count(KEY_MARK) for raw in raws]
        struct = kind in STRUCT_VALUES
        for k, value in zip(ks, typed, strict=True):
            if value is _REJECTED:
                part.refuse(k)
            else:
                structs[k].value = msgspec.structs.asdict(value) if struct else value
    return nested


def _stamp(part: _Part) -> None:
    """RFC 3339 `ts` (datetimes) as epoch ms in one pyarrow cast, floored to the ms as
    :func:`operators.events.epoch_ms`; `part.ts` as int64 (an epoch beyond int64 is out
    of any range: clamped to its end)."""
    stamps = part.column("ts")
    stamped = [k for k, t in enumerate(stamps) if type(t) is not int]
    if stamped:
        instants = pa.array([stamps[k] for k in stamped])
        micros = instants.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        structs = part.structs
        for k, value in zip(stamped, (micros // 1000).tolist(), strict=True):
            stamps[k] = structs[k].ts = value
    try:
        part.ts = np.array(stamps, dtype=np.int64)
    except OverflowError:
        part.ts = np.array([min(max(t, _INT64_MIN), _INT64_MAX) for t in stamps], np.int64)


def _reserved_dims(part: _Part) -> None:
    """The contract Structs' ``__post_init__`` on all dims at once: a dim holding a
    reserved value sends its line to the judge (which writes the reason)."""
    dims = part.type.dims
    if not dims:
        return
    pick = itemgetter(*dims) if len(dims) > 1 else lambda row: (row[dims[0]],)
    if RESERVED_DIM_VALUES.isdisjoint(chain.from_iterable(map(pick, part.tuples))):
        return
    for k, values in enumerate(map(pick, part.tuples)):
        if not RESERVED_DIM_VALUES.isdisjoint(values):
            part.refuse(k)


def _defaults(part: _Part, unset: NDArray[np.int64]) -> None:
    """The contract's defaults where a field was absent (read as UNSET), on the rows
    that have one."""
    defaults = part.type.defaults
    if not defaults:
        return
    for k in np.flatnonzero(unset).tolist():
        struct = part.structs[k]
        for name, default in defaults:
            if getattr(struct, name) is msgspec.UNSET:
                setattr(struct, name, default)


def _move_unknown_fields(part: _Part, k: int, line: bytes) -> None:
    """A line whose key count says it may hold unknown fields: read alone, and its
    unknown fields moved into `attributes` by today's rule. Attributes the contract
    Struct would refuse send the line to the judge (today's pydantic path keeps them)."""
    try:
        obj = _untyped.decode(line)
    except _ReaderErrors:
        obj = None
    if type(obj) is not dict:
        part.refuse(k)
        return
    if obj.keys() <= part.type.known:
        return
    _keep_unknown_fields(obj, part.type.known)
    try:
        attributes = _attribute_readers[part.type.contract].decode(_encode(obj["attributes"]))
    except _ReaderErrors:
        part.refuse(k)
        return
    part.structs[k].attributes = attributes


def _assemble(
    out: ParsedBatch,
    events: list[Any],
    read: NDArray[np.intp],
    parts: list[_Part],
    judged: list[tuple[int, Event]],
    offsets: list[int],
) -> ParsedBatch:
    """The rows read that stayed, and the judge's events, in log order; their offsets,
    `ts` and types."""
    out.dead_letters.sort(key=lambda letter: letter.offset)
    keep = np.ones(len(events), dtype=np.bool_)
    ts = np.empty(len(events), dtype=np.int64)
    is_feedback = np.zeros(len(events), dtype=np.bool_)
    is_feedback[parts[1].at] = True
    for part in parts:
        keep[part.at[part.drop]] = False
        ts[part.at] = part.ts
    rows, line_of, ts = list(compress(events, keep.tolist())), read[keep], ts[keep]
    is_feedback = is_feedback[keep]
    if judged:
        line_of = np.concatenate([line_of, np.array([i for i, _ in judged], dtype=np.intp)])
        ts = np.concatenate([ts, np.array([e.ts for _, e in judged], dtype=np.int64)])
        rows += [_LENIENT[type(e)](*_astuple(e)) for _, e in judged]
        order = np.argsort(line_of, kind="stable")
        line_of, ts = line_of[order], ts[order]
        rows = [rows[k] for k in order.tolist()]
        is_feedback = np.fromiter(
            map(isinstance, rows, repeat(FEEDBACK.lenient)), np.bool_, len(rows)
        )
    out.rows, out.ts, out.is_feedback = rows, ts, is_feedback
    out.offsets = np.asarray(offsets, dtype=np.int64)[line_of]
    return out


def _values(kind: str, raws: list[Any]) -> list[Any]:
    """Feedback values of one kind typed in one call; past a rejected value (named by
    the error), on from the next one."""
    decoder = _value_decoders[kind]
    out: list[Any] = []
    pos = 0
    while pos < len(raws):
        try:
            values = decoder.decode_lines(b"\n".join(raws[pos:]))
        except _ReaderErrors as exc:
            match = _LINE_IN_ERROR.search(str(exc))
            bad = min(int(match.group(1)), len(raws) - pos - 1) if match else 0
            head = raws[pos : pos + bad]
            try:  # the values before the named one, again in one call
                values = decoder.decode_lines(b"\n".join(head)) if head else []
            except _ReaderErrors:
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


def _one_by_one(decoder: msgspec.json.Decoder[Any], raws: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for raw in raws:
        try:
            out.append(decoder.decode(raw))
        except _ReaderErrors:
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


__all__ = ["ColumnarParser", "Feedback", "Inference", "ParsedBatch"]
