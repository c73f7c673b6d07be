"""Grouping: the transitions for one target within `group_wait` of event time go out as
one :class:`~operators.rules.alerts.Notification` (one incident across 40 segments is one
message, not 40).

A target's group opens at the event time of its first transition and is due once the
watermark reaches that time + `group_wait`; transitions arriving meanwhile join it, in the
order they came. With a `group_wait` of 0 a group is due at once. Times are event time,
so a replay groups the same transitions into the same notifications. The open groups are
the state (plain, picklable); :meth:`Grouper.drain` sends what is left at the end of a
bounded run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from operators.rules.alerts import Notification, Transition


@dataclass(slots=True)
class OpenGroup:
    opened_at: int  # event time of its first transition
    transitions: list[Transition] = field(default_factory=list)


class Grouper:
    """Open groups per target; `group_wait` per target, or `default_wait_ms`."""

    def __init__(
        self,
        default_wait_ms: int,
        wait_by_target: Mapping[str, int] | None = None,
        groups: dict[str, OpenGroup] | None = None,
    ) -> None:
        self.default_wait_ms = default_wait_ms
        self.wait_by_target = dict(wait_by_target or {})
        self.groups: dict[str, OpenGroup] = {} if groups is None else groups

    def wait_ms(self, target: str) -> int:
        return self.wait_by_target.get(target, self.default_wait_ms)

    def push(self, transitions: Iterable[Transition], now: int) -> list[Notification]:
        """Add the transitions to their targets' groups (those with no targets are only
        recorded, never notified); the notifications due at watermark `now`. Groups
        already due at `now` close before the new transitions arrive."""
        due = self._close(now)
        for transition in transitions:
            for target in transition.targets:
                group = self.groups.get(target)
                if group is None:
                    group = self.groups[target] = OpenGroup(transition.event_time)
                group.transitions.append(transition)
        return due + self._close(now)

    def _close(self, now: int) -> list[Notification]:
        targets = [
            target
            for target, group in self.groups.items()
            if now - group.opened_at >= self.wait_ms(target)
        ]
        return self._notifications(targets)

    def drain(self) -> list[Notification]:
        """Every open group, due or not (the end of a bounded run)."""
        return self._notifications(list(self.groups))

    def _notifications(self, targets: list[str]) -> list[Notification]:
        """The groups of these targets, closed, in the order they opened (then by name)."""
        closed = sorted((self.groups[t].opened_at, t) for t in targets)
        return [
            Notification(target, tuple(self.groups.pop(target).transitions)) for _, target in closed
        ]
