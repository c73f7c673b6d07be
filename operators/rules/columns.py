"""Cells of one window of an emission as columns: what the columnar evaluators read.

A :class:`CellBlock` is a set of cells that share one window, start, end and finality (one
:class:`~operators.window_metrics.WindowGroup` of an emission, or some of it). Evaluators
that judge cells with numpy (threshold, ratio, drift) read its columns: a metric, the sum
of some additive fields, a metric's own sample size, the confidence histograms, and the
cells' dims as :data:`~operators.rules.alerts.Dims` keys. Only the few cells whose verdict
can change an alert become :class:`~operators.rules.evaluation.CellWindow` records
(:meth:`CellBlock.cell`).

Two sources, one interface: :class:`WindowColumns` reads an emission's arrays directly
(the stage), :class:`CellList` reads a list of records (tests and tools use the per-cell
`evaluate`, which goes through the same columnar code). Columns are computed once per
block and shared by every rule that reads it (:meth:`CellBlock.take` is a view).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

import numpy as np

from operators.batches import Categorical
from operators.cells import BASE_DIMS
from operators.metrics import SAMPLE_FIELDS
from operators.rules.alerts import Dims
from operators.rules.cell_windows import DIM_COLUMNS, EXTRA, cell_windows, parse_extra_dims
from operators.rules.evaluation import CellWindow
from operators.rules.selectors import ROLLUP
from operators.window_metrics import WindowMetrics

_SORTED_BASE = tuple(sorted(BASE_DIMS))


class CellBlock:
    """Cells of one window (name, start, end) and finality, read column by column."""

    window: str
    window_start: int
    window_end: int
    final: bool

    def __len__(self) -> int:
        raise NotImplementedError

    def metric(self, name: str) -> np.ndarray:
        """A published metric per cell, float64, NaN where it is null."""
        raise NotImplementedError

    def fields_sum(self, names: Sequence[str]) -> np.ndarray:
        """The sum of these additive fields per cell, float64 (absent fields count 0)."""
        raise NotImplementedError

    def histograms(self) -> np.ndarray:
        """The confidence histograms, int64 [cells, bins]."""
        raise NotImplementedError

    @property
    def keys(self) -> Sequence[Dims]:
        """Each cell's dims as the alerts carry them (sorted (name, value) pairs)."""
        raise NotImplementedError

    @property
    def ids(self) -> np.ndarray:
        """Each cell's id, int64 (:attr:`CellWindow.cell_id`): one per distinct dims for
        the flow's life, what per-cell state is found by (an integer, not a hashed dims
        key)."""
        raise NotImplementedError

    def dim(self, name: str) -> np.ndarray:
        """Each cell's value of dim `name` (object array; "*" where the cell is a rollup
        over it or does not have it)."""
        return np.array([dict(key).get(name, ROLLUP) for key in self.keys], dtype=object)

    def cell(self, i: int) -> CellWindow:
        """Cell `i` as a record (reasons and evidence read it)."""
        raise NotImplementedError

    def cells(self, positions: Sequence[int]) -> list[CellWindow]:
        """The records of these cells."""
        return [self.cell(i) for i in positions]

    def samples(self, metric: str) -> np.ndarray:
        """The events `metric` is measured on per cell (its own denominator), int64: what
        :func:`operators.rules.evaluators.reading.samples` gives for one cell."""
        return self.fields_sum(SAMPLE_FIELDS[metric]).astype(np.int64)

    def take(self, positions: np.ndarray) -> CellBlock:
        """The cells at `positions`, sharing this block's columns."""
        return _Taken(self, positions)


class WindowColumns(CellBlock):
    """Rows of one window group of an emission (the stage's block)."""

    def __init__(self, batch: WindowMetrics, window: str, start: int, end: int, rows: np.ndarray):
        self.batch = batch
        self.window, self.window_start, self.window_end = window, start, end
        self.final = batch.final
        self.rows = rows
        self._metrics: dict[str, np.ndarray] = {}
        self._fields: dict[tuple[str, ...], np.ndarray] = {}
        self._cells: dict[int, CellWindow] = {}
        self._dims: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def metric(self, name: str) -> np.ndarray:
        values = self._metrics.get(name)
        if values is None:
            values = self._metrics[name] = np.asarray(self.batch.columns[name], dtype=np.float64)[
                self.rows
            ]
        return values

    def fields_sum(self, names: Sequence[str]) -> np.ndarray:
        key = tuple(names)
        values = self._fields.get(key)
        if values is None:
            index = {n: i for i, n in enumerate(self.batch.field_names)}
            columns = [index[n] for n in key if n in index]
            matrix = np.asarray(self.batch.fields)
            values = np.zeros(len(self.rows), dtype=np.float64)
            for column in columns:  # in order: the sum a record's fields give
                values = values + matrix[self.rows, column]
            self._fields[key] = values
        return values

    def histograms(self) -> np.ndarray:
        return self._histograms

    @cached_property
    def _histograms(self) -> np.ndarray:
        names = self.batch.field_names
        first = next((i for i, n in enumerate(names) if n.startswith("confidence_bin_")), None)
        matrix = np.asarray(self.batch.fields)
        if first is None:
            return np.zeros((len(self.rows), 0), dtype=np.int64)
        return matrix[self.rows, first:].astype(np.int64)

    def dim(self, name: str) -> np.ndarray:
        if name not in BASE_DIMS:
            return super().dim(name)
        values = self._dims.get(name)
        if values is None:
            column = self.batch.columns[name]
            assert isinstance(column, Categorical)
            categories = np.array(column.categories, dtype=object)
            values = self._dims[name] = categories[np.asarray(column.codes)[self.rows]]
        return values

    @cached_property
    def ids(self) -> np.ndarray:
        return np.asarray(self.batch.cell_ids, dtype=np.int64)[self.rows]

    @cached_property
    def keys(self) -> Sequence[Dims]:
        values: dict[str, list[str]] = {}
        for name in DIM_COLUMNS:
            column = self.batch.columns[name]
            assert isinstance(column, Categorical)
            categories = column.categories
            values[name] = [categories[c] for c in np.asarray(column.codes)[self.rows].tolist()]
        base = zip(*([(n, v) for v in values[n]] for n in _SORTED_BASE), strict=True)
        extras = values[EXTRA]
        if not any(extras):
            return list(base)
        parsed = {e: tuple(parse_extra_dims(e).items()) for e in set(extras)}
        return [
            tuple(sorted((*pairs, *parsed[e]))) if e else pairs
            for pairs, e in zip(base, extras, strict=True)
        ]

    def cell(self, i: int) -> CellWindow:
        record = self._cells.get(i)
        if record is None:
            rows = self.rows[i : i + 1]
            (record,) = cell_windows(self.batch, self.window, self.window_start,
                                     self.window_end, rows)  # fmt: skip
            self._cells[i] = record
        return record

    def cells(self, positions: Sequence[int]) -> list[CellWindow]:
        missing = [i for i in positions if i not in self._cells]
        if missing:
            built = cell_windows(self.batch, self.window, self.window_start, self.window_end,
                                 self.rows[missing])  # fmt: skip
            self._cells.update(zip(missing, built, strict=True))
        return [self._cells[i] for i in positions]


class CellList(CellBlock):
    """Records of one window and finality (the per-cell `evaluate` of a columnar rule)."""

    def __init__(self, cells: Sequence[CellWindow]) -> None:
        if not cells:
            raise ValueError("a CellList needs at least one cell")
        first = cells[0]
        if any(
            (c.window, c.window_start, c.window_end, c.final)
            != (first.window, first.window_start, first.window_end, first.final)
            for c in cells
        ):
            raise ValueError("a CellList holds cells of one window, start, end and finality")
        self.records = list(cells)
        self.window, self.window_start = first.window, first.window_start
        self.window_end, self.final = first.window_end, first.final

    @classmethod
    def runs(cls, cells: Sequence[CellWindow]) -> list[CellList]:
        """`cells` cut into runs of the same window, start, end and finality, in order."""
        out: list[CellList] = []
        start = 0
        for i in range(1, len(cells) + 1):
            if i == len(cells) or _block_of(cells[i]) != _block_of(cells[start]):
                out.append(cls(cells[start:i]))
                start = i
        return out

    def __len__(self) -> int:
        return len(self.records)

    def metric(self, name: str) -> np.ndarray:
        values = [c.metrics.get(name) for c in self.records]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    def fields_sum(self, names: Sequence[str]) -> np.ndarray:
        out = np.zeros(len(self.records), dtype=np.float64)
        for name in names:
            out = out + np.array([c.fields.get(name, 0.0) for c in self.records], dtype=np.float64)
        return out

    def histograms(self) -> np.ndarray:
        return np.array([c.histogram for c in self.records], dtype=np.int64).reshape(
            len(self.records), -1
        )

    @cached_property
    def keys(self) -> Sequence[Dims]:
        return [tuple(sorted(c.dims.items())) for c in self.records]

    @cached_property
    def ids(self) -> np.ndarray:
        return np.array([c.cell_id for c in self.records], dtype=np.int64)

    def cell(self, i: int) -> CellWindow:
        return self.records[i]


class _Taken(CellBlock):
    """Some cells of a block, reading its (cached) columns."""

    def __init__(self, parent: CellBlock, positions: np.ndarray) -> None:
        self.parent = parent
        self.positions = positions
        self.window, self.window_start = parent.window, parent.window_start
        self.window_end, self.final = parent.window_end, parent.final

    def __len__(self) -> int:
        return len(self.positions)

    def metric(self, name: str) -> np.ndarray:
        return self.parent.metric(name)[self.positions]

    def fields_sum(self, names: Sequence[str]) -> np.ndarray:
        return self.parent.fields_sum(names)[self.positions]

    def histograms(self) -> np.ndarray:
        return self.parent.histograms()[self.positions]

    def dim(self, name: str) -> np.ndarray:
        return self.parent.dim(name)[self.positions]

    @cached_property
    def keys(self) -> Sequence[Dims]:
        keys = self.parent.keys
        return [keys[p] for p in self.positions.tolist()]

    @cached_property
    def ids(self) -> np.ndarray:
        return self.parent.ids[self.positions]

    def cell(self, i: int) -> CellWindow:
        return self.parent.cell(int(self.positions[i]))

    def cells(self, positions: Sequence[int]) -> list[CellWindow]:
        return self.parent.cells(self.positions[list(positions)].tolist())


def _block_of(cell: CellWindow) -> tuple[str, int, int, bool]:
    return cell.window, cell.window_start, cell.window_end, cell.final
