"""The items that travel between dataflow steps, batch-at-a-time.

Sources emit :class:`RawBatch` (lines of one stream of one partition, with their
positions); the partition stage emits :class:`TableRows` for the sinks and
:class:`~operators.slices.PartialBatch` for the merge stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Stream = Literal["inferences", "feedback"]
STREAMS: tuple[Stream, Stream] = ("inferences", "feedback")


@dataclass(slots=True)
class RawBatch:
    """Raw lines read from one stream of one source partition.

    `offsets[i]` is the position of `lines[i]` in its topic partition (a Kafka offset or
    a local-log byte offset): dead letters and inference versions are keyed by it.
    `caught_up` says nothing more of this stream was available when the batch was read
    (the partition stage then need not wait for it to order the two streams by time);
    `end_of_input` says the bounded source has delivered this stream's last line.
    An empty batch only carries those flags (and wakes the partition stage).
    """

    partition: int
    stream: Stream
    topic: str
    lines: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    caught_up: bool = False
    end_of_input: bool = False


@dataclass(slots=True)
class DeadLetter:
    """An event that could not be used, with why and where it came from."""

    topic: str
    partition: int
    offset: int
    raw: bytes
    error: str  # category: oversize | malformed_json | not_object | invalid | ts_out_of_range
    reason: str  # human-readable detail


@dataclass(slots=True)
class Categorical:
    """A dictionary-encoded column: row i holds categories[codes[i]]."""

    codes: Any  # numpy int32 array
    categories: list[str]

    def __len__(self) -> int:
        return len(self.codes)


@dataclass(slots=True)
class NullableColumn:
    """A column with nulls: row i is values[i] where valid[i], else null. For integer and
    time columns, which have no NaN to stand for null as a float column's NaN does: the
    sink hands both arrays to Arrow as they are, with no Python value per row."""

    values: Any  # numpy array
    valid: Any  # numpy bool array

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def joined(cls, parts: list[NullableColumn]) -> NullableColumn:
        """The parts one after another."""
        return cls(
            np.concatenate([p.values for p in parts]), np.concatenate([p.valid for p in parts])
        )


@dataclass(slots=True)
class TableRows:
    """Rows for one ClickHouse table, column-oriented (name -> values)."""

    table: str
    columns: dict[str, list[Any]]
    # Written when they reach the sink, not at their table's flush interval: a tick's
    # early rows of a window spec that emits at every tick (MergeStage), whose wait for
    # the interval was up to a whole interval of their freshness.
    write_now: bool = field(default=False, kw_only=True)

    def __len__(self) -> int:
        for values in self.columns.values():
            return len(values)
        return 0

    @property
    def provisional(self) -> bool:
        """Early window rows (a `final` column, none of it set): a later row of the same
        key replaces each (the next early row, at last the final row, by `version`), so
        they need not be written before a snapshot (connectors/clickhouse_sink.py)."""
        final = self.columns.get("final")
        return final is not None and len(final) > 0 and not np.asarray(final).any()

    def slice(self, start: int, stop: int) -> TableRows:
        """Rows [start, stop): numpy columns as views, lists copied (references only)."""
        columns: dict[str, Any] = {}
        for name, values in self.columns.items():
            if isinstance(values, Categorical):
                columns[name] = Categorical(values.codes[start:stop], values.categories)
            elif isinstance(values, NullableColumn):
                columns[name] = NullableColumn(values.values[start:stop], values.valid[start:stop])
            else:
                columns[name] = values[start:stop]
        return TableRows(self.table, columns, write_now=self.write_now)
