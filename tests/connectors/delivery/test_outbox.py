"""The outbox sink over real HTTP: it never waits for the network in `write_batch`, its
snapshot holds every delivery without a final outcome, a sink resumed from that snapshot
sends each again under the same key (the receiver accepts each transition exactly once),
and `close()` returns only when every delivery is delivered or recorded as failed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from connectors.delivery.outbox import OutboxPartition, OutboxSink, OutboxState
from connectors.delivery.records import Delivery, DeliveryOutcome, DeliveryStatus
from connectors.delivery.targets import DeliveryFormat, DeliveryTarget
from operators.rules.alerts import AlertState, Notification
from operators.snapshots import StateFormatError
from tests.connectors.delivery.factories import notification, target, transition
from tests.connectors.delivery.receiver import Answer, Receiver

# A receiver that is down for good (its port refuses connections): what the crashed
# process was sending to. Its slow retries keep deliveries pending until stopped.
STUCK: dict[str, Any] = {"max_attempts": 1000, "backoff_initial_s": 1.0, "backoff_max_s": 1.0}


class Outcomes:
    """The `on_outcome` callback: what the wiring would write to ClickHouse."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[DeliveryOutcome] = []

    def __call__(self, outcome: DeliveryOutcome) -> None:
        with self.lock:
            self.items.append(outcome)

    def by_key(self) -> dict[str, DeliveryOutcome]:
        with self.lock:
            return {o.key: o for o in self.items}


@pytest.fixture
def dead_url() -> Iterator[str]:
    r = Receiver().start()
    r.stop()
    yield r.url


def _partition(
    targets: dict[str, DeliveryTarget],
    outcomes: Outcomes,
    resume: OutboxState | None = None,
    **settings: float,
) -> OutboxPartition:
    sink = OutboxSink(targets, outcomes, **settings)  # type: ignore[arg-type]
    part = sink.build_part("deliver", sink.list_parts()[0], resume)
    assert isinstance(part, OutboxPartition)
    return part


def _abandon(part: OutboxPartition) -> None:
    """What a crash does to the old process's sender threads: ends them."""
    part.outbox.drain(0)


def _three() -> list[Notification]:
    return [notification(transition(segment=s)) for s in ("checkout", "search", "ads")]


def test_a_resumed_outbox_sends_each_pending_delivery_once_under_the_same_key(
    receiver: Receiver, dead_url: str
) -> None:
    first, second, third = _three()
    before = Outcomes()
    crashed = _partition({"ops": target(dead_url, **STUCK)}, before)
    crashed.write_batch([first, second])  # returns at once although nothing is reachable
    state = crashed.snapshot()
    assert [d.key for d in state.pending] == [
        first.idempotency_key,
        second.idempotency_key,
    ]
    _abandon(crashed)

    after = Outcomes()
    resumed = _partition({"ops": target(receiver.url)}, after, resume=state)
    resumed.write_batch([third])  # produced again by the replay after the snapshot
    resumed.close()

    keys = {n.idempotency_key for n in (first, second, third)}
    assert dict(receiver.accepted) == dict.fromkeys(keys, 1)
    assert {k: o.status for k, o in after.by_key().items()} == dict.fromkeys(
        keys, DeliveryStatus.DELIVERED
    )
    assert resumed.snapshot().pending == ()


def test_a_delivery_acknowledged_after_the_snapshot_is_resent_and_deduped_by_key(
    receiver: Receiver,
) -> None:
    receiver.answer(Answer(500, {"Retry-After": "0.3"}))
    (n, *_) = _three()
    part = _partition({"ops": target(receiver.url)}, Outcomes())
    part.write_batch([n])
    state = part.snapshot()  # taken while the first attempt's 500 holds it pending
    part.close()
    assert receiver.accepted[n.idempotency_key] == 1

    resumed = _partition({"ops": target(receiver.url)}, Outcomes(), resume=state)
    resumed.close()
    assert receiver.accepted[n.idempotency_key] == 1
    assert receiver.duplicates[n.idempotency_key] == 1  # re-sent: the receiver dedups


def test_exactly_one_accepted_delivery_per_transition_key_through_retries(
    receiver: Receiver,
) -> None:
    receiver.answer(Answer(500), Answer(429, {"Retry-After": "0"}), Answer(503))
    notes = _three()
    outcomes = Outcomes()
    part = _partition({"ops": target(receiver.url)}, outcomes)
    part.write_batch(notes[:2])
    part.write_batch(notes[2:] + notes[:1])  # a repeat while still pending is ignored
    part.close()
    keys = [n.idempotency_key for n in notes]
    assert sorted(receiver.accepted) == sorted(keys)
    assert set(receiver.accepted.values()) == {1}
    assert not receiver.duplicates
    assert sorted(outcomes.by_key()) == sorted(keys)
    assert sum(o.attempts for o in outcomes.items) == 6  # 3 answered with errors, 3 accepted


def test_close_records_what_is_undelivered_at_the_deadline_as_failed(dead_url: str) -> None:
    outcomes = Outcomes()
    part = _partition({"ops": target(dead_url, **STUCK)}, outcomes, drain_timeout_s=0.3)
    part.write_batch(_three())
    part.close()
    failed = list(outcomes.items)
    assert len(failed) == 3
    assert {o.status for o in failed} == {DeliveryStatus.FAILED}
    assert all("drain deadline (0.3s)" in (o.error or "") for o in failed)
    assert part.outbox.pending() == ()


def test_a_permanent_failure_is_reported_with_its_error_and_leaves_the_outbox(
    receiver: Receiver,
) -> None:
    receiver.answer(Answer(400, body=b"bad request"))
    outcomes = Outcomes()
    part = _partition({"ops": target(receiver.url)}, outcomes)
    (n, *_) = _three()
    part.write_batch([n])
    part.close()
    (outcome,) = outcomes.items
    assert outcome.status is DeliveryStatus.FAILED
    assert (outcome.http_status, outcome.attempts, outcome.error) == (
        400,
        1,
        "HTTP 400: bad request",
    )


def test_pagerduty_gets_trigger_then_resolve_for_the_same_dedup_key_and_skips_pending(
    receiver: Receiver,
) -> None:
    receiver.secret = None
    firing = transition(AlertState.FIRING)
    # The trigger is retried (twice, the second wait 0.3 s); the resolve must still follow it.
    receiver.answer_for(firing.idempotency_key, Answer(500), Answer(503, {"Retry-After": "0.3"}))
    outcomes = Outcomes()
    pd = target(receiver.url, DeliveryFormat.PAGERDUTY)
    part = _partition({"ops": pd}, outcomes)
    pending = transition(AlertState.PENDING)
    part.write_batch([notification(pending)])
    part.write_batch([notification(firing)])
    part.write_batch([notification(transition(AlertState.RESOLVED))])
    part.close()
    events = receiver.bodies()
    assert [(e["event_action"], e["dedup_key"]) for e in events] == [
        ("trigger", "accuracy-floor/m1/checkout"),
        ("resolve", "accuracy-floor/m1/checkout"),
    ]
    skipped = outcomes.by_key()[pending.idempotency_key]
    assert skipped.status is DeliveryStatus.SKIPPED
    assert skipped.error == "format pagerduty does not carry pending"


def test_an_unknown_target_and_a_full_outbox_are_recorded_as_failed(dead_url: str) -> None:
    outcomes = Outcomes()
    part = _partition({"ops": target(dead_url, **STUCK)}, outcomes, max_pending=1)
    first, second, third = _three()
    part.write_batch([first, second, Notification("pager", third.transitions)])
    errors = {o.key: o.error for o in outcomes.items}
    assert errors == {
        second.idempotency_key: "outbox full (1 pending)",
        third.idempotency_key: "unknown target 'pager'",
    }
    assert [d.key for d in part.snapshot().pending] == [first.idempotency_key]
    _abandon(part)


def test_a_snapshot_of_another_kind_is_refused() -> None:
    sink = OutboxSink({}, Outcomes())
    with pytest.raises(StateFormatError, match="delivery-outbox v1"):
        sink.build_part("deliver", "outbox", ("not", "a state"))  # type: ignore[arg-type]


def test_outbox_state_pickles_as_plain_data() -> None:
    import pickle

    state = OutboxState((Delivery("ops", "k", notification()),))
    assert pickle.loads(pickle.dumps(state)) == state


# ---- a real Bytewax dataflow ------------------------------------------------------------


def _by_target(n: Notification) -> str:
    return n.target


def _flow(items: list[Any], targets: dict[str, DeliveryTarget], outcomes: Outcomes) -> Dataflow:
    flow = Dataflow("delivery_test")
    notes = op.input("in", flow, TestingSource(items))
    keyed = op.key_on("by_target", notes, _by_target)
    op.output("deliver", keyed, OutboxSink(targets, outcomes))
    return flow


def test_a_bounded_run_returns_only_after_every_notification_is_delivered(
    receiver: Receiver,
) -> None:
    receiver.answer(Answer(500), Answer(503, {"Retry-After": "0.2"}))
    notes = _three()
    outcomes = Outcomes()
    run_main(_flow(list(notes), {"ops": target(receiver.url)}, outcomes))
    keys = {n.idempotency_key for n in notes}
    assert set(receiver.accepted) == keys
    assert {o.status for o in outcomes.items} == {DeliveryStatus.DELIVERED}
    assert {o.key for o in outcomes.items} == keys


def test_a_dataflow_aborted_with_deliveries_pending_delivers_them_after_resume(
    receiver: Receiver, dead_url: str, tmp_path: Path
) -> None:
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    first, second, third = _three()
    items: list[Any] = [first, second, TestingSource.ABORT(), third]
    # An abort closes the sink (a SIGKILL would not): the drain gives up at once and
    # records them as failed; the last committed snapshot still holds them.
    before = Outcomes()
    flow = Dataflow("delivery_abort_test")
    keyed = op.key_on("by_target", op.input("in", flow, TestingSource(items)), _by_target)
    stuck = OutboxSink({"ops": target(dead_url, **STUCK)}, before, drain_timeout_s=0.01)
    op.output("deliver", keyed, stuck)
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)  # aborts
    assert {o.status for o in before.items} == {DeliveryStatus.FAILED}
    assert not receiver.requests

    after = Outcomes()
    flow = Dataflow("delivery_abort_test")
    keyed = op.key_on("by_target", op.input("in", flow, TestingSource(items)), _by_target)
    op.output("deliver", keyed, OutboxSink({"ops": target(receiver.url)}, after))
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)

    keys = {n.idempotency_key for n in (first, second, third)}
    assert dict(receiver.accepted) == dict.fromkeys(keys, 1)
    assert {o.key: o.status for o in after.items} == dict.fromkeys(keys, DeliveryStatus.DELIVERED)
