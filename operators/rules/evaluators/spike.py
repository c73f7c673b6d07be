"""The spike rule: a metric's relative change against the mean of its trailing baseline,
the previous `baseline_windows` FINAL windows of the same cell.

The baseline of a window starting at s is the last K final windows that end at or before
s (with a sliding window, those that do not overlap it: an overlapping one shares
events with the window it is compared to and would damp the spike). A final window
enters the baseline only with a value and at least `min_samples` events behind it (its
own denominator); early rows are compared but never enter it. Fewer than K baseline
windows, or a window below `min_samples`, is inconclusive. A baseline mean of 0 makes
any rise an infinite change (and no change when the value is 0 too).

State per cell: a ring of (start, end, value, samples) of at most K + (windows that
overlap one window) entries, all cells' rings in one
:class:`~operators.rules.window_ring.WindowRing` indexed by the cells' slots
(:class:`~operators.rules.cell_ids.CellIds`); plain data, picklable. A cell that stopped
appearing in final windows is forgotten once its ring's span plus the alerts'
resolved_retention has passed in event time. A block of cells is judged at once: the
baselines are read from the rings and the window absorbed with numpy, the verdicts
computed with numpy (:func:`spike_outcomes`), and a reason is written only for the cells
asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from config.rules import SpikeRule
from operators.rules.cell_ids import MISSING, CellIds, first_of_each, grown
from operators.rules.columns import CellBlock
from operators.rules.evaluation import (
    FALSE,
    INCONCLUSIVE,
    OUTCOMES,
    TRUE,
    BlockVerdicts,
    CellWindow,
)
from operators.rules.evaluators.cell_rule import (
    CellRule,
    evaluate_blocks,
    known,
    too_few,
    verdict,
)
from operators.rules.lifecycle import Evaluation, Outcome
from operators.rules.window_ring import WindowRing

VALUE, SAMPLES = 0, 1  # a ring entry's vector: the window's value and its samples


@dataclass(slots=True)
class SpikeState:
    """A rule's cells: their slots, rings (value, samples per final window) and the end
    of each slot's last final window (what expiry reads)."""

    ring: WindowRing
    ids: CellIds = field(default_factory=CellIds)
    seen_end: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    length: int = 0  # the rule's window length (ms), read from its final windows


class SpikeEvaluator(CellRule[SpikeRule]):
    def __init__(
        self,
        rule: SpikeRule,
        overlapping: int = 1,
        state: SpikeState | None = None,
        retention_ms: int = 3_600_000,
    ) -> None:
        """`overlapping`: how many consecutive windows of the rule's window share events
        (1 for tumbling; ceil(length / slide) for sliding). `retention_ms`: how long past
        its ring's span a cell that stopped appearing is remembered."""
        super().__init__(rule)
        self.keep = rule.baseline_windows + max(overlapping, 1)
        self.retention_ms = retention_ms
        self.state = state if state is not None else SpikeState(WindowRing(self.keep, 2))

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        return evaluate_blocks(self, cells, event_time)

    def judge_block(self, block: CellBlock, event_time: int) -> BlockVerdicts:
        """Each cell against its ring's baseline before this window, then (a final row)
        the window joins the ring; the verdicts with numpy (:func:`spike_outcomes`)."""
        rule = self.config
        state = self.state
        keys = block.ids.tolist()
        value = block.metric(rule.metric)
        n = block.samples(rule.metric)
        start, end = block.window_start, block.window_end
        slots = state.ids.find(keys)
        baseline = state.ring.trailing(slots, start, rule.baseline_windows)
        count = baseline.count
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(count > 0, baseline.sums[:, VALUE] / np.maximum(count, 1), np.nan)
        base_n = baseline.sums[:, SAMPLES]
        full = count >= rule.baseline_windows
        outcomes, change = spike_outcomes(rule, value, n, means, full)
        if block.final:
            self._absorb(keys, slots, start, end, value, n)

        def evaluation(i: int) -> Evaluation:
            return self._record(
                block, i, event_time, OUTCOMES[outcomes[i]], int(count[i]),
                int(base_n[i]), float(means[i]), float(change[i]),
            )  # fmt: skip

        return BlockVerdicts(outcomes, evaluation)

    def _absorb(
        self, keys: Sequence[int], slots: np.ndarray, start: int, end: int,
        value: np.ndarray, n: np.ndarray,
    ) -> None:  # fmt: skip
        """A final window joins the rings of the cells with a value and `min_samples`
        (NaN is not finite either), unless a ring already holds it or a later window (a
        replay)."""
        state = self.state
        state.length = end - start
        known = np.flatnonzero(slots != MISSING)
        state.seen_end[slots[known]] = end
        joins = np.isfinite(value) & (n >= max(self.config.min_samples, 1))
        rows = np.flatnonzero(joins)
        if not len(rows):
            return
        fresh = rows[slots[rows] == MISSING]
        if len(fresh):
            slots = slots.copy()
            slots[fresh] = state.ids.assign([keys[i] for i in fresh.tolist()])
            capacity = state.ids.capacity
            state.ring.ensure(capacity)
            state.seen_end = grown(state.seen_end, capacity, 0)
            state.seen_end[slots[fresh]] = end
        chosen = slots[rows]
        newest = state.ring.newest(chosen)
        ok = (start > newest) & first_of_each(chosen)  # an empty ring's newest: NO_TIME
        entries = np.stack((value[rows], n[rows].astype(np.float64)), axis=1)
        state.ring.append(chosen[ok], start, end, entries[ok])

    def forget_expired(self, now: int) -> int:
        """Forget the cells whose last final window ended more than the ring's span
        (`keep` windows) plus `retention_ms` before `now`; how many (event time: the same
        in a run and its replay)."""
        state = self.state
        if not len(state.ids):
            return 0
        live = np.fromiter(state.ids.slots.values(), dtype=np.int64, count=len(state.ids))
        gone = live[state.seen_end[live] + self.keep * state.length + self.retention_ms <= now]
        if len(gone):
            state.ring.clear(gone)
            state.ids.release(gone.tolist())
        return len(gone)

    def _record(
        self,
        block: CellBlock,
        i: int,
        event_time: int,
        outcome: Outcome,
        windows: int,
        baseline_samples: int,
        mean: float,
        change: float,
    ) -> Evaluation:
        """Cell `i` of `block`; `windows`: how many baseline windows, of
        `baseline_samples` samples in all."""
        rule = self.config
        value = known(float(block.metric(rule.metric)[i]))
        n = int(block.samples(rule.metric)[i])
        base_n = baseline_samples if windows else None
        if value is None or n < rule.min_samples:
            reason = too_few(rule.metric, value, n, rule.min_samples)
            return verdict(block, i, event_time, outcome, reason,
                           value=value, samples=n, baseline_samples=base_n)  # fmt: skip
        if windows < rule.baseline_windows:
            reason = (
                f"{rule.metric} {value:.4g}: baseline has {windows} of "
                f"{rule.baseline_windows} windows"
            )
            return verdict(block, i, event_time, outcome, reason,
                           value=value, samples=n, baseline_samples=base_n)  # fmt: skip
        rising = rule.direction == "up" or (rule.direction == "both" and value >= mean)
        threshold = mean * (1 + rule.change) if rising else mean * (1 - rule.change)
        beyond = outcome is Outcome.TRUE
        reason = (
            f"{rule.metric} {value:.4g} against a mean of {mean:.4g} over "
            f"{windows} windows: {change:+.1%} "
            f"({'beyond' if beyond else 'within'} {rule.change:.0%} {rule.direction})"
        )
        return verdict(block, i, event_time, outcome, reason, value=value,
                       threshold=threshold, samples=n, baseline_samples=base_n)  # fmt: skip


def spike_outcomes(
    rule: SpikeRule, value: np.ndarray, n: np.ndarray, mean: np.ndarray, full: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The one definition of a spike verdict, per cell: INCONCLUSIVE without a value,
    under `min_samples` or without `baseline_windows` baseline windows; else TRUE when
    the relative change against the baseline mean is `change` or more in `direction`.
    Also the changes (for the reasons)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        change = (value - mean) / np.abs(mean)
    change = np.where(mean == 0, np.where(value == 0, 0.0, np.copysign(np.inf, value)), change)
    up = rule.direction in ("up", "both")
    down = rule.direction in ("down", "both")
    with np.errstate(invalid="ignore"):
        beyond = (up & (change >= rule.change)) | (down & (-change >= rule.change))
    known = ~np.isnan(value) & (n >= rule.min_samples) & full
    outcomes = np.where(known, np.where(beyond, TRUE, FALSE), INCONCLUSIVE).astype(np.int8)
    return outcomes, change
