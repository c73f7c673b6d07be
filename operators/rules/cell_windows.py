"""From an emission's columns to the :class:`CellWindow` records the rules read, for the
cells some rule selects only.

A `metrics` emission can hold a million rows (every window closing at the end of a
bounded run); most rules read a few cells of it. So rows are picked with numpy first:
each rule's selectors (:meth:`config.rules.RuleBase.cells_read`) are decided once per
distinct value of each dims column (:func:`operators.rules.selectors.selects_value`, the
one definition of a selector) and looked up by the column's codes, so rows no rule can
select cost no Python work. Only the rows left become records, and each rule gets the
rows of its own mask: the decision is exact (the same as the evaluators' `wants`, which
the stage never asks).

The dims columns are dictionary-encoded (:class:`~operators.batches.Categorical`) with
append-only dictionaries (:class:`operators.cells.CellIndex`): what was decided for a
dictionary's values is kept, and only the values it gained since are decided.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from operators.batches import Categorical
from operators.cells import BASE_DIMS, ROLLUP_DIMS
from operators.metrics import HISTOGRAM_METRIC, METRIC_COLUMNS
from operators.rules.evaluation import CellWindow
from operators.rules.selectors import Pattern, selects_value
from operators.window_metrics import WindowMetrics

EXTRA = "extra_dims"
DIM_COLUMNS = (*BASE_DIMS, EXTRA)
READ_METRICS = tuple(m for m in METRIC_COLUMNS if m != HISTOGRAM_METRIC)
Selector = Mapping[str, Pattern]


def parse_extra_dims(value: str) -> dict[str, str]:
    """`name=value;...` (operators.cells.format_extra_dims) back to a dict."""
    if not value:
        return {}
    return dict(part.split("=", 1) for part in value.split(";"))


class _Dictionary:
    """One dims column's dictionary as seen so far, and per-selector decisions on it."""

    def __init__(self, column: str) -> None:
        self.column = column
        self.values: list[str] = []
        self.decided: dict[int, np.ndarray] = {}  # selector index -> bool per value

    def sync(self, categories: list[str]) -> None:
        """Take a batch's dictionary: the same values plus new ones (append-only), or
        another dictionary altogether (then decide afresh)."""
        n = len(self.values)
        if len(categories) >= n and categories[:n] == self.values:
            self.values.extend(categories[n:])
        else:
            self.values = list(categories)
            self.decided.clear()

    def selected(self, index: int, selector: Selector) -> np.ndarray:
        """Whether each value of the dictionary can be read by `selector`."""
        done = self.decided.get(index, np.zeros(0, dtype=bool))
        if len(done) < len(self.values):
            new = [self._selects(selector, v) for v in self.values[len(done) :]]
            done = self.decided[index] = np.concatenate((done, np.array(new, dtype=bool)))
        return done

    def _selects(self, selector: Selector, value: str) -> bool:
        if self.column == EXTRA:
            extras = parse_extra_dims(value)
            return all(
                name in extras and selects_value(pattern, extras[name], False)
                for name, pattern in selector.items()
                if name not in BASE_DIMS
            )
        return selects_value(selector.get(self.column), value, self.column in ROLLUP_DIMS)


class CellSelector:
    """The rows of an emission each rule can read: its window and any of its selectors.

    Rules share selectors (100 rules over a handful of `where`s): each distinct selector's
    mask is computed once per window of an emission, and rules that read the same
    selectors share one mask array (the same object: the stage picks its rows once)."""

    def __init__(self, reads: Sequence[tuple[str, Sequence[Selector]]]) -> None:
        """`reads`: per rule, (its window, the selectors of the cells it reads)."""
        self.reads = [(window, list(selectors)) for window, selectors in reads]
        distinct: dict[tuple[tuple[str, object], ...], int] = {}
        self._selectors: list[Selector] = []
        # Per rule: the indices of its selectors among the distinct ones. Rules with
        # equal reads get the same mask (and the stage picks their cells once).
        self.read_keys: list[tuple[int, ...]] = []
        for _, selectors in self.reads:
            indices = []
            for selector in selectors:
                key = _canonical(selector)
                if key not in distinct:
                    distinct[key] = len(self._selectors)
                    self._selectors.append(selector)
                indices.append(distinct[key])
            self.read_keys.append(tuple(indices))
        self._dictionaries = {name: _Dictionary(name) for name in DIM_COLUMNS}
        self.selected: list[list[np.ndarray]] = []  # of the last `masks` call

    def masks(self, batch: WindowMetrics, window: str, rows: np.ndarray) -> list[np.ndarray | None]:
        """Per rule, a bool mask over `rows` (one window of `batch`), None for a rule of
        another window. Each selector's own mask stays in `selected` (per rule, in the
        order of its reads; empty for a rule of another window): a canary reads its sides
        from them. Rules with equal `read_keys` share one array: do not write to them."""
        codes: dict[str, np.ndarray] = {}
        for name, dictionary in self._dictionaries.items():
            column = batch.columns[name]
            assert isinstance(column, Categorical)
            dictionary.sync(column.categories)
            codes[name] = np.asarray(column.codes)[rows]
        hits: dict[int, np.ndarray] = {}
        unions: dict[tuple[int, ...], np.ndarray] = {}
        out: list[np.ndarray | None] = []
        self.selected = []
        for (rule_window, _), indices in zip(self.reads, self.read_keys, strict=True):
            if rule_window != window:
                out.append(None)
                self.selected.append([])
                continue
            for index in indices:
                if index not in hits:
                    hits[index] = self._hit(index, codes, len(rows))
            self.selected.append([hits[i] for i in indices])
            mask = unions.get(indices)
            if mask is None:
                mask = np.zeros(len(rows), dtype=bool)
                for index in indices:
                    mask |= hits[index]
                unions[indices] = mask
            out.append(mask)
        return out

    def _hit(self, index: int, codes: dict[str, np.ndarray], n: int) -> np.ndarray:
        """Distinct selector `index`'s mask over the rows whose dims codes are `codes`."""
        selector = self._selectors[index]
        hit = np.ones(n, dtype=bool)
        for name, dictionary in self._dictionaries.items():
            if (
                name in ROLLUP_DIMS
                or name in selector
                or (name == EXTRA and _names_extra(selector))
            ):
                hit &= dictionary.selected(index, selector)[codes[name]]
        return hit


def _canonical(selector: Selector) -> tuple[tuple[str, object], ...]:
    """A selector as a hashable key: equal selectors read the same rows."""
    return tuple(
        sorted((name, p if isinstance(p, str) else tuple(p)) for name, p in selector.items())
    )


def _names_extra(selector: Selector) -> bool:
    return any(name not in BASE_DIMS for name in selector)


def cell_windows(
    batch: WindowMetrics, window: str, start: int, end: int, rows: np.ndarray
) -> list[CellWindow]:
    """The records of the given rows of one window of `batch` (rows no rule selects are
    never passed here)."""
    if len(rows) == 0:
        return []
    dims_columns: dict[str, list[str]] = {}
    for name in DIM_COLUMNS:
        column = batch.columns[name]
        assert isinstance(column, Categorical)
        categories = column.categories
        dims_columns[name] = [categories[c] for c in np.asarray(column.codes)[rows].tolist()]
    names = batch.field_names
    first_bin = next(
        (i for i, n in enumerate(names) if n.startswith("confidence_bin_")), len(names)
    )
    fields = np.asarray(batch.fields)[rows]
    field_rows = fields[:, :first_bin].tolist()
    bins = fields[:, first_bin:].astype(np.int64).tolist()
    metric_columns = [
        np.asarray(batch.columns[m], dtype=np.float64)[rows].tolist() for m in READ_METRICS
    ]
    field_names = names[:first_bin]
    ids = np.asarray(batch.cell_ids)[rows].tolist()
    out = []
    for i, metric_values in enumerate(zip(*metric_columns, strict=True)):
        dims = {name: dims_columns[name][i] for name in BASE_DIMS}
        dims.update(parse_extra_dims(dims_columns[EXTRA][i]))
        out.append(
            CellWindow(
                window=window,
                window_start=start,
                window_end=end,
                final=batch.final,
                dims=dims,
                fields=dict(zip(field_names, field_rows[i], strict=True)),
                metrics={
                    m: (None if math.isnan(v) else v)
                    for m, v in zip(READ_METRICS, metric_values, strict=True)
                },
                histogram=tuple(bins[i]),
                cell_id=ids[i],
            )
        )
    return out
