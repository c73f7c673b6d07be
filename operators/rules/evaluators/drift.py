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

from config.rules import DISTRIBUTION_METRICS, DriftRule, FixedReference
from operators.metrics import HISTOGRAM_METRIC, RATIOS
from operators.rules.change_detectors import DetectorSpec, SeriesChangeDetector
from operators.rules.drift import DriftResult, DriftVerdict, HistogramDrift, proportion_counts
from operators.rules.drift_reference import FixedPeriod, ReferenceHistogram, TrailingWindows
from operators.rules.evaluation import CellWindow
from operators.rules.evaluators.cell_rule import CellRule, verdict
from operators.rules.evaluators.reading import in_order
from operators.rules.lifecycle import Dims, Evaluation, Outcome, dims_of

SERIES_OF_HISTOGRAM = "confidence_mean"


@dataclass(slots=True)
class DriftCell:
    """One cell's reference and detector."""

    reference: ReferenceHistogram | None
    detector: SeriesChangeDetector | None


@dataclass(slots=True)
class DriftState:
    cells: dict[Dims, DriftCell] = field(default_factory=dict)


class DriftEvaluator(CellRule[DriftRule]):
    def __init__(
        self, rule: DriftRule, confidence_bins: int, state: DriftState | None = None
    ) -> None:
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
        self.state = state if state is not None else DriftState()

    def _cell(self, key: Dims) -> DriftCell:
        cell = self.state.cells.get(key)
        if cell is None:
            cell = self.state.cells[key] = DriftCell(
                ReferenceHistogram(self.spec, self.bins) if self.check else None,
                SeriesChangeDetector(self.detector) if self.detector else None,
            )
        return cell

    def _distribution(self, cell: CellWindow) -> tuple[int, ...]:
        if self.config.metric == HISTOGRAM_METRIC:
            return cell.histogram
        ratio = RATIOS[self.config.metric]
        trials = sum(cell.fields.get(name, 0.0) for name in ratio.denominator)
        hits = min(sum(cell.fields.get(name, 0.0) for name in ratio.numerator), trials)
        successes, failures = proportion_counts(hits, trials)
        return (failures, successes) if ratio.complement else (successes, failures)

    def evaluate(self, cells: Sequence[CellWindow], event_time: int) -> list[Evaluation]:
        out = []
        for cell in in_order(cells):
            key = dims_of(cell.dims)
            state = self._cell(key)
            results: list[DriftResult] = []
            if self.check is not None and state.reference is not None:
                counts = self._distribution(cell)
                ref = state.reference.reference_for(cell.window_start)
                results.append(self.check.check(counts, None if ref is None else ref.counts))
                if cell.final:
                    state.reference.absorb(cell.window_start, cell.window_end, counts)
            if cell.final and state.detector is not None:
                point = state.detector.update(cell.window_start, cell.metrics.get(self.series))
                if point is not None:
                    results.append(point)
            if results:
                out.append(self._evaluation(key, cell, results, event_time))
        return out

    def _evaluation(
        self, key: Dims, cell: CellWindow, results: list[DriftResult], event_time: int
    ) -> Evaluation:
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
                "window": cell.window,
                "window_start": cell.window_start,
                "window_end": cell.window_end,
                **dict(key),
                "checks": [r.evidence() for r in results],
            }
        reason = "; ".join(f"{self.config.metric}: {r.reason}" for r in results)
        return verdict(cell, event_time, outcome, reason, dims=key, value=main.statistic,
                       threshold=main.threshold, samples=main.samples,
                       baseline_samples=main.baseline_samples, evidence=evidence)  # fmt: skip
