"""The join's inference table in bulk, as :class:`operators.join.InferenceCache`.

A batch of inferences is one bulk insert into a persistent
:class:`.hash_fifo.HashFifo` keyed by `request_id` hash, whose payload is the join's
context as numpy columns (cell id, prediction label, confidence, latency; NaN for a
missing number); a batch of feedback is one bulk probe answering the slot of its
inference, or -1. First inference of a request wins, `ttl` of event time behind the
watermark and `max_entries` (oldest first, counted) bound it: InferenceCache's rules.

The prediction labels held are shared: equal labels are one str object. A decoded
event's strings are its own, and a label held per inference (~50 bytes) was ~25 MiB of
the bench's ~500k held inferences, for a handful of distinct classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from operators.columnar.hash_fifo import HashFifo, hash_keys
from operators.events import Inference
from operators.join import InferenceContext


def object_column(values: Sequence[Any]) -> NDArray[np.object_]:
    """A 1-d object array of `values` (np.array would nest tuples or guess a dtype)."""
    array = np.empty(len(values), dtype=np.object_)
    array[:] = values
    return array


@dataclass(frozen=True, slots=True)
class InferenceColumns:
    """The join's context of a batch of inferences (or of probe hits), one row each."""

    ts: NDArray[np.int64]
    cells: NDArray[np.int64]
    labels: NDArray[np.object_]  # str or None: the prediction as compared with labels
    confidences: NDArray[np.float64]  # NaN: none given
    latencies: NDArray[np.float64]  # NaN: none given

    @classmethod
    def of(
        cls, events: Sequence[Inference], ts: NDArray[np.int64], cells: Sequence[int],
        labels: Sequence[str | None],
    ) -> InferenceColumns:  # fmt: skip
        """The columns of decoded inferences: their `ts` (epoch ms), cell ids and labels
        as the caller has them, the numbers read here (None -> NaN)."""
        return cls(
            ts, np.array(cells, dtype=np.int64), object_column(labels),
            np.array([e.confidence for e in events], dtype=np.float64),
            np.array([e.latency_ms for e in events], dtype=np.float64),
        )  # fmt: skip

    def context(self, i: int) -> InferenceContext:
        """Row `i` as the row-wise stage's tuple."""
        confidence, latency = float(self.confidences[i]), float(self.latencies[i])
        return (
            int(self.ts[i]), int(self.cells[i]), self.labels[i],
            None if np.isnan(confidence) else confidence,
            None if np.isnan(latency) else latency,
        )  # fmt: skip


# Distinct labels remembered for sharing; past this many the memo starts over, so text
# labels of high cardinality cost a dict of this size, not one entry per inference.
LABELS_SHARED = 4096


class JoinBuffer:
    """Recent inferences by request id: bulk :meth:`add`, bulk :meth:`probe`."""

    __slots__ = ("_labels", "_table")

    def __init__(self, ttl: int, max_entries: int) -> None:
        self._table = HashFifo(ttl, max_entries)
        self._labels: dict[str | None, str | None] = {}

    def __len__(self) -> int:
        return len(self._table)

    @property
    def evicted(self) -> int:
        return self._table.evicted

    @property
    def next_slot(self) -> int:
        """The slot the next held inference gets: slots rise in arrival order."""
        return self._table.hi

    def fits(self, count: int) -> bool:
        """Whether `count` more inferences can be held without pushing any out
        (`max_entries`): then every slot held now stays held while they are added."""
        return len(self._table) + count <= self._table.max_entries

    def add(self, request_ids: Sequence[str], rows: InferenceColumns) -> NDArray[np.bool_]:
        """Hold each inference in order; False where its request id is already held."""
        accepted, _ = self.add_hashed(hash_keys(request_ids), rows)
        return accepted

    def add_hashed(
        self, hashes: NDArray[np.uint64], rows: InferenceColumns
    ) -> tuple[NDArray[np.bool_], NDArray[np.int64]]:
        """:meth:`add` for request ids hashed by the caller (:func:`.hash_fifo.hash_keys`):
        (accepted, the slot each accepted inference got, -1 for duplicates)."""
        payload = {
            "cells": rows.cells, "labels": self._shared(rows.labels),
            "confidences": rows.confidences, "latencies": rows.latencies,
        }  # fmt: skip
        return self._table.add(hashes, rows.ts, payload)

    def _shared(self, labels: NDArray[np.object_]) -> NDArray[np.object_]:
        """The labels, each equal one the same object (a C-level map over a memo)."""
        memo = self._labels
        if len(memo) > LABELS_SHARED:
            memo.clear()
        shared = np.empty(len(labels), dtype=np.object_)
        shared[:] = list(map(memo.setdefault, labels, labels))
        return shared

    def slots(self, hashes: NDArray[np.uint64]) -> NDArray[np.int64]:
        """The slot of each hashed request id's held inference, -1 where none is held."""
        return self._table.probe(hashes)

    def columns(self, slots: NDArray[np.int64]) -> InferenceColumns:
        """The context columns of held slots, one row per slot."""
        table = self._table
        return InferenceColumns(
            table.times(slots), table.column("cells", slots), table.column("labels", slots),
            table.column("confidences", slots), table.column("latencies", slots),
        )  # fmt: skip

    def probe(self, request_ids: Sequence[str]) -> tuple[NDArray[np.int64], InferenceColumns]:
        """For each request id, the slot of its held inference (-1: none) and the
        context columns of the hits (in the order of the found ids)."""
        seqs = self._table.probe(hash_keys(request_ids))
        return seqs, self.columns(seqs[seqs >= 0])

    def expire(self, watermark: float) -> None:
        """Drop inferences `ttl` or more behind the watermark, in arrival order."""
        self._table.expire(watermark)
