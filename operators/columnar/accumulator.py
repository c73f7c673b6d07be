"""The accumulator: one batch's counted events into every family's slice deltas, in bulk.

A thin shell, as Flink's slicing window operator is over its combiner: each family
(:mod:`operators.families`) turns the batch's columns (:class:`JoinedColumns`) into rows,
on-time and late alike, and :meth:`operators.slices.SliceDeltas.add_rows` sums them. No
step per event: a batch costs a few numpy calls per family. Sums are exact (every value
is on a fixed grid, :mod:`operators.metrics`), so the deltas do not depend on how the
events were cut into batches.
"""

from __future__ import annotations

from collections.abc import Mapping

from operators.cells import EXTRA_KEY_BITS
from operators.columnar.joined import JoinedColumns
from operators.families import Family
from operators.slices import SliceDeltas


class Accumulator:
    """Adds batches to the deltas of the given families (:func:`operators.families.registry`)."""

    __slots__ = ("families",)

    def __init__(self, families: tuple[Family, ...]) -> None:
        self.families = families

    def add(self, batch: JoinedColumns, deltas: Mapping[str, SliceDeltas]) -> None:
        """Every family's rows of `batch` into its deltas (by family name)."""
        for family in self.families:
            target = deltas[family.name]
            for update in family.updates(batch):
                keys = update.cells << EXTRA_KEY_BITS | update.keys
                target.add_rows(update.slices, update.cutoffs, keys, update.values)
