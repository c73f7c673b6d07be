"""What the rules produce: alert transitions, the notifications that carry them, and the
machine-readable actions they ask for.

These records are the interface between the parts of the loop: rule evaluation and the
alert lifecycle (:mod:`operators.rules`) create them, the ClickHouse `alerts` table and
the delivery connector (webhooks, the actions stream) consume them. They are plain,
frozen and picklable, so they can sit in a stage's snapshot (an outbox) and be replayed
after a crash with the same idempotency keys.

Times are event time in epoch milliseconds: rules run on the watermark, so a replay of
the same log produces the same transitions at the same times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class AlertState(StrEnum):
    """The lifecycle of one rule × dims: inactive → pending → firing → resolved.

    `inconclusive` records that the rule could not decide (too few samples, a canary
    without baseline data); it may notify but never fires an action."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"
    INCONCLUSIVE = "inconclusive"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


Dims = tuple[tuple[str, str], ...]  # (name, value) pairs, sorted by name


@dataclass(frozen=True, slots=True)
class Transition:
    """One alert changing state: a row of the `alerts` table and one line of the log."""

    rule: str
    fingerprint: str  # stable id of rule + dims (the same alert across episodes)
    # One pending→…→resolved episode of the alert: the event time it began (lifecycle.py),
    # so ids stay unique after a resolved alert's state is forgotten.
    episode: int
    state: AlertState
    previous: AlertState
    severity: Severity
    window: str  # the configured window the rule reads
    window_start: int
    window_end: int
    event_time: int  # the watermark at which the transition happened
    dims: Dims
    value: float | None  # the metric, or the test statistic
    threshold: float | None
    samples: int  # the metric's own denominator (or the canary's sample size)
    baseline_samples: int | None  # canary and drift rules: the reference's size
    reason: str  # for a person: what was seen against what
    targets: tuple[str, ...] = ()  # names in `notify`
    action: str | None = None  # e.g. "rollback": asked for once per episode, when firing
    # Tells apart transitions of one state within an episode: a repeat notification while
    # firing, a new spell of inconclusive results (their event time); 0 for the first.
    sequence: int = 0

    @property
    def idempotency_key(self) -> str:
        """The same for a transition however often it is replayed or re-sent."""
        key = f"{self.fingerprint}:{self.episode}:{self.state.value}"
        return f"{key}:{self.sequence}" if self.sequence else key


@dataclass(frozen=True, slots=True)
class Notification:
    """What one target receives: the transitions grouped for it (within `group_wait`)."""

    target: str
    transitions: tuple[Transition, ...]

    @property
    def idempotency_key(self) -> str:
        return "+".join(t.idempotency_key for t in self.transitions)


@dataclass(frozen=True, slots=True)
class Action:
    """A machine-readable request for a controller (the actions stream): at most one per
    alert episode."""

    kind: str  # rollback | retrain | scale
    rule: str
    fingerprint: str
    episode: int
    event_time: int
    dims: Dims
    evidence: dict[str, Any] = field(default_factory=dict)
    # rollback: the canary version to leave and the baseline version to return to
    from_version: str | None = None
    to_version: str | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.fingerprint}:{self.episode}:{self.kind}"
