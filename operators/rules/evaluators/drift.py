"""The drift rule: a cell's distribution in the recent window against a reference
(:class:`~operators.rules.drift.HistogramDrift` over a
:class:`~operators.rules.drift_reference.ReferenceHistogram`), and an online change
detector on the metric's series (:class:`~operators.rules.change_detectors.SeriesChangeDetector`),
as docs/drift.md describes.

The distribution is the confidence histogram, or a proportion's numerator and
denominator as 2 bins (:func:`~operators.rules.drift.proportion_counts`); other metrics
have no distribution per window (refused at config time with psi or test) and are read
by the detector only. The detector's series is the metric, or `confidence_mean` for the
histogram. Early rows are compared but never absorbed; final rows feed the reference and
the detector, in event-time order (a replayed window is ignored by both).

The verdict: TRUE when a configured check drifted (the histogram checks combined by
`require`, or the detector at a final window), FALSE when a check is stable and none
drifted, INCONCLUSIVE when no check could decide (no reference yet, too few samples, a
detector still warming up). An early row of a rule with only a detector is not
evaluated (the detector reads final windows). Evidence for a `retrain` action: each
result's figures (:meth:`DriftResult.evidence`), the metric, the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from config.rules import DISTRIBUTION_METRICS, DriftRule, FixedReference
from operators.metrics import HISTOGRAM_METRIC, RATIOS
from operators.rules.cell_ids import MISSING, CellIds, grown
from operators.rules.change_detectors import DetectorSpec, SeriesChangeDetector
from operators.rules.columns import CellBlock
from operators.rules.drift import (
    VERDICT_CODES,
    DriftResult,
    DriftVerdict,
    HistogramDrift,
    proportion_rows,
)
from operators.rules.drift_reference import FixedPeriod, ReferenceTable, TrailingWindows
from operators.rules.evaluation import (
    FALSE,
    INCONCLUSIVE,
    NOT_EVALUATED,
    TRUE,
    BlockVerdicts,
    CellWindow,
)
from operators.rules.evaluators.cell_rule import CellRule, evaluate_blocks, verdict
from operators.rules.lifecycle import Evaluation, Outcome

SERIES_OF_HISTOGRAM = "confidence_mean"


@dataclass(slots=True)
class DriftState:
    """A rule's cells: their slots, references and detectors (by slot), and the end of
    each slot's last final window (what expiry reads); plain data, pickled."""

    ids: CellIds = field(default_factory=CellIds)
    references: ReferenceTable | None = None
    detectors: dict[int, SeriesChangeDetector] = field(default_factory=dict)
    seen_end: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    length: int = 0  # the rule's window length (ms), read from its final windows


class DriftEvaluator(CellRule[DriftRule]):
    def __init__(
        self,
        rule: DriftRule,
        confidence_bins: int,
        state: DriftState | None = None,
        retention_ms: int = 3_600_000,
    ) -> None:
        """`retention_ms`: how long past its reference's span a cell that stopped
        appearing in final windows is remembered (the alerts' resolved_retention)."""
        super().__init__(rule)
        self.distribution = rule.metric in DISTRIBUTION_METRICS and bool(rule.psi or rule.test)
        self.bins = confidence_bins if rule.metric == HISTOGRAM_METRIC else 2
        self.check = (
            HistogramDrift(
                psi_threshold=rule.psi,
                alpha=rule.test_alpha if rule.test else None,
                min_samples=max(rule.min_samples, 1),
                require=rule.require,
            )
            if self.distribution
            else None
        )
        ref = rule.reference
        self.spec = (
            FixedPeriod(ref.start, ref.end)
            if isinstance(ref, FixedReference)
            else TrailingWindows(ref.windows)
        )
        d = rule.detector
        self.detector = (
            DetectorSpec(d.kind, d.delta, d.threshold, d.min_points, d.mode) if d else None
        )
        self.series = SERIES_OF_HISTOGRAM if rule.metric == HISTOGRAM_METRIC else rule.metric
        self.retention_ms = retention_ms
        if state is None:
            table = ReferenceTable(self.spec, self.bins) if self.check else None
            state = DriftState(references=table)
        self.state = state

    def _slots(self, keys: Sequence[int], start: int, end: int, final: bool) -> np.ndarray:
        """The cells' slots; a final window that feeds state gives each cell one."""
        state = self.state
        feeds = self.detector is not None or (
            state.references is not None
            and (not isinstance(self.spec, FixedPeriod)
                 or (self.spec.start <= start and end <= self.spec.end))
        )  # fmt: skip
        if not (final and feeds):
            return state.ids.find(keys)
        slots = state.ids.assign(keys)
        capacity = state.ids.capacity
        state.seen_end = grown(state.seen_end, capacity, 0)
        if state.references is not None:
            state.references.ensure(capacity)
        state.seen_end[slots] = end
        state.length = end - start
        return slots

    def forget_expired(self, now: int) -> int:
        """Forget the cells whose last final window ended more than the reference's span
        (trailing windows × the window's length) plus `retention_ms` before `now` (a
        fixed period's sums are kept: the period's cells bound them); how many. At the
        same event times in a run and its replay (the stage calls it with the
        lifecycle's expiry)."""
        state = self.state
        if not len(state.ids):
            return 0
        live = np.fromiter(state.ids.slots.values(), dtype=np.int64, count=len(state.ids))
        span = self.spec.windows if isinstance(self.spec, TrailingWindows) else 1
        stale = state.seen_end[live] + span * state.length + self.retention_ms <= now
        if state.references is not None:
            stale &= ~state.references.kept(live)
        gone = live[stale]
        if len(gone):
            if state.references is not None:
                state.references.clear(gone)
            for slot in gone.tolist():
                state.detectors.pop(slot, None)
            state.ids.release(gone.tolist())
        return len(gone)

    def _distributions(self, block: CellBlock) -> np.ndarray:
        """Each cell's histogram [cells, bins]: the confidence histogram, or a
        proportion's (successes, failures) (:func:`proportion_rows`)."""
        if self.config.metric == HISTOGRAM_METRIC:
            return block.histograms()
        ratio = RATIOS[self.config.metric]
        trials = block.fields_sum(ratio.denominator)
        hits = np.minimum(block.fields_sum(ratio.numerator), trials)
        counts = proportion_rows(hits, trials)
        return counts[:, ::-1] if ratio.complement else counts

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        return evaluate_blocks(self, cells, event_time)

    def judge_block(self, block: CellBlock, event_time: int) -> BlockVerdicts:
        """Each cell: its reference before this window, then (a final row) absorb it and
        feed the detector; the look-ups, checks and absorbs of all cells in one pass."""
        keys = block.ids.tolist()
        start, end, final = block.window_start, block.window_end, block.final
        state = self.state
        slots = self._slots(keys, start, end, final)
        table, check = state.references, self.check
        counts = self._distributions(block) if check is not None else None
        outcomes = np.full(len(keys), NOT_EVALUATED, dtype=np.int8)
        checks = None
        thin = np.zeros(len(keys), dtype=bool)
        if table is not None and check is not None and counts is not None:
            # A cell with too few recent counts is inconclusive whatever its reference:
            # its reference is looked up only if its result is asked (absorbing this
            # window does not change the reference of a window that starts before it ends).
            thin = counts.sum(axis=1) < check.min_samples
            references, has = table.references(np.where(thin, MISSING, slots), start)
            checks = check.check_counts(counts, references, has)
            outcomes = _OUTCOME_OF_VERDICT[checks.verdicts]
            if final:
                fed = slots != MISSING
                table.absorb(slots[fed], start, end, counts[fed])
        points: dict[int, DriftResult] = {}
        if final and self.detector is not None:
            series = block.metric(self.series).tolist()
            for i, slot in enumerate(slots.tolist()):
                detector = state.detectors.get(slot)
                if detector is None:
                    detector = state.detectors[slot] = SeriesChangeDetector(self.detector)
                value = series[i]
                point = detector.update(start, None if value != value else value)
                if point is not None:
                    points[i] = point
        for i, point in points.items():
            outcomes[i] = _combined(outcomes[i], point)

        def histogram_result(i: int) -> DriftResult:
            assert checks is not None and check is not None and counts is not None
            if not thin[i] or slots[i] == MISSING:
                return checks.result(i)
            assert table is not None
            ref = table.reference(int(slots[i]), start)
            alone = check.check_rows(counts[i : i + 1], [None if ref is None else ref.counts])
            return alone.result(0)

        def evaluation(i: int) -> Evaluation:
            results = [histogram_result(i)] if checks is not None else []
            if i in points:
                results.append(points[i])
            return self._evaluation(block, i, results, event_time)

        return BlockVerdicts(outcomes, evaluation)

    def _evaluation(
        self, block: CellBlock, i: int, results: list[DriftResult], event_time: int
    ) -> Evaluation:
        # The outcome is _combined's (drifted over stable over inconclusive), here with
        # the result that names it.
        drifted = [r for r in results if r.verdict is DriftVerdict.DRIFTED]
        stable = [r for r in results if r.verdict is DriftVerdict.STABLE]
        if drifted:
            outcome, main = Outcome.TRUE, drifted[0]
        elif stable:
            outcome, main = Outcome.FALSE, stable[0]
        else:
            outcome, main = Outcome.INCONCLUSIVE, results[0]
        evidence: dict[str, Any] | None = None
        if outcome is Outcome.TRUE:
            evidence = {
                "metric": self.config.metric,
                "window": block.window,
                "window_start": block.window_start,
                "window_end": block.window_end,
                **dict(block.keys[i]),
                "checks": [r.evidence() for r in results],
            }
        reason = "; ".join(f"{self.config.metric}: {r.reason}" for r in results)
        return verdict(block, i, event_time, outcome, reason, value=main.statistic,
                       threshold=main.threshold, samples=main.samples,
                       baseline_samples=main.baseline_samples, evidence=evidence)  # fmt: skip


# A histogram verdict code (operators.rules.drift) as an evaluation outcome code.
_OUTCOME_OF_VERDICT = np.array([FALSE, TRUE, INCONCLUSIVE], dtype=np.int8)


def _combined(outcome: int, point: DriftResult) -> int:
    """A cell's outcome with a detector's result added: any drifted check makes it TRUE,
    else any stable one FALSE, else INCONCLUSIVE."""
    code = int(_OUTCOME_OF_VERDICT[VERDICT_CODES[point.verdict]])
    if TRUE in (outcome, code):
        return TRUE
    if FALSE in (outcome, code):
        return FALSE
    return INCONCLUSIVE
