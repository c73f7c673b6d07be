"""The rules stage: window emissions in, alert transitions, notifications and actions out.

One stateful logic (one key, like the merge stage: rules are low volume) takes every
:class:`~operators.window_metrics.WindowMetrics` the merge stage emits and, per window of
the emission (oldest end first):

1. fixes the event time of the evaluation: a final window at its end + allowed lateness
   (the watermark that made it final: the same in a live run and a replay), early rows at
   the emission's watermark; never earlier than the stage's last evaluation (`clock`);
2. picks the rows some rule can read with numpy (:mod:`operators.rules.cell_windows`: each
   rule's mask is the selector's exact decision, taken once per dictionary value) and
   reads them as columns (:class:`~operators.rules.columns.WindowColumns`);
3. judges each rule of that window on the cells of its mask. Threshold, ratio, spike and
   drift judge the whole block with numpy (:class:`~operators.rules.evaluation.BlockEvaluator`);
   only the cells whose condition holds, or that have an alert
   (:meth:`~operators.rules.lifecycle.Lifecycle.alerted`), become
   :class:`~operators.rules.lifecycle.Evaluation` records for the
   :class:`~operators.rules.lifecycle.Lifecycle`: for the others the lifecycle would make
   no transition and keep no state, so skipping them is exact (a thin cell's
   inconclusive result, a healthy cell's FALSE cost no Python object). A canary reads its
   sides from its reads' masks (:class:`~operators.rules.evaluation.SidesEvaluator`);
   any other evaluator gets :class:`~operators.rules.evaluation.CellWindow` records.
   A rule's evaluations reach the lifecycle in order of their cells' dims, not of the
   rows (the merge stage's row order follows arrival across partitions);
4. routes the transitions through :class:`~operators.rules.silences.Muting` (silences and
   inhibition) and the :class:`~operators.rules.grouping.Grouper` (group_wait in event
   time) into :class:`~operators.rules.alerts.Notification` records; a firing transition
   that carries an action becomes one :class:`~operators.rules.alerts.Action` (evidence
   from the evaluation; `from_version`/`to_version` read from evidence keys of those
   names), muted or not;
5. writes every transition as an `alerts` row (:mod:`operators.rules.alert_rows`) and a
   JSON line of the log (logger ``pulse.alerts``: one record per evaluation).

At the end of the input (`on_eof`: a bounded run) every open group is drained, so each
notification reaches the outbox sink, whose close delivers it before the run exits.

State (:class:`~operators.stage_states.RulesState`): the lifecycle's alerts, the
evaluators (pickled whole), the open groups, the firing inhibition sources and the
clock; a resume goes on with identical transitions. Silences from the settings come
back from the settings; silences added at run time come from `runtime_silences` (polled
per emission with its event time).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from bytewax.operators import StatefulLogic

from operators.batches import TableRows
from operators.rules.alert_rows import alert_rows
from operators.rules.alerts import Action, Notification, Transition
from operators.rules.cell_windows import CellSelector, Selector
from operators.rules.columns import CellBlock, WindowColumns
from operators.rules.evaluation import (
    NOT_EVALUATED,
    TRUE,
    BlockEvaluator,
    Evaluator,
    Forgetting,
    SidesEvaluator,
)
from operators.rules.grouping import Grouper
from operators.rules.lifecycle import Evaluation, Lifecycle, Policy, in_cell_order
from operators.rules.silences import Inhibition, Inhibitor, Muting, Silence, Silences
from operators.snapshots import decode_state, encode_state
from operators.stage_states import RulesState
from operators.stats import FlowStats
from operators.window_metrics import WindowGroup, WindowMetrics

if TYPE_CHECKING:
    from config.rules import RuleBase
    from config.settings import Settings

# Resolved alerts, and the expired cells of the rules' per-cell state, are forgotten
# (resolved_retention) when event time enters a new period of this length: at the same
# event times in a run and its replay, and not at every emission.
FORGET_EVERY_MS = 60_000

RulesOutput = TableRows | Notification | Action
RuntimeSilences = Callable[[int], Sequence[Silence]]


@dataclass(frozen=True)
class RulesConfig:
    """The rules as the stage runs them; all but the evaluators come from the settings on
    every start (a snapshot holds state, not configuration)."""

    evaluators: Callable[[], Sequence[Evaluator]]  # fresh ones, one per rule, in order
    reads: tuple[tuple[str, tuple[Selector, ...]], ...]  # per rule: window, cells read
    policies: tuple[Policy, ...]  # per rule, in the same order
    rule_types: Mapping[str, str]
    inhibitions: tuple[Inhibition, ...] = ()
    silences: tuple[Silence, ...] = ()
    group_wait_ms: int = 30_000
    group_wait_by_target: Mapping[str, int] = field(default_factory=dict)
    resolved_retention_ms: int = 3_600_000
    allowed_lateness: int = 0
    extra_dims: tuple[str, ...] = ()
    runtime_silences: RuntimeSilences | None = None  # `pulse silence` (connectors)
    snapshots: bool = True

    @classmethod
    def of(
        cls,
        settings: Settings,
        evaluator_for: Callable[[RuleBase], Evaluator],
        runtime_silences: RuntimeSilences | None = None,
        snapshots: bool = True,
    ) -> RulesConfig:
        rules = list(settings.rules)
        alerting = settings.alerting
        return cls(
            evaluators=lambda: [evaluator_for(rule) for rule in rules],
            reads=tuple((r.window, tuple(r.cells_read().values())) for r in rules),
            policies=tuple(Policy.of(r, alerting) for r in rules),
            rule_types={r.name: r.type for r in rules},
            inhibitions=tuple(Inhibition.configured(i) for i in alerting.inhibit),
            silences=tuple(Silence.configured(s) for s in alerting.silences),
            group_wait_ms=alerting.group_wait,
            group_wait_by_target={
                name: t.group_wait
                for name, t in settings.notify.items()
                if t.group_wait is not None
            },
            resolved_retention_ms=alerting.resolved_retention,
            allowed_lateness=settings.time.allowed_lateness,
            extra_dims=tuple(settings.aggregation.extra_dims),
            runtime_silences=runtime_silences,
            snapshots=snapshots,
        )


class RulesStage(StatefulLogic[WindowMetrics, RulesOutput, bytes]):
    """Evaluates the rules on each emission; see the module docstring."""

    def __init__(self, config: RulesConfig, stats: FlowStats, resume: bytes | None = None) -> None:
        self.config = config
        self.stats = stats
        self._selector = CellSelector(config.reads)
        if resume is None:
            self.from_state(
                RulesState(alerts={}, evaluators={}, groups={}, inhibiting={}, clock=-math.inf)
            )
        else:
            self.from_state(decode_state(RulesState, resume))

    def to_state(self) -> RulesState:
        return RulesState(
            alerts=self.lifecycle.alerts,
            evaluators={e.rule: e for e in self.evaluators},
            groups=self.grouper.groups,
            inhibiting=self.inhibitor.firing,
            clock=self.clock,
        )

    def from_state(self, state: RulesState) -> None:
        config = self.config
        fresh = {e.rule: e for e in config.evaluators()}
        kept = {**fresh, **{k: v for k, v in state.evaluators.items() if k in fresh}}
        self.evaluators = [kept[p.rule] for p in config.policies]
        # How each evaluator is asked, decided once (a runtime protocol check is slow).
        self._as_block = [e if isinstance(e, BlockEvaluator) else None for e in self.evaluators]
        self._as_sides = [e if isinstance(e, SidesEvaluator) else None for e in self.evaluators]
        self._forgetting = [e for e in self.evaluators if isinstance(e, Forgetting)]
        self.lifecycle = Lifecycle(config.policies, config.resolved_retention_ms, state.alerts)
        self.grouper = Grouper(config.group_wait_ms, config.group_wait_by_target, state.groups)
        self.inhibitor = Inhibitor(config.inhibitions, config.rule_types, state.inhibiting)
        self.clock = state.clock

    # ---- bytewax hooks -----------------------------------------------------------------

    def on_item(self, value: WindowMetrics) -> tuple[list[RulesOutput], bool]:
        out: list[RulesOutput] = []
        for group in value.groups():
            at = value.event_time(group.end, self.config.allowed_lateness)
            if at == -math.inf:
                continue  # before every partition was heard from: no event time yet
            previous, self.clock = self.clock, max(self.clock, at)
            now = int(self.clock)
            out.extend(self._evaluate(value, group, now))
            if math.isinf(previous) or now // FORGET_EVERY_MS != int(previous) // FORGET_EVERY_MS:
                self.lifecycle.forget_expired(now)
                for forgetting in self._forgetting:
                    forgetting.forget_expired(now)
        return out, StatefulLogic.RETAIN

    def on_eof(self) -> tuple[list[RulesOutput], bool]:
        """The end of the input: every open group goes out now."""
        notifications = self.grouper.drain()
        self.stats.notifications += len(notifications)
        return list(notifications), StatefulLogic.RETAIN

    def snapshot(self) -> bytes | None:  # type: ignore[override]
        if not self.config.snapshots:
            return None
        return encode_state(self.to_state(), self.stats)

    # ---- evaluation --------------------------------------------------------------------

    def _evaluate(self, batch: WindowMetrics, group: WindowGroup, now: int) -> list[RulesOutput]:
        masks = self._selector.masks(batch, group.window, group.rows)
        present = [m for m in masks if m is not None]
        if not present:
            return self._emit([], [], now)
        union = np.logical_or.reduce(present)
        block = WindowColumns(batch, group.window, group.start, group.end, group.rows[union])
        # Rules with equal reads (`CellSelector.read_keys`) share one pick of the block's
        # cells, its columns and dims keys.
        taken: dict[tuple[int, ...], tuple[np.ndarray, CellBlock]] = {}
        transitions: list[Transition] = []
        actions: list[Action] = []
        for index, (evaluator, mask) in enumerate(zip(self.evaluators, masks, strict=True)):
            if mask is None:
                continue
            reads = self._selector.read_keys[index]
            shared = taken.get(reads)
            if shared is None:
                picked = np.flatnonzero(mask[union])
                shared = taken[reads] = (picked, block.take(picked))
            picked, cells = shared
            if not len(picked):
                continue
            as_block, as_sides = self._as_block[index], self._as_sides[index]
            if as_block is not None:
                evaluations = self._changing(as_block, cells, now)
            elif as_sides is not None:
                sides = [hit[union][picked] for hit in self._selector.selected[index]]
                evaluations = as_sides.evaluate_block(cells, sides, now)
            else:
                evaluations = evaluator.evaluate(block.cells(picked.tolist()), now)
            for evaluation in in_cell_order(evaluations):
                for transition in self.lifecycle.observe(evaluator.rule, evaluation):
                    transitions.append(transition)
                    if transition.action:
                        actions.append(_action(transition, evaluation))
        return self._emit(transitions, actions, now)

    def _changing(self, evaluator: BlockEvaluator, block: CellBlock, now: int) -> list[Evaluation]:
        """A block rule's evaluations that can change an alert: where the condition holds,
        and any evaluated cell that has an alert (:meth:`Lifecycle.alerted`). The rest (a
        thin cell's inconclusive result, a healthy cell's FALSE) never become records, nor
        does a firing alert's condition that still holds with no repeat due
        (:meth:`Lifecycle.hold_quietly` notes it)."""
        verdicts = evaluator.judge_block(block, now)
        outcomes = verdicts.outcomes
        asked = outcomes == TRUE
        if self.lifecycle.may_have_alerts(evaluator.rule):
            keys = block.keys
            holding = np.flatnonzero(asked)
            quiet = self.lifecycle.hold_quietly(
                evaluator.rule, [keys[i] for i in holding.tolist()], now
            )
            others = np.flatnonzero(~asked & (outcomes != NOT_EVALUATED))
            alerted = self.lifecycle.alerted(evaluator.rule, [keys[i] for i in others.tolist()])
            asked[others[np.array(alerted, dtype=bool)]] = True
            asked[holding[np.array(quiet, dtype=bool)]] = False
        return verdicts.evaluations(np.flatnonzero(asked))

    def _emit(
        self, transitions: list[Transition], actions: list[Action], now: int
    ) -> list[RulesOutput]:
        """Mute, group and record the transitions of one evaluation; what goes out."""
        silences = list(self.config.silences)
        if self.config.runtime_silences is not None:
            silences.extend(self.config.runtime_silences(now))
        notify, muted = Muting(Silences(silences), self.inhibitor).split(transitions)
        notifications = self.grouper.push(notify, now)
        out: list[RulesOutput] = []
        if transitions:
            keys = [t.idempotency_key for t in transitions]
            muted_keys = {t.idempotency_key for t in muted}
            out.append(alert_rows(transitions, muted_keys, self.config.extra_dims, keys))
        out.extend(notifications)
        out.extend(actions)
        self.stats.alert_transitions += len(transitions)
        self.stats.notifications += len(notifications)
        self.stats.actions += len(actions)
        return out


def _action(transition: Transition, evaluation: Evaluation) -> Action:
    evidence = dict(evaluation.evidence or {})
    assert transition.action is not None
    return Action(
        kind=transition.action,
        rule=transition.rule,
        fingerprint=transition.fingerprint,
        episode=transition.episode,
        event_time=transition.event_time,
        dims=transition.dims,
        evidence=evidence,
        from_version=_text(evidence.get("from_version")),
        to_version=_text(evidence.get("to_version")),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
