"""The ``latency`` family: DDSketch bucket counts of inference latency (:mod:`operators.sketch`).

Key = bucket id; width 1 (the count). It has no table of its own: each cell's quantiles
go into its ``metrics`` row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from operators.cells import EXTRA_KEY_BITS
from operators.columnar.joined import JoinedColumns
from operators.families.base import Update
from operators.keyed_sums import run_starts
from operators.metrics import LATENCY_METRICS
from operators.sketch import buckets_of, segment_quantiles

LATENCY = "latency"
_EXTRA_MASK = (1 << EXTRA_KEY_BITS) - 1


@dataclass(frozen=True)
class LatencyFamily:
    """Latency buckets per cell; inferences without a latency add nothing."""

    name: str = LATENCY
    key: str = "sketch bucket"
    width: int = 1
    table: str | None = None

    def updates(self, batch: JoinedColumns) -> Iterator[Update]:
        inferences = batch.inferences
        rows = np.flatnonzero(~np.isnan(inferences.latency))
        if len(rows):
            yield Update(
                inferences.slices[rows], inferences.cutoffs[rows], inferences.cells[rows],
                buckets_of(inferences.latency[rows]), np.ones((len(rows), 1)),
            )  # fmt: skip

    def cell_metrics(
        self, keys: np.ndarray, values: np.ndarray, cells: np.ndarray
    ) -> dict[str, np.ndarray]:
        quantiles = _quantiles(keys, values, cells)
        return {name: quantiles[:, j] for j, name in enumerate(LATENCY_METRICS)}

    def key_columns(self, ids: np.ndarray, values: list[Any]) -> dict[str, Any]:
        return {}

    def metrics(self, values: np.ndarray, seconds: np.ndarray) -> dict[str, np.ndarray]:
        return {}


def _quantiles(keys: np.ndarray, values: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Quantiles of the (sorted, unique) `cells` from their (cell, bucket) rows, sorted by
    key (each cell's rows are one segment)."""
    out = np.full((len(cells), len(LATENCY_METRICS)), np.nan)
    if len(keys) == 0:
        return out
    owners = keys >> EXTRA_KEY_BITS  # sorted, as the keys are
    segment_starts = run_starts(owners)
    present = owners[segment_starts]
    quantiles = segment_quantiles(segment_starts, keys & _EXTRA_MASK, values[:, 0])
    at = np.asarray(np.searchsorted(cells, present))
    wanted = at < len(cells)
    wanted[wanted] = cells[at[wanted]] == present[wanted]
    out[at[wanted]] = quantiles[wanted]
    return out
