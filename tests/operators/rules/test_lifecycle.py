"""The alert lifecycle, grouping and muting, in event time: `for`, `keep_firing_for`,
`repeat_interval`, resolution, episodes, inconclusive results, replay determinism and
resuming from a pickle mid-stream; 40 segments in one notification; inhibition and
silences."""

from __future__ import annotations

import base64
import pickle
import random
import subprocess
import sys
from pathlib import Path

from config.settings import load_settings
from operators.rules.alerts import AlertState, Notification, Severity, Transition
from operators.rules.grouping import Grouper
from operators.rules.lifecycle import (
    Evaluation,
    Lifecycle,
    Outcome,
    Policy,
    dims_of,
    fingerprint,
)
from operators.rules.silences import Inhibition, Inhibitor, Muting, Silence, Silences
from tests.conftest import ROOT

S, M = 1000, 60_000
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
DIMS = dims_of({"model_id": "m1", "segment": "eu"})
FLOOR = Policy("accuracy-floor", "1m", for_ms=2 * M, targets=("ops",))
CANARY = Policy("canary-thumbs-down", "1m", targets=("ops",), action="rollback")


def ev(
    outcome: Outcome | str, t: int, dims: tuple[tuple[str, str], ...] = DIMS, value: float = 0.5
) -> Evaluation:
    return Evaluation(
        dims, Outcome(outcome), t, t - M, t, value=value, threshold=0.8, samples=40,
        reason=f"accuracy {value} < 0.8",
    )  # fmt: skip


def states(transitions: list[Transition]) -> list[tuple[str, str]]:
    return [(t.previous.value, t.state.value) for t in transitions]


def test_fingerprints_are_stable_across_processes_and_ignore_dims_order() -> None:
    fp = fingerprint("accuracy-floor", {"model_id": "m1", "segment": "eu"})
    assert fp == "294ba00658e525b3"  # a changed encoding would orphan every stored alert
    assert fingerprint("accuracy-floor", {"segment": "eu", "model_id": "m1"}) == fp
    assert fingerprint("accuracy-floor", DIMS) == fp
    assert fingerprint("accuracy-floor", {"model_id": "m1", "segment": "us"}) != fp
    assert fingerprint("canary-thumbs-down", DIMS) != fp
    code = (
        "from operators.rules.lifecycle import fingerprint as f; "
        "print(f('accuracy-floor', {'segment': 'eu', 'model_id': 'm1'}))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout.strip()  # fmt: skip
        assert out == fp


def test_for_holds_pending_until_the_condition_held_that_long() -> None:
    life = Lifecycle([FLOOR])
    first = life.observe("accuracy-floor", ev("true", T0))
    assert states(first) == [("inactive", "pending")] and first[0].targets == ()
    assert life.observe("accuracy-floor", ev("true", T0 + M)) == []
    assert life.observe("accuracy-floor", ev("true", T0 + 2 * M - 1)) == []
    (firing,) = life.observe("accuracy-floor", ev("true", T0 + 2 * M))
    assert (firing.previous, firing.state, firing.targets) == (
        AlertState.PENDING, AlertState.FIRING, ("ops",),
    )  # fmt: skip
    assert firing.episode == first[0].episode == T0 and firing.event_time == T0 + 2 * M
    assert (firing.value, firing.threshold, firing.samples) == (0.5, 0.8, 40)
    assert firing.window == "1m" and firing.severity is Severity.WARNING
    assert firing.action is None and firing.idempotency_key == f"{firing.fingerprint}:{T0}:firing"


def test_a_pending_alert_that_clears_resolves_without_a_notification() -> None:
    life = Lifecycle([FLOOR])
    life.observe("accuracy-floor", ev("true", T0))
    (resolved,) = life.observe("accuracy-floor", ev("false", T0 + M))
    assert states([resolved]) == [("pending", "resolved")] and resolved.targets == ()
    # The condition again: a new episode, and `for` counts from the new start.
    (pending,) = life.observe("accuracy-floor", ev("true", T0 + 2 * M))
    assert pending.episode == T0 + 2 * M > resolved.episode
    assert life.observe("accuracy-floor", ev("true", T0 + 3 * M)) == []


def test_without_for_an_alert_fires_at_once_and_asks_for_its_action_once_per_episode() -> None:
    life = Lifecycle([CANARY])
    (firing,) = life.observe("canary-thumbs-down", ev("true", T0))
    assert states([firing]) == [("inactive", "firing")] and firing.action == "rollback"
    assert life.observe("canary-thumbs-down", ev("true", T0 + M)) == []
    (resolved,) = life.observe("canary-thumbs-down", ev("false", T0 + 2 * M))
    assert states([resolved]) == [("firing", "resolved")] and resolved.action is None
    assert resolved.targets == ("ops",)  # a resolved notification when it clears
    (again,) = life.observe("canary-thumbs-down", ev("true", T0 + 3 * M))
    assert states([again]) == [("resolved", "firing")] and again.action == "rollback"
    assert again.episode == T0 + 3 * M != firing.episode
    keys = {t.idempotency_key for t in (firing, resolved, again)}
    assert len(keys) == 3


def test_keep_firing_for_holds_a_firing_alert_after_the_condition_last_held() -> None:
    life = Lifecycle([Policy("r", "1m", keep_firing_for_ms=2 * M, targets=("ops",))])
    life.observe("r", ev("true", T0))
    life.observe("r", ev("true", T0 + M))  # last held here
    assert life.observe("r", ev("false", T0 + 2 * M)) == []
    assert life.observe("r", ev("false", T0 + 3 * M - 1)) == []
    assert life.state_of("r", DIMS) is AlertState.FIRING
    (resolved,) = life.observe("r", ev("false", T0 + 3 * M))
    assert resolved.state is AlertState.RESOLVED and resolved.event_time == T0 + 3 * M
    # Holding again while kept firing continues the same episode.
    life2 = Lifecycle([Policy("r", "1m", keep_firing_for_ms=2 * M)])
    first = life2.observe("r", ev("true", T0))
    life2.observe("r", ev("false", T0 + M))
    assert life2.observe("r", ev("true", T0 + 2 * M)) == []
    assert life2.observe("r", ev("false", T0 + 3 * M)) == []
    (end,) = life2.observe("r", ev("false", T0 + 4 * M))
    assert end.episode == first[0].episode


def test_repeat_interval_sends_a_firing_alert_again_on_event_time() -> None:
    life = Lifecycle([Policy("r", "1m", repeat_interval_ms=60 * M, targets=("ops",),
                             action="scale")])  # fmt: skip
    (firing,) = life.observe("r", ev("true", T0))
    assert life.observe("r", ev("true", T0 + 59 * M)) == []
    (repeat,) = life.observe("r", ev("true", T0 + 60 * M))
    assert states([repeat]) == [("firing", "firing")] and repeat.targets == ("ops",)
    assert repeat.action is None  # the action was asked for once, with the first
    assert repeat.episode == firing.episode
    assert repeat.idempotency_key != firing.idempotency_key
    assert life.observe("r", ev("true", T0 + 119 * M)) == []
    assert len(life.observe("r", ev("true", T0 + 120 * M))) == 1
    # No repeats when repeat_interval is 0.
    quiet = Lifecycle([Policy("r", "1m")])
    quiet.observe("r", ev("true", T0))
    assert quiet.observe("r", ev("true", T0 + 1000 * M)) == []


def test_inconclusive_without_an_alert_records_nothing() -> None:
    """No state, or a resolved alert: an inconclusive result is no row, no state kept."""
    life = Lifecycle([FLOOR, CANARY])
    assert life.observe("canary-thumbs-down", ev("inconclusive", T0)) == []
    assert life.alerts == {}  # nothing kept for a cell that never held
    assert life.state_of("canary-thumbs-down", DIMS) is AlertState.INACTIVE
    assert life.observe("canary-thumbs-down", ev("false", T0 + M)) == []
    (fired,) = life.observe("canary-thumbs-down", ev("true", T0 + 2 * M))
    (resolved,) = life.observe("canary-thumbs-down", ev("false", T0 + 3 * M))
    assert resolved.state is AlertState.RESOLVED
    assert life.observe("canary-thumbs-down", ev("inconclusive", T0 + 4 * M)) == []
    assert life.state_of("canary-thumbs-down", DIMS) is AlertState.RESOLVED
    # The next episode starts as if the inconclusive result had not been seen.
    (again,) = life.observe("canary-thumbs-down", ev("true", T0 + 5 * M))
    assert again.state is AlertState.FIRING and again.episode > fired.episode


def test_inconclusive_is_recorded_once_per_spell_of_an_active_alert_and_never_acts() -> None:
    life = Lifecycle([FLOOR, CANARY])
    # Pending: `for` keeps counting through an inconclusive spell; nothing resolves.
    life.observe("accuracy-floor", ev("true", T0))
    (spell,) = life.observe("accuracy-floor", ev("inconclusive", T0 + M))
    assert (spell.previous, spell.state) == (AlertState.PENDING, AlertState.INCONCLUSIVE)
    assert spell.action is None and spell.targets == ()  # recorded, not notified by default
    assert life.state_of("accuracy-floor", DIMS) is AlertState.PENDING
    (firing,) = life.observe("accuracy-floor", ev("true", T0 + 2 * M))
    assert firing.state is AlertState.FIRING
    # Firing: inconclusive does not resolve it; one row per spell.
    (first,) = life.observe("accuracy-floor", ev("inconclusive", T0 + 3 * M))
    assert (first.previous, first.state) == (AlertState.FIRING, AlertState.INCONCLUSIVE)
    assert life.observe("accuracy-floor", ev("inconclusive", T0 + 30 * M)) == []
    assert life.state_of("accuracy-floor", DIMS) is AlertState.FIRING
    life.observe("accuracy-floor", ev("true", T0 + 31 * M))
    (second,) = life.observe("accuracy-floor", ev("inconclusive", T0 + 32 * M))
    assert second.idempotency_key != first.idempotency_key  # a new spell

    loud = Lifecycle([Policy("r", "1m", targets=("ops",), action="rollback",
                             notify_inconclusive=True)])  # fmt: skip
    assert loud.observe("r", ev("inconclusive", T0)) == []
    (fired,) = loud.observe("r", ev("true", T0))
    assert fired.action == "rollback"
    (told,) = loud.observe("r", ev("inconclusive", T0 + M))
    assert told.targets == ("ops",) and told.action is None


def test_resolved_alerts_are_forgotten_and_new_episodes_stay_unique() -> None:
    life = Lifecycle([CANARY], resolved_retention_ms=10 * M)
    (first,) = life.observe("canary-thumbs-down", ev("true", T0))
    life.observe("canary-thumbs-down", ev("false", T0 + M))
    assert life.forget_expired(T0 + 11 * M - 1) == 0
    assert life.forget_expired(T0 + 11 * M) == 1 and life.alerts == {}
    (again,) = life.observe("canary-thumbs-down", ev("true", T0 + 12 * M))
    assert again.episode > first.episode and again.action == "rollback"
    assert again.idempotency_key != first.idempotency_key
    # A firing alert is never forgotten.
    assert life.forget_expired(T0 + 1000 * M) == 0 and len(life.alerts) == 1


def random_evaluations(seed: int, count: int = 2000) -> list[tuple[str, Evaluation]]:
    """Several alerts of two rules, conditions that flap, inconclusive results."""
    rng = random.Random(seed)
    cells = [dims_of({"model_id": f"m{i % 3}", "segment": f"s{i}"}) for i in range(6)]
    out = []
    for step in range(count):
        rule = rng.choice(["accuracy-floor", "canary-thumbs-down"])
        outcome = rng.choices(["true", "false", "inconclusive"], [5, 4, 1])[0]
        out.append((rule, ev(outcome, T0 + step * 10 * S, rng.choice(cells))))
    return out


class Loop:
    """Lifecycle → muting → grouping, as the rules stage will chain them."""

    def __init__(self) -> None:
        policies = [
            Policy("accuracy-floor", "1m", for_ms=M, keep_firing_for_ms=M,
                   repeat_interval_ms=20 * M, targets=("ops", "pager")),
            Policy("canary-thumbs-down", "1m", keep_firing_for_ms=5 * M, targets=("ops",),
                   action="rollback"),
        ]  # fmt: skip
        self.life = Lifecycle(policies, resolved_retention_ms=5 * M)
        inhibit = Inhibition(frozenset(), frozenset({"canary"}), frozenset(),
                             frozenset({"threshold"}), ("model_id",))  # fmt: skip
        types = {"accuracy-floor": "threshold", "canary-thumbs-down": "canary"}
        self.muting = Muting(Silences(), Inhibitor([inhibit], types))
        self.grouper = Grouper(30 * S, {"pager": 0})

    def step(
        self, rule: str, evaluation: Evaluation
    ) -> tuple[list[Transition], list[Notification]]:
        transitions = self.life.observe(rule, evaluation)
        notify, _ = self.muting.split(transitions)
        self.life.forget_expired(evaluation.event_time)
        return transitions, self.grouper.push(notify, evaluation.event_time)


def run(loop: Loop, evaluations: list[tuple[str, Evaluation]]) -> list[object]:
    out: list[object] = []
    for rule, evaluation in evaluations:
        transitions, notifications = loop.step(rule, evaluation)
        out.extend(transitions)
        out.extend(notifications)
    return out


def test_a_replay_gives_the_same_transitions_and_a_pickled_state_resumes_exactly() -> None:
    evaluations = random_evaluations(seed=11)
    uninterrupted = run(Loop(), evaluations)
    assert run(Loop(), evaluations) == uninterrupted  # the same inputs, the same outputs
    kinds = {(t.previous, t.state) for t in uninterrupted if isinstance(t, Transition)}
    assert (AlertState.PENDING, AlertState.FIRING) in kinds
    assert (AlertState.FIRING, AlertState.RESOLVED) in kinds
    assert (AlertState.FIRING, AlertState.FIRING) in kinds  # repeats happened
    assert any(isinstance(n, Notification) and len(n.transitions) > 1 for n in uninterrupted)

    # Resume where every part has state: open alerts, a firing canary, an open group.
    loop, half = Loop(), 1021
    resumed = run(loop, evaluations[:half])
    assert loop.life.alerts and any(loop.muting.inhibitor.firing.values()) and loop.grouper.groups
    # A snapshot is the plain state of each part; a new process builds the parts from the
    # settings and hands the state back.
    snapshot = pickle.dumps((loop.life.alerts, loop.muting.inhibitor.firing, loop.grouper.groups))
    alerts, firing, groups = pickle.loads(snapshot)
    fresh = Loop()
    fresh.life.alerts, fresh.muting.inhibitor.firing, fresh.grouper.groups = alerts, firing, groups
    resumed += run(fresh, evaluations[half:])
    assert resumed == uninterrupted
    assert len(snapshot) < 2000  # small: a few records, not a history


def firing_in(segment: str, t: int, rule: str = "seg-floor", model: str = "m1") -> Transition:
    life = Lifecycle([Policy(rule, "1m", targets=("ops",))])
    (transition,) = life.observe(rule, ev("true", t, dims_of({"model_id": model,
                                                               "segment": segment})))  # fmt: skip
    return transition


def test_one_incident_across_40_segments_is_one_notification() -> None:
    life = Lifecycle([Policy("seg-floor", "1m", targets=("ops",)),
                      Policy("other", "1m", targets=("slack",))])  # fmt: skip
    grouper = Grouper(30 * S)
    sent: list[Notification] = []
    for i in range(40):  # the segments' alerts fire over 20 s of event time
        t = T0 + i * 500
        transitions = life.observe("seg-floor", ev("true", t, dims_of({"segment": f"s{i}"})))
        sent += grouper.push(transitions, t)
    sent += grouper.push(life.observe("other", ev("true", T0 + 25 * S)), T0 + 25 * S)
    assert sent == []  # nothing before group_wait has passed
    assert grouper.push([], T0 + 30 * S - 1) == []
    (ops,) = grouper.push([], T0 + 30 * S)
    assert ops.target == "ops" and len(ops.transitions) == 40
    assert [dict(t.dims)["segment"] for t in ops.transitions] == [f"s{i}" for i in range(40)]
    assert len({t.idempotency_key for t in ops.transitions}) == 40
    # A transition after the group went out opens the next group.
    resolved = life.observe("seg-floor", ev("false", T0 + 31 * S, dims_of({"segment": "s0"})))
    assert grouper.push(resolved, T0 + 31 * S) == []
    (slack, ops2) = grouper.push([], T0 + 61 * S)
    assert (slack.target, len(slack.transitions)) == ("slack", 1)
    assert ops2.transitions == tuple(resolved)
    # group_wait 0 sends at once; drain sends what is open at the end of a bounded run.
    now = Grouper(0).push([firing_in("s1", T0)], T0)
    assert [len(n.transitions) for n in now] == [1]
    open_ = Grouper(30 * S)
    assert open_.push([firing_in("s1", T0)], T0) == []
    assert [n.target for n in open_.drain()] == ["ops"] and open_.groups == {}


def test_transitions_without_targets_are_not_grouped() -> None:
    life = Lifecycle([FLOOR])
    pending = life.observe("accuracy-floor", ev("true", T0))
    grouper = Grouper(0)
    assert grouper.push(pending, T0) == [] and grouper.groups == {}


def inhibitor() -> Muting:
    inhibit = Inhibition(frozenset(), frozenset({"canary"}), frozenset(),
                         frozenset({"threshold"}), ("model_id",))  # fmt: skip
    types = {"canary-thumbs-down": "canary", "seg-floor": "threshold"}
    return Muting(Silences(), Inhibitor([inhibit], types))


def test_a_firing_canary_mutes_the_threshold_alerts_of_the_same_model() -> None:
    muting = inhibitor()
    canary = Lifecycle([CANARY])
    m1 = dims_of({"model_id": "m1"})
    fired = canary.observe("canary-thumbs-down", ev("true", T0, m1))
    # In the same batch as the canary: muted already.
    same_batch = [firing_in("s1", T0), *fired, firing_in("s2", T0, model="m2")]
    notify, muted = muting.split(same_batch)
    assert [t.rule for t in muted] == ["seg-floor"] and dict(muted[0].dims)["model_id"] == "m1"
    assert {t.rule for t in notify} == {"canary-thumbs-down", "seg-floor"}
    assert [dict(t.dims)["model_id"] for t in notify if t.rule == "seg-floor"] == ["m2"]
    # Once the canary resolves, the threshold alerts of m1 notify again.
    resolved = canary.observe("canary-thumbs-down", ev("false", T0 + M, m1))
    notify, muted = muting.split([*resolved, firing_in("s3", T0 + M)])
    assert muted == [] and len(notify) == 2


def test_silences_mute_until_their_event_time_expiry() -> None:
    until = T0 + 10 * M
    silences = Silences([Silence.of({"rule": "seg-floor", "model_id": ["m1", "m3"]}, until)])
    muting = Muting(silences, Inhibitor([], {}))
    notify, muted = muting.split([firing_in("s1", T0), firing_in("s1", T0, model="m2"),
                                  firing_in("s1", T0, rule="other"),
                                  firing_in("s1", until - 1, model="m3")])  # fmt: skip
    assert [(t.rule, dict(t.dims)["model_id"]) for t in muted] == [
        ("seg-floor", "m1"), ("seg-floor", "m3"),
    ]  # fmt: skip
    assert len(notify) == 2
    notify, muted = muting.split([firing_in("s1", until)])  # expired at its event time
    assert muted == [] and len(notify) == 1
    # Added at run time (pulse silence), pruned once expired.
    silences.add(Silence.of({"segment": "*"}, until + M, "maintenance"))
    assert muting.split([firing_in("s9", until)])[1] != []
    assert silences.prune(until) == 1 and silences.prune(until + M) == 1


def test_silences_and_inhibition_from_the_settings(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text((ROOT / "config" / "rules.example.yaml").read_text() + (
        "  silences:\n"
        "    - {matchers: {rule: accuracy-floor, segment: '*'}, until: '2025-12-01T00:10:00Z'}\n"
    ))  # fmt: skip
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef").decode()
    s = load_settings(file, environ={"OPS_WEBHOOK_SECRET": secret})
    (silence,) = [Silence.configured(x) for x in s.alerting.silences]
    assert silence.until == T0 + 10 * M
    (inhibition,) = [Inhibition.configured(x) for x in s.alerting.inhibit]
    types = {rule.name: rule.type for rule in s.rules}
    policies = [Policy.of(rule, s.alerting) for rule in s.rules]
    floor = next(p for p in policies if p.rule == "accuracy-floor")
    assert (floor.for_ms, floor.targets, floor.repeat_interval_ms) == (2 * M, ("ops",), 4 * 60 * M)
    assert next(p for p in policies if p.rule == "latency-spike").severity is Severity.CRITICAL
    muting = Muting(Silences([silence]), Inhibitor([inhibition], types))
    life = Lifecycle(policies)
    m1 = dims_of({"model_id": "m1"})
    fired = life.observe("canary-thumbs-down", ev("true", T0 + 20 * M, m1))
    cell = dims_of({"model_id": "m1", "model_version": "v2", "segment": "eu", "endpoint": "x"})
    life.observe("accuracy-floor", ev("true", T0, cell))
    (silenced,) = life.observe("accuracy-floor", ev("true", T0 + 2 * M, cell))
    assert muting.split([silenced]) == ([], [silenced])
    resolved = life.observe("accuracy-floor", ev("false", T0 + 19 * M, cell))
    assert muting.split(resolved)[0] == resolved  # the silence expired
    life.observe("accuracy-floor", ev("true", T0 + 20 * M, cell))
    (inhibited,) = life.observe("accuracy-floor", ev("true", T0 + 22 * M, cell))
    notify, muted = muting.split([*fired, inhibited])
    assert notify == fired and muted == [inhibited]


def test_fingerprint_is_pinned_across_encodings_and_cached_calls() -> None:
    """Fingerprints are stored in `alerts` rows and outboxes: the value for a rule and
    dims (non-ASCII, quote, backslash, newline) is the one the JSON-based encoding gave,
    whatever the dims' order and however often it is asked (cached)."""
    dims = {"tenant": "acme", "model_id": "m", "segment": 'é"\\\n', "endpoint": "*"}
    for _ in range(2):
        assert fingerprint("accuracy-floor", dims) == "ed1145cc704fbb76"
        assert fingerprint("accuracy-floor", tuple(reversed(dims.items()))) == "ed1145cc704fbb76"
    assert fingerprint("accuracy-floor", {**dims, "segment": "eu"}) != "ed1145cc704fbb76"


def test_a_firing_alert_whose_condition_still_holds_is_held_quietly_as_observe_would() -> None:
    """`hold_quietly` is the stage's shortcut for the commonest evaluation (a firing
    alert's condition still holds, no repeat due): it must leave the lifecycle exactly as
    `observe` leaves it, and decline whenever `observe` would make a transition."""
    quiet_life = Loop().life
    observed_life = Loop().life
    quiet_out: list[Transition] = []
    observed_out: list[Transition] = []
    held = 0
    for rule, evaluation in random_evaluations(seed=5, count=3000):
        observed_out.extend(observed_life.observe(rule, evaluation))
        if evaluation.outcome is Outcome.TRUE:
            (quiet,) = quiet_life.hold_quietly(rule, [evaluation.dims], evaluation.event_time)
            if quiet:
                held += 1
                continue
        quiet_out.extend(quiet_life.observe(rule, evaluation))
        assert quiet_life.alerts == observed_life.alerts
    assert quiet_out == observed_out
    assert quiet_life.alerts == observed_life.alerts
    assert held > 100  # the shortcut was taken, and a repeat or pending one was not
    assert any(t.previous is AlertState.FIRING and t.state is AlertState.FIRING
               for t in observed_out)  # fmt: skip


def test_hold_quietly_declines_when_a_repeat_is_due_or_the_alert_is_pending() -> None:
    life = Lifecycle([Policy("r", "1m", for_ms=2 * M, repeat_interval_ms=10 * M)])
    life.observe("r", ev("true", T0))  # pending
    assert life.hold_quietly("r", [DIMS], T0 + M) == [False]
    assert len(life.observe("r", ev("true", T0 + 2 * M))) == 1  # fires
    assert life.hold_quietly("r", [DIMS], T0 + 3 * M) == [True]
    (record,) = life.alerts.values()
    assert record.last_true == T0 + 3 * M
    assert life.hold_quietly("r", [DIMS], T0 + 12 * M) == [False]  # the repeat is due
    other = dims_of({"model_id": "m2"})
    assert life.hold_quietly("r", [other], T0 + 3 * M) == [False]  # no alert
