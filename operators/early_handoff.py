"""A tick's early rows go to the sink one window spec per call, the most frequent first.

Built in one call, every spec's early rows reached the sink only once the costliest was
built: at 6,000 events/s the minute window's rows (~20 ms of work) waited behind the hour
window's and a sliding window's (~130 ms each) whenever their turns fell on the same tick,
every 10 s, and those were the slowest markers of the freshness bench
(docs/performance.md). Bytewax hands a step's output on when its call returns, so the
merge stage emits one spec's rows per call and asks to be called again at once for the
rest (`notify_at`). Which windows go was decided at the tick (turns, the budget, the
sink's gate); the calls after it only hand them over.

The order is fixed: the spec whose early rows go most often first (its `early_interval`),
then the shorter window. Its rows carry the changes of the least time, so they are the
cheapest to build (shortest job first gets the most rows out soonest), and they are the
ones read for freshness (the minute window's, which rules and pages read). Ordering by
each spec's measured cost was tried first and failed as it is measured: a sliding window
that had just opened cost ~1 ms once, went first at the next tick with ~45k rows, and
held the minute's behind it for ~340 ms.

A queued spec is overtaken at most `MAX_OVERTAKEN` times: on a busy worker the stage
may be called again only at the next tick, where the minute's new rows come first again,
and the hour's, re-queued behind them tick after tick, starved (7 s at 24,000 events/s;
then 7 s of deltas rolled up in one 0.7 s call held every other row). After that, it
goes with the spec that would overtake it once more. Not at the first overtaking: live,
nearly every call then built the long windows' rows with the minute's, and the minute's
rows waited on them at every tick (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

MAX_OVERTAKEN = 3  # times a queued spec lets a spec chosen anew go first, at most


class EarlyHandOff:
    """Which specs' chosen early windows go in this call; the rest wait for the next."""

    __slots__ = ("_overtaken", "_rank", "queued")

    def __init__(self, every: Sequence[float], lengths: Sequence[int]) -> None:
        """`every`: each spec's early-row interval (ms); `lengths`: its window length."""
        order = sorted(range(len(every)), key=lambda i: (every[i], lengths[i], i))
        self._rank = {spec: rank for rank, spec in enumerate(order)}
        self.queued: dict[int, list[int]] = {}  # spec -> window starts, for the next call
        self._overtaken: dict[int, int] = {}  # queued spec -> times overtaken since queued

    @property
    def waiting(self) -> bool:
        """Some spec's early rows were chosen and not yet handed over."""
        return bool(self.queued)

    def take_queued(self) -> dict[int, list[int]]:
        """The windows queued by the last call (this call hands them over)."""
        queued, self.queued = self.queued, {}
        return queued

    def split(self, chosen: list[list[int]], carried: Collection[int] = ()) -> list[list[int]]:
        """Of each spec's chosen windows, those that go now: the first spec's in order,
        and, when that one was chosen anew, those of the specs `carried` over from the
        last call (:meth:`take_queued`) it overtakes for more than `MAX_OVERTAKEN` times;
        the others' are queued."""
        waiting = [i for i, starts in enumerate(chosen) if starts]
        going: set[int] = set()
        if waiting:
            first = min(waiting, key=self._rank.__getitem__)
            going.add(first)
            if first not in carried:  # chosen anew: it overtakes the carried specs
                for spec in (i for i in carried if i in waiting):
                    self._overtaken[spec] = self._overtaken.get(spec, 0) + 1
                    if self._overtaken[spec] > MAX_OVERTAKEN:
                        going.add(spec)
        self.queued = {i: chosen[i] for i in waiting if i not in going}
        self._overtaken = {i: n for i, n in self._overtaken.items() if i in self.queued}
        return [starts if i in going else [] for i, starts in enumerate(chosen)]
