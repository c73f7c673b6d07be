"""An online change detector on a metric's series: one point per final window of a cell.

Wraps river's detectors (`river.drift.PageHinkley`, `river.drift.ADWIN`): well-kept
implementations of the two classic tests, rather than hand-written ones.

* **Page–Hinkley** (default): accumulates each point's deviation from the running mean
  less `delta` (the change it tolerates), and reports a change when that sum rises (or
  falls, `mode="both"`) more than `threshold` (λ) above its extreme. Both are in the
  metric's own units: the defaults here (delta 0.01, λ 0.3, 10 points before a change
  can be reported) suit a rate in [0, 1] (accuracy, error or thumbs-down rate) whose
  per-window noise is about 0.02. Seeded simulation (the tests): no detection in 100
  stationary series of 500 windows; a step of −0.05 is detected after ~8 windows (≤ 13).
  For another scale set delta ≈ half the per-window noise and λ ≈ 15 × the noise.
  river's own defaults (delta 0.005, λ 50) are for raw-valued streams.
* **ADWIN**: keeps a variable-length window of recent points and reports a change when
  two sub-windows' means differ by more than a Hoeffding-style bound at confidence
  `delta` (default 0.002); checked at every point (``clock=1``: one point is a whole
  window here, not one event). Its bound has a term for the range of the values, which
  assumes values in [0, 1], and it compares sub-windows only at its bucket boundaries:
  with one point per window it is slow and coarse (seeded simulation of an accuracy of
  500 labels per window: 0.9 → 0.3 detected ~29 windows later; 0.9 → 0.6 not within
  60). Prefer Page–Hinkley for per-window series; ADWIN suits long, bounded ones.

After a detection river resets the detector (Page–Hinkley forgets the old mean, ADWIN
drops the old sub-window), so a lasting change is reported once, not at every window.

river is imported when the first detector is built (importing `river.drift` takes ~2 s
here). A detector's state is the river object itself, which pickles and resumes with the
same decisions (tested); pickles are tied to river's version (pinned below 0.27): bump
the rules stage's state VERSION when upgrading it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from operators.rules.drift import DriftResult, DriftVerdict

DetectorKind = Literal["page_hinkley", "adwin"]
_PAGE_HINKLEY_THRESHOLD = 0.3
_DEFAULTS: dict[str, tuple[float, float | None]] = {  # kind: (delta, threshold)
    "page_hinkley": (0.01, _PAGE_HINKLEY_THRESHOLD),
    "adwin": (0.002, None),
}


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    """Which detector and its parameters (None: the kind's default, see the module)."""

    kind: DetectorKind = "page_hinkley"
    delta: float | None = None
    threshold: float | None = None  # page_hinkley only
    min_points: int = 10  # points before a change can be reported
    mode: Literal["up", "down", "both"] = "both"  # page_hinkley only

    def __post_init__(self) -> None:
        if self.kind not in _DEFAULTS:
            raise ValueError(f"detector kind must be page_hinkley or adwin, got {self.kind!r}")
        if self.delta is not None and not self.delta > 0:
            raise ValueError(f"detector delta must be > 0, got {self.delta}")
        if self.kind == "adwin" and self.delta is not None and not self.delta < 1:
            raise ValueError(f"adwin delta is a confidence in (0, 1), got {self.delta}")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"detector threshold must be > 0, got {self.threshold}")
        if self.kind == "adwin" and self.threshold is not None:
            raise ValueError("adwin has no threshold (its bound is set by delta)")
        if self.min_points < 1:
            raise ValueError(f"detector min_points must be ≥ 1, got {self.min_points}")
        if self.mode not in ("up", "down", "both"):
            raise ValueError(f"detector mode must be up, down or both, got {self.mode!r}")

    @property
    def effective_delta(self) -> float:
        return self.delta if self.delta is not None else _DEFAULTS[self.kind][0]

    @property
    def effective_threshold(self) -> float | None:
        """Page–Hinkley's λ (None for ADWIN, which has none)."""
        return self.threshold if self.threshold is not None else _DEFAULTS[self.kind][1]

    def build(self) -> Any:
        from river import drift  # lazily: see the module docstring

        if self.kind == "adwin":
            return drift.ADWIN(
                delta=self.effective_delta, clock=1, grace_period=self.min_points,
                min_window_length=min(5, self.min_points),
            )  # fmt: skip
        return drift.PageHinkley(
            min_instances=self.min_points, delta=self.effective_delta,
            threshold=self.threshold or _PAGE_HINKLEY_THRESHOLD, mode=self.mode,
        )  # fmt: skip


class SeriesChangeDetector:
    """A change detector over one cell's metric series, fed one point per final window in
    event-time order; a repeated or older window (a replay) is ignored."""

    __slots__ = ("detector", "last_window_start", "points", "run_count", "run_sum", "spec")

    def __init__(self, spec: DetectorSpec) -> None:
        self.spec = spec
        self.detector: Any = spec.build()
        self.last_window_start: int | None = None
        self.points = 0  # points absorbed in all
        self.run_count = 0  # points since the last detection (what the mean is of)
        self.run_sum = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def update(self, window_start: int, value: float | None) -> DriftResult | None:
        """The verdict after the point of the window starting at `window_start`; None for
        a window not after the last one (already seen). A missing value (no data in the
        window) is inconclusive and leaves the detector as it was."""
        if self.last_window_start is not None and window_start <= self.last_window_start:
            return None
        self.last_window_start = window_start
        kind, threshold = self.spec.kind, self.spec.effective_threshold or self.spec.effective_delta
        if value is None or not math.isfinite(value):
            return DriftResult(
                kind, DriftVerdict.INCONCLUSIVE, None, threshold, self.points, None,
                "no value in this window",
            )  # fmt: skip
        value = float(value)
        before = self.run_sum / self.run_count if self.run_count else None
        self.detector.update(value)
        self.points += 1
        if self.detector.drift_detected:
            self.run_count, self.run_sum = 0, 0.0
            shown = "n/a" if before is None else f"{before:.4g}"
            return DriftResult(
                kind, DriftVerdict.DRIFTED, value, threshold, self.points, None,
                f"{kind} detected a change: value {value:.4g} against a mean of {shown} "
                f"since the last change",
                details={"mean_before": before} if before is not None else {},
            )  # fmt: skip
        self.run_count += 1
        self.run_sum += value
        if self.points < self.spec.min_points:
            return DriftResult(
                kind, DriftVerdict.INCONCLUSIVE, value, threshold, self.points, None,
                f"{self.points} of {self.spec.min_points} points seen",
            )  # fmt: skip
        return DriftResult(
            kind, DriftVerdict.STABLE, value, threshold, self.points, None,
            f"{kind}: no change in {self.run_count} points "
            f"(mean {self.run_sum / self.run_count:.4g})",
        )  # fmt: skip
