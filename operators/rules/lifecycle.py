"""The alert lifecycle: inactive → pending → firing → resolved, per rule × dims, in event
time.

Rule evaluation decides, at each window emission, whether a rule's condition holds for a
cell (`Outcome.TRUE` / `FALSE`) or cannot be decided (`INCONCLUSIVE`: too few samples,
no data, a canary without baseline data). :class:`Lifecycle` turns those evaluations into
:class:`~operators.rules.alerts.Transition` records:

* TRUE from inactive or resolved starts an episode: pending, then firing once the
  condition has held for the rule's `for` (straight to firing when `for` is 0). The
  firing transition carries the rule's `action`; an episode fires once, so an action is
  asked for at most once per episode.
* FALSE ends it: a pending alert resolves at once (not notified: it never fired); a firing
  one resolves when the condition last held `keep_firing_for` ago or longer.
* While firing, a repeat firing transition goes out every `repeat_interval` (0: never).
* INCONCLUSIVE neither holds nor clears the condition: the state and its clocks stay as
  they are (a pending alert's `for` keeps counting from when it began). Only an *active*
  alert (pending or firing) records it: one `inconclusive` transition per spell of such
  results, notified only when the rule says `notify_inconclusive`, never with an action.
  An alert with no state (or a resolved one) records nothing, as Prometheus records
  nothing for a series that never entered pending: a thin cell of a large cube would
  otherwise make one row per (rule, cell) for saying nothing.

Which transitions notify is decided here, once: a transition's `targets` are empty when it
is only recorded (pending, a pending alert resolving, an inconclusive spell by default).

Every time is the event time the caller passes (the watermark at the emission), never
the clock, so a replay of the same evaluations gives the same transitions. Episode ids
are the event time the episode began (later than the previous one), so they stay unique
after a resolved alert's state is forgotten. The state is a dict of small records,
picklable for a snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import msgspec

from operators.rules.alerts import AlertState, Dims, Severity, Transition

if TYPE_CHECKING:
    from config.rules import AlertingSettings, RuleBase

# The states in which an alert exists for its rule × dims (an inconclusive result is
# recorded only in these).
ACTIVE = frozenset((AlertState.PENDING, AlertState.FIRING))
FINGERPRINT_BYTES = 8  # 16 hex characters
# (rule, dims) pairs whose fingerprint is kept: 100 rules over a 10k-dims cube ask ~1M
# distinct ones at most; ~200 bytes each.
FINGERPRINTS_CACHED = 1 << 20


def dims_of(dims: Mapping[str, str]) -> Dims:
    """Dims as the records carry them: (name, value) pairs sorted by name."""
    return tuple(sorted(dims.items()))


def fingerprint(rule: str, dims: Dims | Mapping[str, str]) -> str:
    """A stable id of rule + dims: the same in every process and run (blake2b of a
    canonical JSON encoding, not Python's salted `hash`)."""
    pairs = tuple(sorted(dims.items()) if isinstance(dims, Mapping) else sorted(dims))
    return _fingerprint(rule, pairs)


@lru_cache(maxsize=FINGERPRINTS_CACHED)
def _fingerprint(rule: str, pairs: Dims) -> str:
    """A pure function of rule and dims, asked at every evaluation of every cell: computed
    once per (rule, dims) while it stays among the most recent `FINGERPRINTS_CACHED`."""
    # msgspec writes the bytes `json.dumps(..., separators=(",", ":"), ensure_ascii=False)`
    # wrote before it (compact, UTF-8, the same escapes): the fingerprints do not change.
    payload = msgspec.json.encode([rule, pairs])
    return hashlib.blake2b(payload, digest_size=FINGERPRINT_BYTES).hexdigest()


class Outcome(StrEnum):
    """What an evaluation found for one rule × dims."""

    TRUE = "true"  # the condition holds (the metric breaches, the canary is worse)
    FALSE = "false"  # it does not
    INCONCLUSIVE = "inconclusive"  # too few samples or no data to decide


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One rule evaluated on one cell at one emission."""

    dims: Dims
    outcome: Outcome
    event_time: int  # the watermark at the emission; must not decrease per alert
    window_start: int
    window_end: int
    value: float | None = None  # the metric, or the test statistic
    threshold: float | None = None
    samples: int = 0
    baseline_samples: int | None = None
    reason: str = ""
    # What an action asked for by this alert carries (e.g. a rollback's canary and
    # baseline versions and the test's figures); the stage copies it into the Action.
    evidence: Mapping[str, Any] | None = None


def in_cell_order(evaluations: Iterable[Evaluation]) -> list[Evaluation]:
    """A rule's evaluations of one window in the order their transitions go out: by cell
    (dims), not by row. The merge stage lists cells in the order the partitions' deltas
    reached it, which differs between a run and its replay, and a grouped notification's
    key lists its transitions in order."""
    return sorted(evaluations, key=_dims)


def _dims(evaluation: Evaluation) -> Dims:
    return evaluation.dims


@dataclass(frozen=True, slots=True)
class Policy:
    """How one rule's alerts live: the timing and who hears of them."""

    rule: str
    window: str
    severity: Severity = Severity.WARNING
    for_ms: int = 0
    keep_firing_for_ms: int = 0
    repeat_interval_ms: int = 0  # 0: no repeat notifications while firing
    targets: tuple[str, ...] = ()
    action: str | None = None
    notify_inconclusive: bool = False

    @classmethod
    def of(cls, rule: RuleBase, defaults: AlertingSettings) -> Policy:
        """A configured rule with the `alerting` defaults filled in."""

        def default(value: int | None, fallback: int) -> int:
            return fallback if value is None else value

        return cls(
            rule=rule.name,
            window=rule.window,
            severity=rule.severity or defaults.severity,
            for_ms=rule.for_,
            keep_firing_for_ms=default(rule.keep_firing_for, defaults.keep_firing_for),
            repeat_interval_ms=default(rule.repeat_interval, defaults.repeat_interval),
            targets=tuple(rule.notify),
            action=rule.action,
            notify_inconclusive=rule.notify_inconclusive,
        )


@dataclass(slots=True)
class AlertRecord:
    """The state of one alert (rule × dims) between evaluations."""

    state: AlertState  # pending, firing, resolved (inactive: only in older snapshots)
    episode: int  # event time the current (or last) episode began; 0 before the first
    since: int  # event time the current state began
    last_true: int  # latest event time the condition held
    last_sent: int  # latest firing notification (the first or a repeat)
    inconclusive: bool  # in a spell of inconclusive results (recorded once per spell)


class Lifecycle:
    """The alerts of a set of rules, fed evaluations in event-time order.

    `alerts` (fingerprint → :class:`AlertRecord`) is all the state: pass it back in to
    resume from a snapshot. Policies come from the settings, not from the snapshot.
    """

    def __init__(
        self,
        policies: Iterable[Policy],
        resolved_retention_ms: int = 3_600_000,
        alerts: dict[str, AlertRecord] | None = None,
    ) -> None:
        self.policies = {p.rule: p for p in policies}
        self.resolved_retention_ms = resolved_retention_ms
        self.alerts: dict[str, AlertRecord] = {} if alerts is None else alerts
        # Which rule × dims each alert is (not in a snapshot: learned as alerts are
        # created or observed again), and the dims with an alert per rule: `alerted`
        # reads these while they cover every alert.
        self._located: dict[str, tuple[str, Dims]] = {}
        self._by_rule: dict[str, dict[Dims, str]] = {}  # rule -> dims -> fingerprint

    def observe(self, rule: str, evaluation: Evaluation) -> list[Transition]:
        """The transitions one evaluation causes (none, one, or pending then firing)."""
        policy = self.policies[rule]
        fp = fingerprint(rule, evaluation.dims)
        record = self.alerts.get(fp)
        if record is not None and fp not in self._located:
            self._locate(fp, rule, evaluation.dims)
        t = evaluation.event_time
        if evaluation.outcome is Outcome.INCONCLUSIVE:
            return self._inconclusive(policy, fp, record, evaluation)
        if record is not None:
            record.inconclusive = False
        if evaluation.outcome is Outcome.TRUE:
            return self._holds(policy, fp, record, evaluation)
        if record is None:
            return []
        if record.state is AlertState.INACTIVE:
            self._drop(fp)  # a snapshot's record of a recorded inconclusive spell
            return []
        if record.state is AlertState.PENDING:
            return [self._move(policy, fp, record, evaluation, AlertState.RESOLVED, notify=False)]
        if record.state is AlertState.FIRING:
            if t - record.last_true >= policy.keep_firing_for_ms:
                return [self._move(policy, fp, record, evaluation, AlertState.RESOLVED)]
            return self._repeat(policy, fp, record, evaluation)
        return []

    def alerted(self, rule: str, cells: Sequence[Dims]) -> list[bool]:
        """Whether each of these dims (sorted, as :func:`dims_of` gives) has an alert of
        `rule`. A FALSE or INCONCLUSIVE evaluation of one that has none changes nothing
        (:meth:`observe` returns no transition and keeps no state), so the rules stage
        observes only these and the cells whose condition holds."""
        alerts = self.alerts
        if not alerts:
            return [False] * len(cells)
        if len(self._located) == len(alerts):  # every alert's rule × dims is known
            having = self._by_rule.get(rule)
            if not having:
                return [False] * len(cells)
            return [dims in having for dims in cells]
        return [_fingerprint(rule, dims) in alerts for dims in cells]  # after a resume

    def hold_quietly(self, rule: str, cells: Sequence[Dims], t: int) -> list[bool]:
        """For cells whose condition holds at event time `t`: True where :meth:`observe`
        of that TRUE evaluation would make no transition and only note that it held (a
        firing alert with no repeat due), which this records instead. The stage then
        builds no evaluation for them (most evaluations of a steady incident are these).
        All False while some alert's rule × dims is unknown (after a resume)."""
        having = self._by_rule.get(rule)
        if not having or len(self._located) != len(self.alerts):
            return [False] * len(cells)
        repeat_ms = self.policies[rule].repeat_interval_ms
        alerts = self.alerts
        quiet = []
        for dims in cells:
            fp = having.get(dims)
            record = None if fp is None else alerts[fp]
            if (
                record is None
                or record.state is not AlertState.FIRING
                or (repeat_ms and t - record.last_sent >= repeat_ms)
            ):
                quiet.append(False)
                continue
            record.inconclusive = False  # as observe: a conclusive result ends a spell
            record.last_true = t
            quiet.append(True)
        return quiet

    def may_have_alerts(self, rule: str) -> bool:
        """False when `rule` has no alert for certain (every alert's rule × dims known):
        then :meth:`alerted` is False for every cell, and the stage need not ask it."""
        if not self.alerts:
            return False
        return len(self._located) != len(self.alerts) or bool(self._by_rule.get(rule))

    def _locate(self, fp: str, rule: str, dims: Dims) -> None:
        dims = tuple(sorted(dims))
        self._located[fp] = (rule, dims)
        self._by_rule.setdefault(rule, {})[dims] = fp

    def _drop(self, fp: str) -> None:
        del self.alerts[fp]
        located = self._located.pop(fp, None)
        if located is not None:
            self._by_rule[located[0]].pop(located[1], None)

    def _holds(
        self, policy: Policy, fp: str, record: AlertRecord | None, evaluation: Evaluation
    ) -> list[Transition]:
        t = evaluation.event_time
        transitions = []
        starts = record is None or record.state in (AlertState.INACTIVE, AlertState.RESOLVED)
        if starts:
            episode = t if record is None else max(t, record.episode + 1)
            previous = AlertState.INACTIVE if record is None else record.state
            record = AlertRecord(previous, episode, t, t, t, inconclusive=False)
            self.alerts[fp] = record
            self._locate(fp, policy.rule, evaluation.dims)
            if policy.for_ms > 0:  # with no `for`, it fires below with no pending row
                transitions.append(
                    self._move(policy, fp, record, evaluation, AlertState.PENDING, notify=False)
                )
        assert record is not None
        record.last_true = t
        pending = starts or record.state is AlertState.PENDING
        if pending and t - record.since >= policy.for_ms:
            record.last_sent = t
            transitions.append(self._move(policy, fp, record, evaluation, AlertState.FIRING))
        elif record.state is AlertState.FIRING:
            transitions.extend(self._repeat(policy, fp, record, evaluation))
        return transitions

    def _repeat(
        self, policy: Policy, fp: str, record: AlertRecord, evaluation: Evaluation
    ) -> list[Transition]:
        t = evaluation.event_time
        if not policy.repeat_interval_ms or t - record.last_sent < policy.repeat_interval_ms:
            return []
        record.last_sent = t
        return [self._transition(policy, fp, record, evaluation, AlertState.FIRING, sequence=t)]

    def _inconclusive(
        self, policy: Policy, fp: str, record: AlertRecord | None, evaluation: Evaluation
    ) -> list[Transition]:
        t = evaluation.event_time
        if record is None or record.state not in ACTIVE or record.inconclusive:
            return []
        record.inconclusive = True
        return [
            self._transition(
                policy, fp, record, evaluation, AlertState.INCONCLUSIVE, sequence=t,
                notify=policy.notify_inconclusive, action=False,
            )
        ]  # fmt: skip

    def _move(
        self,
        policy: Policy,
        fp: str,
        record: AlertRecord,
        evaluation: Evaluation,
        state: AlertState,
        notify: bool = True,
    ) -> Transition:
        transition = self._transition(policy, fp, record, evaluation, state, notify=notify)
        record.state = state
        record.since = evaluation.event_time
        return transition

    @staticmethod
    def _transition(
        policy: Policy,
        fp: str,
        record: AlertRecord,
        evaluation: Evaluation,
        state: AlertState,
        sequence: int = 0,
        notify: bool = True,
        action: bool = True,
    ) -> Transition:
        previous = record.state
        # A resolved pending alert was never notified: its end is not either.
        if state is AlertState.RESOLVED and previous is not AlertState.FIRING:
            notify = False
        first_firing = state is AlertState.FIRING and previous is not AlertState.FIRING
        return Transition(
            rule=policy.rule,
            fingerprint=fp,
            episode=record.episode,
            state=state,
            previous=previous,
            severity=policy.severity,
            window=policy.window,
            window_start=evaluation.window_start,
            window_end=evaluation.window_end,
            event_time=evaluation.event_time,
            dims=evaluation.dims,
            value=evaluation.value,
            threshold=evaluation.threshold,
            samples=evaluation.samples,
            baseline_samples=evaluation.baseline_samples,
            reason=evaluation.reason,
            targets=policy.targets if notify else (),
            action=policy.action if action and first_firing else None,
            sequence=sequence,
        )

    def forget_expired(self, now: int) -> int:
        """Drop resolved alerts (and inactive ones an older snapshot kept) whose state
        began `resolved_retention` or longer before `now`; how many."""
        expired = [
            fp
            for fp, record in self.alerts.items()
            if record.state in (AlertState.RESOLVED, AlertState.INACTIVE)
            and now - record.since >= self.resolved_retention_ms
        ]
        for fp in expired:
            self._drop(fp)
        return len(expired)

    def state_of(self, rule: str, dims: Dims | Mapping[str, str]) -> AlertState:
        record = self.alerts.get(fingerprint(rule, dims))
        return AlertState.INACTIVE if record is None else record.state
