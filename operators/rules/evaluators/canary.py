"""The canary rule: canary cells against baseline cells with the same `match` dims, in
one window, by the anytime-valid sequential test of :mod:`operators.rules.sequential`.

Evidence accumulates across windows (docs/canary-test.md), per *pair* (the `match`
dims, e.g. one model_id), from the first window in which both sides have data:

* the cumulative totals of a side are the sum over the FINAL windows seen since then
  plus the latest EARLY totals of each window still open. A cell's early totals are
  replaced by its later early totals, and by its final row, never added to them; a
  window is folded into the closed sum once a later window's final rows arrive (the
  merge stage emits final windows oldest first), and rows of a folded window (a replay)
  are ignored. Only tumbling windows are read: sliding windows overlap, so adding them
  would count an event several times (refused at config time).
* A side may be several cells (a selector with a list of values, or each version): they
  are disjoint cells of one grouping set, and are summed.
* A rule's `horizon` restarts the evidence every `horizon` of event time (each stretch
  is a test at level α).

A block is filed with numpy and dict updates, not row by row: rows are grouped into
pairs by the codes of their `match` dims, and each side's cells of a window are one dict
(cell → totals) updated from the block's arrays in one call (early rows skip the cells
whose final row is in). Sides are summed only when a pair is looked at, so a baseline
whose pair has no canary (most cells, before a canary is deployed) costs a dict update
per window, not a Python object per cell.

Proportions read trials and successes from the metric's own fields
(:data:`operators.metrics.RATIOS`); means read count, sum and sum of squares, which only
reward has (rating and latency are refused at config time). Successes are capped at the
trials (more clicks than impressions in a window would not be a proportion).

Outcomes: `worse` → TRUE, with the evidence a `rollback` action carries
(`from_version` the canary's model_version, `to_version` the baseline's; None when a side
spans several versions, which the reason says); `not_worse` and `undecided` → FALSE;
no baseline (or canary) data, or too few samples → INCONCLUSIVE, never TRUE. A pair is
evaluated when a cell of it is in the emission and the canary side has had data.

Versions: a side that reads the rollup over `model_version` does not see it; the
evaluator then also reads that side's per-version cells
(:meth:`config.rules.CanaryRule.version_reads`: the same selection with `model_version`
set, when that grouping set is computed) for their versions only.

Alert dims: the `match` dims' values and the canary selector (a list of values joined
by ``|``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from config.rules import CanaryRule, canary_metric_problem
from operators.metrics import RATIOS
from operators.rules.columns import CellBlock, CellList
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators.reading import in_order
from operators.rules.lifecycle import Dims, Evaluation, Outcome, dims_of
from operators.rules.selectors import ROLLUP, Pattern, selects_cell
from operators.rules.sequential import (
    CanaryEvidence,
    CanaryTest,
    Direction,
    MetricKind,
    Totals,
    Verdict,
)
from operators.rules.sequential import Outcome as TestOutcome

CANARY, BASELINE = "canary", "baseline"
SIDES = (CANARY, BASELINE)
VERSION = "model_version"
_ZERO = Totals(0)
_OUTCOMES = {
    TestOutcome.WORSE: Outcome.TRUE,
    TestOutcome.NOT_WORSE: Outcome.FALSE,
    TestOutcome.UNDECIDED: Outcome.FALSE,
    TestOutcome.INCONCLUSIVE: Outcome.INCONCLUSIVE,
}

# A cell's totals in a window: (n, sum, sum of squares)
CellTotals = tuple[int, float, float]


@dataclass(slots=True)
class SideCells:
    """One side's cells in one open window: each cell's latest totals (an early row's
    replaced by later early rows and by the final row, never added to them), by cell id
    (:attr:`~operators.rules.columns.CellBlock.ids`: integers, cheap to hash and to
    hold, where a baseline files thousands of cells per window)."""

    cells: dict[int, CellTotals] = field(default_factory=dict)  # in order of arrival
    finals: set[int] = field(default_factory=set)  # cells whose final row is in

    def file(self, keys: list[int], totals: list[CellTotals], final: bool) -> np.ndarray | None:
        """Take these cells' rows; which were taken (None: all)."""
        if final:
            self.finals.update(keys)
        elif self.finals:  # an early row never replaces the final one
            taken = np.array([k not in self.finals for k in keys], dtype=bool)
            self.cells.update((k, t) for k, t, ok in zip(keys, totals, taken, strict=True) if ok)
            return taken
        self.cells.update(zip(keys, totals, strict=True))
        return None

    def has_data(self) -> bool:
        return any(t[0] for t in self.cells.values())

    def added_to(self, totals: Totals) -> Totals:
        """`totals` plus each cell's, in order of arrival."""
        n, total, squares = totals.n, totals.total, totals.total_squares
        for k, t, q in self.cells.values():
            n, total, squares = n + k, total + t, squares + q
        return Totals(n, total, squares)


# side -> its cells in one open window
WindowCells = dict[str, SideCells]


@dataclass(slots=True)
class Pair:
    """One canary/baseline pair's accumulated data and test state (plain, picklable)."""

    start: int | None = None  # window start from which evidence counts (both sides had data)
    closed: dict[str, Totals] = field(default_factory=lambda: {CANARY: _ZERO, BASELINE: _ZERO})
    open: dict[int, WindowCells] = field(default_factory=dict)  # by window start
    folded_before: int | None = None  # windows starting before this are in `closed`
    evidence: CanaryEvidence = field(default_factory=CanaryEvidence)
    stretch_start: int | None = None  # event time the current horizon stretch began
    # model_version values with data on each side: of the folded windows, and by open window
    versions: dict[str, set[str]] = field(default_factory=lambda: {CANARY: set(), BASELINE: set()})
    open_versions: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    canary_seen: bool = False


@dataclass(slots=True)
class CanaryState:
    pairs: dict[Dims, Pair] = field(default_factory=dict)
    last_final_start: int | None = None  # the latest window whose final rows arrived


class CanaryEvaluator:
    def __init__(self, rule: CanaryRule, state: CanaryState | None = None) -> None:
        if (problem := canary_metric_problem(rule.metric)) is not None:
            raise ValueError(f"rule {rule.name}: {problem}")
        ratio = RATIOS[rule.metric]
        self.config = rule
        self.ratio = ratio
        self.test = CanaryTest(
            kind=MetricKind.PROPORTION if ratio.kind == "proportion" else MetricKind.MEAN,
            direction=Direction(rule.worse),
            alpha=rule.alpha,
            relative_margin=rule.margin if rule.margin_type == "relative" else 0.0,
            absolute_margin=rule.margin if rule.margin_type == "absolute" else 0.0,
            min_samples=max(rule.min_samples, 2),
            tightest_at=rule.tightest_at,
        )
        reads = rule.required_reads()
        self.reads: dict[str, dict[str, Pattern]] = {side: dict(reads[side]) for side in SIDES}
        versions = rule.version_reads()
        self.version_reads: dict[str, dict[str, Pattern]] = {
            side: dict(versions[f"{side}_versions"])
            for side in SIDES
            if f"{side}_versions" in versions
        }
        self.label = {
            dim: "|".join(p) if not isinstance(p, str) else p for dim, p in rule.canary.items()
        }
        self.state = state if state is not None else CanaryState()

    @property
    def rule(self) -> str:
        return self.config.name

    @property
    def selections(self) -> dict[str, dict[str, Pattern]]:
        """Every read by name, in :meth:`config.rules.CanaryRule.cells_read` order (the
        stage's masks come in it): the sides, then `{side}_versions`."""
        versions = {f"{side}_versions": where for side, where in self.version_reads.items()}
        return {**self.reads, **versions}

    def wants(self, dims: Mapping[str, str], window: str) -> bool:
        if window != self.config.window:
            return False
        return any(selects_cell(w, dims) for w in self.selections.values())

    # --- reading cells ------------------------------------------------------------------

    def _totals(self, block: CellBlock, rows: np.ndarray) -> list[CellTotals]:
        """Each row's totals of the metric's own fields (successes capped at trials)."""
        ratio = self.ratio
        n = block.fields_sum(ratio.denominator).astype(np.int64)[rows]
        total = block.fields_sum(ratio.numerator)[rows]
        if ratio.kind == "proportion":
            hits = np.minimum(total.astype(np.int64), n)
            successes = (n - hits if ratio.complement else hits).astype(np.float64).tolist()
            return list(zip(n.tolist(), successes, successes, strict=True))
        squares = block.fields_sum(ratio.squares)[rows].tolist()
        return list(zip(n.tolist(), total.tolist(), squares, strict=True))

    def _pair_key(self, dims: Mapping[str, str]) -> Dims:
        return dims_of({**{m: dims.get(m, ROLLUP) for m in self.config.match}, **self.label})

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        """The per-cell form: each cell's sides decided by `selects_cell`."""
        mine = [c for c in in_order(cells) if c.window == self.config.window]
        touched: dict[Dims, tuple[int, int]] = {}
        for block in CellList.runs(mine):
            sides = [
                np.array([selects_cell(w, c.dims) for c in block.records], dtype=bool)
                for w in self.selections.values()
            ]
            self._read(block, sides, touched)
        return self._looks(touched, event_time)

    def evaluate_block(
        self, block: CellBlock, selected: Sequence[np.ndarray], event_time: int
    ) -> list[Evaluation]:
        """The stage's form: `selected` holds each of the rule's reads' masks over the
        block (:meth:`config.rules.CanaryRule.cells_read` order), decided with numpy."""
        touched: dict[Dims, tuple[int, int]] = {}
        self._read(block, selected, touched)
        return self._looks(touched, event_time)

    def _read(
        self, block: CellBlock, selected: Sequence[np.ndarray], touched: dict[Dims, tuple[int, int]]
    ) -> None:
        """Take one block's cells into their pairs' open windows (see the module doc)."""
        masks = dict(zip(self.selections, selected, strict=True))
        names = [n for n in (*SIDES, *(f"{side}_versions" for side in SIDES)) if n in masks]
        kinds = np.full(len(block), -1, dtype=np.int64)
        for code, name in enumerate(names):  # the first read that selects a cell names its side
            kinds[(kinds < 0) & masks[name]] = code
        rows = np.flatnonzero(kinds >= 0)
        if not len(rows):
            return
        state = self.state
        start, end, final = block.window_start, block.window_end, block.final
        kind = kinds[rows]
        totals = self._totals(block, rows)
        n = np.array([t[0] for t in totals], dtype=np.int64) if totals else np.zeros(0, np.int64)
        versions = block.dim(VERSION)[rows]
        # Pairs by their match dims' values, in the order of their first row.
        group = np.zeros(len(rows), dtype=np.int64)
        matched = {m: block.dim(m)[rows] for m in self.config.match}
        for values in matched.values():
            _, codes = np.unique(values.astype(str), return_inverse=True)
            group = group * (int(codes.max()) + 1) + codes
        _, first, inverse = np.unique(group, return_index=True, return_inverse=True)
        for g in np.argsort(first, kind="stable").tolist():
            mine = np.flatnonzero(inverse == g)
            key = self._pair_key({m: str(values[mine[0]]) for m, values in matched.items()})
            pair = state.pairs.get(key)
            if pair is None:
                pair = state.pairs[key] = Pair()
            if pair.folded_before is not None and start < pair.folded_before:
                continue  # a window already in the closed sums (a replay)
            if final and (state.last_final_start is None or start > state.last_final_start):
                state.last_final_start = start
            touched[key] = (start, end)
            self._file(pair, block, rows[mine], kind[mine], totals, mine, n[mine], versions[mine])

    def _file(
        self, pair: Pair, block: CellBlock, rows: np.ndarray, kind: np.ndarray,
        totals: list[CellTotals], mine: np.ndarray, n: np.ndarray, versions: np.ndarray,
    ) -> None:  # fmt: skip
        """One pair's rows of a block: each side's cells into the open window, and the
        versions with data."""
        start, final = block.window_start, block.final
        ids = block.ids
        names = [n for n in (*SIDES, *(f"{side}_versions" for side in SIDES))
                 if n in self.selections]  # fmt: skip
        with_data = n > 0
        seen = pair.open_versions.get(start)
        for code, name in enumerate(names):
            of_kind = kind == code
            if not of_kind.any():
                continue
            side = name.removesuffix("_versions")
            if name in SIDES:
                at = np.flatnonzero(of_kind)
                window = pair.open.setdefault(start, {})
                cells = window.get(side)
                if cells is None:
                    cells = window[side] = SideCells()
                positions = mine[at].tolist()
                taken = cells.file(ids[rows[at]].tolist(),
                                   [totals[p] for p in positions], final)  # fmt: skip
                if taken is not None:  # rows an early row could not replace add nothing
                    of_kind[at[~taken]] = False
                if side == CANARY and (with_data & of_kind).any():
                    pair.canary_seen = True
                versioned = of_kind & with_data & (versions != ROLLUP)
            else:
                versioned = of_kind & with_data
            if versioned.any():
                if seen is None:
                    seen = pair.open_versions.setdefault(start, set())
                seen.update((side, str(v)) for v in dict.fromkeys(versions[versioned].tolist()))

    def _looks(self, touched: dict[Dims, tuple[int, int]], event_time: int) -> list[Evaluation]:
        out = []
        for key, (window_start, window_end) in touched.items():
            pair = self.state.pairs[key]
            self._fold(pair)
            self._begin(pair)
            if not pair.canary_seen:
                continue
            out.append(self._look(key, pair, window_start, window_end, event_time))
        return out

    # --- accumulating -------------------------------------------------------------------

    def _fold(self, pair: Pair) -> None:
        """Windows before the latest final one are complete: add them to `closed`."""
        last = self.state.last_final_start
        if last is None:
            return
        for start in sorted(s for s in pair.open.keys() | pair.open_versions if s < last):
            window = pair.open.pop(start, {})
            versions = pair.open_versions.pop(start, set())
            if pair.start is not None and start >= pair.start:
                for side, cells in window.items():
                    pair.closed[side] = cells.added_to(pair.closed[side])
                for side, version in versions:
                    pair.versions[side].add(version)
        if pair.folded_before is None or last > pair.folded_before:
            pair.folded_before = last

    def _begin(self, pair: Pair) -> None:
        """Evidence counts from the first window in which both sides have data."""
        if pair.start is not None:
            return
        for start in sorted(pair.open):
            window = pair.open[start]
            if all(side in window and window[side].has_data() for side in SIDES):
                pair.start = start
                for earlier in [s for s in pair.open if s < start]:
                    del pair.open[earlier]
                for earlier in [s for s in pair.open_versions if s < start]:
                    del pair.open_versions[earlier]
                return

    def _side_totals(self, pair: Pair, side: str) -> Totals:
        totals = pair.closed[side]
        for start, window in pair.open.items():
            if pair.start is not None and start >= pair.start and side in window:
                totals = window[side].added_to(totals)
        return totals

    def _look(
        self, key: Dims, pair: Pair, window_start: int, window_end: int, event_time: int
    ) -> Evaluation:
        if pair.start is None:
            canary = self._side_totals_unstarted(pair, CANARY)
            baseline = self._side_totals_unstarted(pair, BASELINE)
            missing = BASELINE if baseline.n == 0 else CANARY
            return Evaluation(
                dims=key, outcome=Outcome.INCONCLUSIVE, event_time=event_time,
                window_start=window_start, window_end=window_end,
                samples=canary.n, baseline_samples=baseline.n,
                reason=f"inconclusive: no {missing} data yet for {self.config.metric}",
            )  # fmt: skip
        horizon = self.config.horizon
        if pair.stretch_start is None:
            pair.stretch_start = event_time
        elif horizon is not None and event_time - pair.stretch_start >= horizon:
            pair.evidence = pair.evidence.restart()
            pair.stretch_start = event_time
        canary = self._side_totals(pair, CANARY)
        baseline = self._side_totals(pair, BASELINE)
        try:
            pair.evidence, verdict = self.test.look(pair.evidence, canary, baseline)
        except ValueError as exc:  # totals that went back: start the evidence afresh
            pair.evidence = CanaryEvidence(canary, baseline, canary, baseline)
            pair.stretch_start = event_time
            return Evaluation(
                dims=key, outcome=Outcome.INCONCLUSIVE, event_time=event_time,
                window_start=window_start, window_end=window_end, samples=canary.n,
                baseline_samples=baseline.n, reason=f"inconclusive: evidence restarted ({exc})",
            )  # fmt: skip
        seen = self._versions(pair)
        versions = {side: _one_version(seen[side]) for side in SIDES}
        reason = verdict.reason
        spans = [
            f"the {side} spans versions {', '.join(sorted(seen[side]))}"
            for side in SIDES
            if len(seen[side]) > 1
        ]
        if spans:
            reason += f"; {' and '.join(spans)}"
        outcome = _OUTCOMES[verdict.outcome]
        return Evaluation(
            dims=key,
            outcome=outcome,
            event_time=event_time,
            window_start=window_start,
            window_end=window_end,
            value=verdict.value,
            threshold=verdict.threshold,
            samples=verdict.canary_samples,
            baseline_samples=verdict.baseline_samples,
            reason=reason,
            evidence=self._evidence(key, verdict, versions, seen, pair.start)
            if outcome is Outcome.TRUE
            else None,
        )

    def _side_totals_unstarted(self, pair: Pair, side: str) -> Totals:
        totals = _ZERO
        for window in pair.open.values():
            if side in window:
                totals = window[side].added_to(totals)
        return totals

    @staticmethod
    def _versions(pair: Pair) -> dict[str, set[str]]:
        """The versions with data on each side since the evidence began."""
        seen = {side: set(pair.versions[side]) for side in SIDES}
        for start, versions in pair.open_versions.items():
            if pair.start is not None and start >= pair.start:
                for side, version in versions:
                    seen[side].add(version)
        return seen

    def _evidence(
        self,
        key: Dims,
        verdict: Verdict,
        versions: Mapping[str, str | None],
        seen: Mapping[str, set[str]],
        since: int | None,
    ) -> dict[str, Any]:
        return {
            **dict(key),
            "from_version": versions[CANARY],
            "to_version": versions[BASELINE],
            "canary_versions": sorted(seen[CANARY]),
            "baseline_versions": sorted(seen[BASELINE]),
            "metric": self.config.metric,
            "worse": self.config.worse,
            "alpha": self.config.alpha,
            "canary_value": verdict.value,
            "baseline_value": verdict.baseline_value,
            "threshold": verdict.threshold,
            "canary_samples": verdict.canary_samples,
            "baseline_samples": verdict.baseline_samples,
            "estimate": verdict.estimate,
            "lower": verdict.lower,
            "upper": verdict.upper,
            "log_e_value": verdict.log_e_value,
            "p_value": verdict.p_value,
            "since_window_start": since,
            "reason": verdict.reason,
        }


def _one_version(versions: set[str]) -> str | None:
    return next(iter(versions)) if len(versions) == 1 else None
