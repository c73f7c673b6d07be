"""Dims, rollups and the dictionary of aggregation cells.

A *cell* is one combination of dim values, as it appears in a `metrics` row:
``(tenant, model_id, deployment, model_version, segment, endpoint, *extra_dims)``.
Events carry their finest cell; every grouping set maps it to a rollup cell in which
the dims it drops read ``"*"``. `tenant`, `model_id`, `deployment` and the configured
extra dims are never rolled up (they stay filterable). Cells get dense integer ids so
the merge stage can key numpy arrays by them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALL = "*"
UNKNOWN = "unknown"
KEPT_DIMS = ("tenant", "model_id", "deployment")
ROLLUP_DIMS = ("model_version", "segment", "endpoint")
BASE_DIMS = KEPT_DIMS + ROLLUP_DIMS
_ROLLUP_POSITIONS = {name: BASE_DIMS.index(name) for name in ROLLUP_DIMS}
EXTRA_KEY_BITS = 24  # a cell's key in keyed sums is cell_id << EXTRA_KEY_BITS | extra_id

Cell = tuple[str, ...]


def unknown_cell(extra_dims: int) -> Cell:
    return (UNKNOWN,) * (len(BASE_DIMS) + extra_dims)


def rollup_cell(cell: Cell, kept: frozenset[str]) -> Cell:
    """`cell` with every rollup dim not in `kept` replaced by "*"."""
    values = list(cell)
    for name, position in _ROLLUP_POSITIONS.items():
        if name not in kept:
            values[position] = ALL
    return tuple(values)


class CellIndex:
    """Ids for cells; for each finest cell, the ids of its rollup cells."""

    def __init__(self, grouping_sets: Sequence[Sequence[str]], extra_dims: Sequence[str]) -> None:
        self.grouping_sets = [frozenset(g) for g in grouping_sets]
        self.extra_dims = tuple(extra_dims)
        self._ids: dict[Cell, int] = {}
        self._cells: list[Cell] = []
        self._finest: dict[Cell, int] = {}  # finest cell -> row of _rollups
        self._rollups = np.zeros((0, len(self.grouping_sets)), dtype=np.int64)

    def __len__(self) -> int:
        return len(self._cells)

    @property
    def dim_names(self) -> tuple[str, ...]:
        return BASE_DIMS + self.extra_dims

    def _cell_id(self, cell: Cell) -> int:
        cell_id = self._ids.get(cell)
        if cell_id is None:
            cell_id = len(self._cells)
            self._ids[cell] = cell_id
            self._cells.append(cell)
        return cell_id

    def rollup_ids(self, cells: Sequence[Cell]) -> np.ndarray:
        """[len(cells), grouping sets] rollup cell ids of each finest cell."""
        finest = self._finest
        rows = np.empty(len(cells), dtype=np.int64)
        for i, cell in enumerate(cells):
            row = finest.get(cell)
            if row is None:
                row = self._register(cell)
            rows[i] = row
        return self._rollups[rows]

    def _register(self, cell: Cell) -> int:
        row = len(self._finest)
        self._finest[cell] = row
        if row >= len(self._rollups):
            grown = np.zeros((max(64, 2 * len(self._rollups)), len(self.grouping_sets)), np.int64)
            grown[: len(self._rollups)] = self._rollups
            self._rollups = grown
        self._rollups[row] = [self._cell_id(rollup_cell(cell, kept)) for kept in self.grouping_sets]
        return row

    def cell(self, cell_id: int) -> Cell:
        return self._cells[cell_id]

    def columns(self, cell_ids: np.ndarray) -> dict[str, list[str]]:
        """Dim name -> values, for each cell id (one row per id)."""
        cells = [self._cells[i] for i in cell_ids.tolist()]
        names = self.dim_names
        return {name: [cell[j] for cell in cells] for j, name in enumerate(names)}

    def rollups_of(self, cell: Cell) -> list[Cell]:
        """The rollup cells of one finest cell (for per-event rows such as late events)."""
        return [rollup_cell(cell, kept) for kept in self.grouping_sets]
