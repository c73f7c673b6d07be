"""Muting: silences and inhibition decide which transitions are recorded but not notified.

A muted transition still happens (the alert changes state, the `alerts` table gets its
row, an action is still asked for); only its notification is held back.

* A **silence** mutes alerts whose dims (and `rule`) match its matchers until an expiry.
  The expiry is compared with **event time** (the transition's watermark), not the
  clock: a replay of the same log mutes the same transitions, and in a live run event
  time follows the clock within the watermark's delay. Silences come from the settings
  (`alerting.silences`) and at run time (:meth:`Silences.add`, for ``pulse silence``).
* An **inhibition** mutes target alerts while a source alert fires with the same values
  of the `equal` dims (e.g. a firing canary alert mutes the threshold alerts of the same
  `model_id`). An alert without one of the `equal` dims is never muted by it. Muting
  applies from the transitions of the same batch on: a canary firing at the same
  emission as a threshold alert mutes it. A muted target alert's later resolution is
  muted too while the source fires (as Alertmanager does).

Matching is :func:`operators.rules.selectors.dims_match`: an exact value, a list, or
``"*"``. The state (silences added at run time, the firing sources) is plain and picklable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from operators.rules.alerts import AlertState, Transition
from operators.rules.selectors import Pattern, dims_match

if TYPE_CHECKING:
    from config.rules import InhibitRule, SilenceSettings

RULE_KEY = "rule"  # a matcher on the rule's name, next to the dims


def _labels(transition: Transition) -> dict[str, str]:
    return {**dict(transition.dims), RULE_KEY: transition.rule}


@dataclass(frozen=True, slots=True)
class Silence:
    matchers: tuple[tuple[str, str | tuple[str, ...]], ...]  # (dim or "rule", pattern)
    until: int  # event time (epoch ms), exclusive
    comment: str = ""

    @classmethod
    def of(cls, matchers: Mapping[str, Pattern], until: int, comment: str = "") -> Silence:
        frozen = tuple(
            sorted((k, v if isinstance(v, str) else tuple(v)) for k, v in matchers.items())
        )
        return cls(frozen, until, comment)

    @classmethod
    def configured(cls, silence: SilenceSettings) -> Silence:
        return cls.of(silence.matchers, silence.until, silence.comment)

    def mutes(self, transition: Transition) -> bool:
        return transition.event_time < self.until and dims_match(
            dict(self.matchers), _labels(transition)
        )


class Silences:
    """The silences in force: from the settings and added at run time."""

    def __init__(self, silences: Iterable[Silence] = ()) -> None:
        self.silences = list(silences)

    def add(self, silence: Silence) -> None:
        self.silences.append(silence)

    def mutes(self, transition: Transition) -> bool:
        return any(s.mutes(transition) for s in self.silences)

    def prune(self, now: int) -> int:
        """Drop the silences expired at event time `now`; how many."""
        before = len(self.silences)
        self.silences = [s for s in self.silences if now < s.until]
        return before - len(self.silences)


@dataclass(frozen=True, slots=True)
class Inhibition:
    """While an alert of a source rule fires, alerts of target rules with the same values
    of `equal` are muted. Rules are named, or picked by type."""

    source_rules: frozenset[str]
    source_types: frozenset[str]
    target_rules: frozenset[str]
    target_types: frozenset[str]
    equal: tuple[str, ...]

    @classmethod
    def configured(cls, rule: InhibitRule) -> Inhibition:
        return cls(
            frozenset(rule.source.rules), frozenset(rule.source.types),
            frozenset(rule.target.rules), frozenset(rule.target.types), tuple(rule.equal),
        )  # fmt: skip

    def is_source(self, rule: str, rule_type: str | None) -> bool:
        return rule in self.source_rules or rule_type in self.source_types

    def is_target(self, rule: str, rule_type: str | None) -> bool:
        return rule in self.target_rules or rule_type in self.target_types

    def key(self, transition: Transition) -> tuple[str, ...] | None:
        """The alert's values of the `equal` dims; None when it lacks one."""
        dims = dict(transition.dims)
        if any(name not in dims for name in self.equal):
            return None
        return tuple(dims[name] for name in self.equal)


class Inhibitor:
    """The firing source alerts of each inhibition, by their `equal` values.

    `firing` (inhibition index → equal values → source fingerprints) is all the state."""

    def __init__(
        self,
        inhibitions: Sequence[Inhibition],
        rule_types: Mapping[str, str],
        firing: dict[int, dict[tuple[str, ...], set[str]]] | None = None,
    ) -> None:
        self.inhibitions = list(inhibitions)
        self.rule_types = dict(rule_types)  # rule name -> its type
        self.firing: dict[int, dict[tuple[str, ...], set[str]]] = firing or {}

    def observe(self, transition: Transition) -> None:
        """Track a source alert starting or ending to fire."""
        rule_type = self.rule_types.get(transition.rule)
        for i, inhibition in enumerate(self.inhibitions):
            if not inhibition.is_source(transition.rule, rule_type):
                continue
            key = inhibition.key(transition)
            if key is None:
                continue
            sources = self.firing.setdefault(i, {})
            if transition.state is AlertState.FIRING:
                sources.setdefault(key, set()).add(transition.fingerprint)
            elif transition.state is AlertState.RESOLVED and key in sources:
                sources[key].discard(transition.fingerprint)
                if not sources[key]:
                    del sources[key]

    def mutes(self, transition: Transition) -> bool:
        rule_type = self.rule_types.get(transition.rule)
        for i, inhibition in enumerate(self.inhibitions):
            if not inhibition.is_target(transition.rule, rule_type):
                continue
            key = inhibition.key(transition)
            sources = self.firing.get(i, {}).get(key) if key is not None else None
            if sources and sources != {transition.fingerprint}:
                return True
        return False


class Muting:
    """Silences and inhibition together: which transitions to notify."""

    def __init__(self, silences: Silences, inhibitor: Inhibitor) -> None:
        self.silences = silences
        self.inhibitor = inhibitor

    def split(self, transitions: Sequence[Transition]) -> tuple[list[Transition], list[Transition]]:
        """(to notify, muted) among the transitions that have targets; all of them update
        the firing sources first, so one batch is judged as a whole."""
        for transition in transitions:
            self.inhibitor.observe(transition)
        notify: list[Transition] = []
        muted: list[Transition] = []
        for transition in transitions:
            if not transition.targets:
                continue
            if self.silences.mutes(transition) or self.inhibitor.mutes(transition):
                muted.append(transition)
            else:
                notify.append(transition)
        return notify, muted
