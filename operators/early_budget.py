"""The early rows' budget: a share of the worker's time, shared by the window specs.

Each spec holds a credit of work (ms). It may emit early rows while its credit is not
negative; an emission costs its work. Credit accrues at ``budget / (1 - budget)`` per ms
of wall time, for all specs together: the specs in debt share it equally, and what a
spec needs less than its part of goes to the others (water-filling, as a deficit round
robin hands a queue's unused quantum on). With one spec this is the pacing it replaces:
after an emission of `took` ms, the next may start ``took * (1 - budget) / budget``
later. With several, a costly spec's debt holds only its own early rows (paced together,
the sliding windows' many rows held the minute window's next ones for 3x their work),
and a spec that needs little (the hour window's rows every 10 s) leaves its part to the
others, so the budget is spent where rows are due.

Credit no spec owes is banked, up to what the budget earns in `BURST_MS` per spec (a
token bucket, as Guava's ``SmoothBursty`` stores up to ``maxBurstSeconds`` of permits):
a spec whose emissions stay within the budget on average is not held by one costly
emission (a collection or a cold cache in it: the minute window's 35 ms emission took
160 ms at times, and its next rows waited ~0.5–1 s), while work above the budget for
longer than the burst is paced as before. Debts are paid before any bank is filled.
"""

from __future__ import annotations

PAID = 1e-6  # ms of work: a debt this small is rounding, not work owed
BURST_MS = 1_000.0  # wall time whose credit a spec may bank for a costly emission


class EarlyBudget:
    """Credits of early-row work per window spec (not state: a restart starts afresh,
    with nothing banked)."""

    def __init__(self, specs: int, budget: float, burst_ms: float = BURST_MS) -> None:
        self._budget = budget
        self._whole = budget >= 1.0  # every emission may go at once
        self._credit = [0.0] * specs
        self._bank = 0.0 if self._whole else self._earned(burst_ms)
        self._at: float | None = None

    def ready(self, spec: int, now: float) -> bool:
        """Whether the spec's early rows may go out at `now`."""
        self._accrue(now)
        return self._whole or self._credit[spec] >= -PAID

    def spend(self, spec: int, took: float, now: float) -> float:
        """An emission of the spec's early rows ended at `now` after `took` ms of work;
        returns how long its next waits (ms) if no other spec is in debt meanwhile."""
        self._accrue(now)
        if self._whole:
            return 0.0
        self._credit[spec] -= max(took, 0.0)
        return self._wall_for(max(-self._credit[spec], 0.0))

    def _earned(self, wall_ms: float) -> float:
        """Credit earned over `wall_ms` (multiplied first: whole numbers stay whole)."""
        return wall_ms * self._budget / (1.0 - self._budget)

    def _wall_for(self, credit_ms: float) -> float:
        """The wall time `credit_ms` of credit takes to earn."""
        return credit_ms * (1.0 - self._budget) / self._budget

    def _accrue(self, now: float) -> None:
        elapsed, self._at = (0.0 if self._at is None else max(now - self._at, 0.0)), now
        if self._whole or elapsed == 0.0:
            return
        grant = self._share(self._earned(elapsed), ceiling=0.0)  # debts first
        self._share(grant, ceiling=self._bank)

    def _share(self, grant: float, ceiling: float) -> float:
        """Raise the credits below `ceiling` towards it, the smallest shortfall first and
        the rest in equal parts (water-filling); returns the grant left over."""
        short = sorted(
            (ceiling - credit, spec) for spec, credit in enumerate(self._credit) if credit < ceiling
        )
        for left, (shortfall, spec) in zip(range(len(short), 0, -1), short, strict=True):
            given = min(grant / left, shortfall)  # smallest first: their spare goes on
            self._credit[spec] += given
            grant -= given
        return grant
