"""Dims, rollups and the dictionaries of aggregation cells.

A *cell* is one combination of dim values, as it appears in a `metrics` row:
``(tenant, model_id, deployment, model_version, segment, endpoint, *extra_dims)``.
Events carry their finest cell; every grouping set maps it to a rollup cell in which the
dims it drops read ``"*"``. `tenant`, `model_id`, `deployment` and the configured extra
dims are never rolled up (they stay filterable).

Cells travel and aggregate as dense integer ids: a partition numbers its cells
(:class:`LocalIds`) and announces new ones with its deltas; the merge stage maps them
to global ids (:class:`CellIndex`), whose dims are dictionary-encoded so rows of
thousands of cells are built with numpy takes. The keys of the keyed families (label
classes, policy pairs, report categories) are numbered the same way.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from operators.batches import Categorical
from operators.snapshots import ChunkedList, PickleCached

ALL = "*"
UNKNOWN = "unknown"
KEPT_DIMS = ("tenant", "model_id", "deployment")
ROLLUP_DIMS = ("model_version", "segment", "endpoint")
BASE_DIMS = KEPT_DIMS + ROLLUP_DIMS
_ROLLUP_POSITIONS = {name: BASE_DIMS.index(name) for name in ROLLUP_DIMS}
EXTRA_KEY_BITS = 24  # a row's key in keyed sums is cell_id << EXTRA_KEY_BITS | extra_id

Cell = tuple[str, ...]
K = TypeVar("K", bound=Hashable)


def unknown_cell(extra_dims: int) -> Cell:
    return (UNKNOWN,) * (len(BASE_DIMS) + extra_dims)


def rollup_cell(cell: Cell, kept: frozenset[str]) -> Cell:
    """`cell` with every rollup dim not in `kept` replaced by "*"."""
    values = list(cell)
    for name, position in _ROLLUP_POSITIONS.items():
        if name not in kept:
            values[position] = ALL
    return tuple(values)


def format_extra_dims(names: Sequence[str], values: Sequence[str]) -> str:
    """Extra dims as one sortable string, `name=value` joined by `;` ('' when none)."""
    return ";".join(f"{n}={v}" for n, v in zip(names, values, strict=True))


class LocalIds(PickleCached, Generic[K]):
    """A partition's dense ids for values (cells, classes, ...); those not yet announced
    to the merge stage.

    Snapshots carry the values only (the dict is rebuilt on resume: half the bytes, and
    pickling a dict keyed by tuples is the slow part), from a cache while no value is new,
    and by chunks, so a new value re-pickles only the last chunk.
    """

    __slots__ = ("_chunks", "announced", "ids", "values")

    def __init__(self) -> None:
        self.ids: dict[K, int] = {}
        self.values: list[K] = []
        self.announced = 0
        self._chunks: ChunkedList[K] = ChunkedList()
        self._pickled = None

    def id_of(self, value: K) -> int:
        value_id = self.ids.get(value)
        if value_id is None:
            value_id = self.ids[value] = len(self.values)
            self.values.append(value)
            self._pickled = None
        return value_id

    def take_new(self) -> list[K]:
        new = self.values[self.announced :]
        if new:
            self.announced = len(self.values)
            self._pickled = None
        return new

    def _state(self) -> tuple[list[bytes], int]:
        return self._chunks.pack(self.values), self.announced

    def _restore(self, state: tuple[list[bytes], int]) -> None:
        chunks, self.announced = state
        self.values, self._chunks = ChunkedList.unpack(chunks)
        self.ids = {value: i for i, value in enumerate(self.values)}


class GlobalIds(PickleCached, Generic[K]):
    """The merge stage's ids for a keyed family's values, and each partition's mapping."""

    def __init__(self) -> None:
        self.ids: dict[K, int] = {}
        self.values: list[K] = []
        self.local: dict[int, np.ndarray] = {}
        self._pickled = None

    def announce(self, partition: int, new: Sequence[K]) -> None:
        self._pickled = None
        mapped = []
        for value in new:
            value_id = self.ids.get(value)
            if value_id is None:
                value_id = self.ids[value] = len(self.values)
                self.values.append(value)
            mapped.append(value_id)
        known = self.local.get(partition, np.empty(0, dtype=np.int64))
        self.local[partition] = np.concatenate((known, np.array(mapped, dtype=np.int64)))

    def to_global(self, partition: int, local_ids: np.ndarray) -> np.ndarray:
        return self.local[partition][local_ids]

    def _state(self) -> tuple[list[K], dict[int, np.ndarray]]:
        return self.values, self.local

    def _restore(self, state: tuple[list[K], dict[int, np.ndarray]]) -> None:
        self.values, self.local = state
        self.ids = {value: i for i, value in enumerate(self.values)}


class CellIndex(PickleCached):
    """Global cell ids with dictionary-encoded dims, and each finest cell's rollups."""

    def __init__(self, grouping_sets: Sequence[Sequence[str]], extra_dims: Sequence[str]) -> None:
        self.grouping_sets = [frozenset(g) for g in grouping_sets]
        self.extra_dims = tuple(extra_dims)
        self.columns = (*BASE_DIMS, "extra_dims")
        self._ids: dict[Cell, int] = {}
        self._cells: list[Cell] = []
        self._codes = np.zeros((0, len(self.columns)), dtype=np.int32)
        self._categories: list[list[str]] = [[] for _ in self.columns]
        self._code_of: list[dict[str, int]] = [{} for _ in self.columns]
        self._finest: dict[Cell, int] = {}  # finest cell -> row of _rollups
        self._rollups = np.zeros((0, len(self.grouping_sets)), dtype=np.int64)
        self._cell_chunks: ChunkedList[Cell] = ChunkedList()
        self._finest_chunks: ChunkedList[Cell] = ChunkedList()
        # (finer set, coarser set) -> (cells known when made, the table): see coarser().
        self._coarser: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
        self._pickled = None

    def __len__(self) -> int:
        return len(self._cells)

    # Snapshots leave out the lookup dicts (rebuilt on resume from the lists they index);
    # the two cell lists, append-only, go by chunks.
    _DERIVED = ("_ids", "_code_of", "_finest", "_pickled", "_cells", "_cell_chunks",
                "_finest_chunks", "_coarser")  # fmt: skip

    def _state(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in self._DERIVED}
        state["_cells"] = self._cell_chunks.pack(self._cells)
        # In row order (a dict keeps insertion order).
        state["_finest_cells"] = self._finest_chunks.pack(list(self._finest))
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self._cells, self._cell_chunks = ChunkedList.unpack(state.pop("_cells"))
        finest_cells, self._finest_chunks = ChunkedList.unpack(state.pop("_finest_cells"))
        self.__dict__.update(state)
        self._ids = {cell: i for i, cell in enumerate(self._cells)}
        self._code_of = [{v: i for i, v in enumerate(c)} for c in self._categories]
        self._finest = {cell: row for row, cell in enumerate(finest_cells)}
        self._coarser = {}

    def cell(self, cell_id: int) -> Cell:
        return self._cells[cell_id]

    def _cell_id(self, cell: Cell) -> int:
        cell_id = self._ids.get(cell)
        if cell_id is not None:
            return cell_id
        cell_id = self._ids[cell] = len(self._cells)
        self._cells.append(cell)
        self._pickled = None
        if cell_id >= len(self._codes):
            self._codes = _grown(self._codes)
        base = len(BASE_DIMS)
        values = (*cell[:base], format_extra_dims(self.extra_dims, cell[base:]))
        for j, value in enumerate(values):
            code = self._code_of[j].get(value)
            if code is None:
                code = self._code_of[j][value] = len(self._categories[j])
                self._categories[j].append(value)
            self._codes[cell_id, j] = code
        return cell_id

    def finest_ids(self, cells: Sequence[Cell]) -> np.ndarray:
        """Rows of the rollup table for finest cells (registering new ones)."""
        rows = np.empty(len(cells), dtype=np.int64)
        finest = self._finest
        for i, cell in enumerate(cells):
            row = finest.get(cell)
            if row is None:
                row = len(finest)
                finest[cell] = row
                self._pickled = None
                if row >= len(self._rollups):
                    self._rollups = _grown(self._rollups)
                self._rollups[row] = [
                    self._cell_id(rollup_cell(cell, g)) for g in self.grouping_sets
                ]
            rows[i] = row
        return rows

    def rollups(self, finest: np.ndarray) -> np.ndarray:
        """[len(finest), grouping sets] cell ids of each finest cell's rollups."""
        return self._rollups[finest]

    def coarser(self, finer: int, coarser: int) -> np.ndarray:
        """By cell id, each rollup cell of grouping set `finer` as a cell of set `coarser`
        (whose dims `finer` keeps all of), -1 for the other cells: rows already rolled
        up to `finer` roll up to `coarser` without going back to the finest cells.
        Made again only once cells were added since."""
        known = len(self._cells)
        cached = self._coarser.get((finer, coarser))
        if cached is not None and cached[0] == known:
            return cached[1]
        finest = len(self._finest)
        table = np.full(known, -1, dtype=np.int64)
        table[self._rollups[:finest, finer]] = self._rollups[:finest, coarser]
        self._coarser[(finer, coarser)] = (known, table)
        return table

    def dim_columns(self, cell_ids: np.ndarray) -> dict[str, Categorical]:
        """Dim name -> dictionary-encoded values, one per cell id."""
        codes = self._codes[cell_ids]
        return {
            name: Categorical(codes[:, j], list(self._categories[j]))
            for j, name in enumerate(self.columns)
        }

    def rollups_of(self, cell: Cell) -> list[Cell]:
        """The rollup cells of one finest cell (for per-event rows such as late events)."""
        return list(dict.fromkeys(rollup_cell(cell, g) for g in self.grouping_sets))


class CellDims:
    """The base dims of a partition's local cells (:class:`LocalIds` values),
    dictionary-encoded, so the raw tables' dim columns are numpy takes by cell id rather
    than a value per row and dim. Derived from the cell list (not state): it catches up
    with the cells it has not seen at each call.

    A categories list once handed out is never changed (the sink reads it in its own
    thread); while no new value comes, every call hands out the same list, which lets
    the sink join chunks without recoding them."""

    __slots__ = ("_categories", "_code_of", "_codes", "_handed", "_known")

    def __init__(self) -> None:
        self._codes = np.zeros((0, len(BASE_DIMS)), dtype=np.int32)
        self._categories: list[list[str]] = [[] for _ in BASE_DIMS]
        self._code_of: list[dict[str, int]] = [{} for _ in BASE_DIMS]
        self._handed: list[list[str]] = [[] for _ in BASE_DIMS]
        self._known = 0

    def columns(self, cells: Sequence[Cell], cell_ids: np.ndarray) -> dict[str, Categorical]:
        """Dim name -> the values of `cells[cell_ids]`, dictionary-encoded."""
        if len(cells) > self._known:
            self._learn(cells)
        codes = self._codes[cell_ids]
        return {name: Categorical(codes[:, j], self._handed[j]) for j, name in enumerate(BASE_DIMS)}

    def _learn(self, cells: Sequence[Cell]) -> None:
        start, stop = self._known, len(cells)
        if stop > len(self._codes):
            self._codes = _grown(self._codes, stop)
        columns = list(zip(*cells[start:stop], strict=False))
        for j in range(len(BASE_DIMS)):
            code_of, categories = self._code_of[j], self._categories[j]
            known = len(categories)
            for value in dict.fromkeys(columns[j]):  # the distinct values, in order
                if value not in code_of:
                    code_of[value] = len(categories)
                    categories.append(value)
            self._codes[start:stop, j] = list(map(code_of.__getitem__, columns[j]))
            if len(categories) > known:
                self._handed[j] = list(categories)
        self._known = stop


def _grown(array: np.ndarray, at_least: int = 0) -> np.ndarray:
    """`array` in a zeroed buffer of at least twice its rows (and `at_least`)."""
    grown = np.zeros((max(64, 2 * len(array), 2 * at_least), array.shape[1]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown
