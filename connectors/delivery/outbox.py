"""The outbox: a Bytewax sink that takes notifications without ever blocking the flow,
sends them from background threads, and keeps every not-yet-final delivery in its
snapshot so that a crash loses none.

* ``write_batch`` only plans each notification into deliveries (:func:`formats.plan`)
  and appends them to the in-memory outbox; one sender thread per target takes them in
  order (so a `resolve` never overtakes its `trigger`). The outbox is bounded
  (`max_pending`): past it a new delivery gets a `failed` outcome at once ("outbox
  full"), counted and recorded like any failure, instead of blocking aggregation or
  growing without end.
* ``snapshot()`` returns every delivery whose outcome is not final yet, in order, as an
  :class:`OutboxState`. A resume sends all of them again under the same idempotency keys
  (a delivery acknowledged after the last snapshot is sent twice: receivers dedup by
  key). Notifications the flow produces after that snapshot are produced again by the
  replay, since the rules' state is resumed from the same epoch.
* Each delivery ends in one :class:`DeliveryOutcome` (delivered, failed after retries
  with the error, or skipped), handed to `on_outcome` from a sender thread (or the
  worker) before the delivery leaves the outbox; the wiring writes it to ClickHouse and
  counts it. `on_outcome` must be thread-safe and must not raise.
* ``close()`` (the end of a bounded run) drains: it waits until every delivery has a
  final outcome, at most `drain_timeout_s`; whatever is still pending then is cut short
  and recorded as failed, so the run exits only after each notification is delivered or
  recorded as failed.

One partition: notifications are few, and one partition keeps each target's order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from connectors.delivery.formats import plan, request_key
from connectors.delivery.records import Delivery, DeliveryOutcome, DeliveryStatus
from connectors.delivery.sender import Sender
from connectors.delivery.targets import DeliveryTarget
from operators.rules.alerts import Notification
from operators.snapshots import StateFormatError

log = logging.getLogger("pulse.delivery")

OutcomeCallback = Callable[[DeliveryOutcome], None]
PART = "outbox"


@dataclass(frozen=True, slots=True)
class OutboxState:
    """What the outbox sink snapshots: the deliveries without a final outcome, in order."""

    KIND: ClassVar[str] = "delivery-outbox"
    VERSION: ClassVar[int] = 1

    pending: tuple[Delivery, ...]
    version: int = VERSION


class Outbox:
    """The pending deliveries and the threads that send them; thread-safe."""

    def __init__(
        self,
        targets: Mapping[str, DeliveryTarget],
        on_outcome: OutcomeCallback,
        *,
        max_pending: int = 10_000,
    ) -> None:
        self.targets = dict(targets)
        self.on_outcome = on_outcome
        self.max_pending = max_pending
        self._cond = threading.Condition()
        self._pending: dict[tuple[str, str], Delivery] = {}  # insertion order = send order
        self._claimed: set[tuple[str, str]] = set()  # outcome being reported
        self._queues: dict[str, deque[Delivery]] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._senders: dict[str, Sender] = {}
        self._stop = threading.Event()  # cuts retries short (drain deadline)
        self._closed = False

    # ---- called from the dataflow worker -----------------------------------------------

    def add(self, notification: Notification) -> None:
        """Plan `notification` into deliveries and queue them; never blocks on the network."""
        target = self.targets.get(notification.target)
        if target is None:
            orphan = Delivery(notification.target, request_key(notification), notification)
            self._report(orphan, DeliveryStatus.FAILED, f"unknown target {notification.target!r}")
            return
        deliveries, skipped = plan(notification, target)
        if skipped:
            carried = Notification(notification.target, skipped)
            why = f"format {target.format.value} does not carry " + ", ".join(
                sorted({t.state.value for t in skipped})
            )
            self._report(
                Delivery(target.name, request_key(carried), carried), DeliveryStatus.SKIPPED, why
            )
        self.enqueue(deliveries)

    def enqueue(self, deliveries: Iterable[Delivery]) -> None:
        """Queue planned deliveries (a resume re-queues its snapshot this way)."""
        refused: list[tuple[Delivery, str]] = []
        with self._cond:
            for delivery in deliveries:
                slot = (delivery.target, delivery.key)
                if slot in self._pending:
                    continue  # already on its way under this key
                if delivery.target not in self.targets:
                    refused.append((delivery, f"unknown target {delivery.target!r}"))
                elif len(self._pending) >= self.max_pending:
                    refused.append((delivery, f"outbox full ({self.max_pending} pending)"))
                else:
                    self._pending[slot] = delivery
                    self._lane(delivery.target).append(delivery)
            self._cond.notify_all()
        for delivery, why in refused:
            self._report(delivery, DeliveryStatus.FAILED, why)

    def pending(self) -> tuple[Delivery, ...]:
        with self._cond:
            return tuple(self._pending.values())

    def drain(self, timeout_s: float) -> None:
        """Wait until every delivery has a final outcome, at most `timeout_s`; then record
        what is left as failed and stop the sender threads."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(min(left, 1.0))
            unfinished = [d for s, d in self._pending.items() if s not in self._claimed]
            self._closed = True
            self._stop.set()
            self._cond.notify_all()
        for delivery in unfinished:
            self._finish(
                delivery,
                DeliveryOutcome(
                    delivery,
                    DeliveryStatus.FAILED,
                    0,
                    None,
                    f"not delivered within the drain deadline ({timeout_s:g}s)",
                    time.time(),
                ),
            )
        for thread in self._threads.values():
            thread.join(timeout=1.0)  # one in the middle of a request ends on its own
        for target, sender in self._senders.items():
            if not self._threads[target].is_alive():
                sender.close()

    # ---- sender threads ----------------------------------------------------------------

    def _lane(self, target: str) -> deque[Delivery]:
        """The target's queue, with its sender thread started on first use (lock held)."""
        queue = self._queues.get(target)
        if queue is None:
            queue = self._queues[target] = deque()
            self._senders[target] = Sender(self.targets[target], self._stop)
            thread = threading.Thread(
                target=self._send_loop, args=(target,), name=f"delivery-{target}", daemon=True
            )
            self._threads[target] = thread
            thread.start()
        return queue

    def _send_loop(self, target: str) -> None:
        queue, sender = self._queues[target], self._senders[target]
        while True:
            with self._cond:
                while not queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                delivery = queue.popleft()
            try:
                outcome = sender.send(delivery)
            except Exception as exc:  # a bug in rendering: fail this delivery, not the flow
                log.exception("delivery to %s raised", target)
                outcome = DeliveryOutcome(
                    delivery,
                    DeliveryStatus.FAILED,
                    0,
                    None,
                    f"{type(exc).__name__}: {exc}",
                    time.time(),
                )
            self._finish(delivery, outcome)

    # ---- outcomes ----------------------------------------------------------------------

    def _finish(self, delivery: Delivery, outcome: DeliveryOutcome) -> None:
        """Report the outcome once, then let the delivery leave the outbox (in that order:
        a snapshot between the two still holds it, so it is never lost unreported)."""
        slot = (delivery.target, delivery.key)
        with self._cond:
            if slot not in self._pending or slot in self._claimed:
                return  # already final (the drain deadline got there first)
            self._claimed.add(slot)
        try:
            self._emit(outcome)
        finally:
            with self._cond:
                self._claimed.discard(slot)
                self._pending.pop(slot, None)
                self._cond.notify_all()

    def _report(self, delivery: Delivery, status: DeliveryStatus, why: str) -> None:
        self._emit(DeliveryOutcome(delivery, status, 0, None, why, time.time()))

    def _emit(self, outcome: DeliveryOutcome) -> None:
        if outcome.status is DeliveryStatus.FAILED:
            log.error(
                "delivery %s to %s failed after %d attempts: %s",
                outcome.key,
                outcome.target,
                outcome.attempts,
                outcome.error,
            )
        try:
            self.on_outcome(outcome)
        except Exception:
            log.exception("recording the outcome of delivery %s failed", outcome.key)


class OutboxPartition(StatefulSinkPartition[Notification, OutboxState]):
    """The Bytewax side of the outbox: append, snapshot, drain on close."""

    def __init__(self, outbox: Outbox, drain_timeout_s: float) -> None:
        self.outbox = outbox
        self.drain_timeout_s = drain_timeout_s

    def write_batch(self, values: list[Notification]) -> None:
        for notification in values:
            self.outbox.add(notification)

    def snapshot(self) -> OutboxState:
        return OutboxState(self.outbox.pending())

    def close(self) -> None:
        self.outbox.drain(self.drain_timeout_s)


class OutboxSink(FixedPartitionedSink[Notification, OutboxState]):
    """Delivers `(key, Notification)` items to their targets; see the module docstring."""

    def __init__(
        self,
        targets: Mapping[str, DeliveryTarget],
        on_outcome: OutcomeCallback,
        *,
        drain_timeout_s: float = 120.0,
        max_pending: int = 10_000,
    ) -> None:
        self.targets = dict(targets)
        self.on_outcome = on_outcome
        self.drain_timeout_s = drain_timeout_s
        self.max_pending = max_pending

    def list_parts(self) -> list[str]:
        return [PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(
        self, step_id: str, for_part: str, resume_state: OutboxState | None
    ) -> OutboxPartition:
        outbox = Outbox(self.targets, self.on_outcome, max_pending=self.max_pending)
        if resume_state is not None:
            version = getattr(resume_state, "version", None)
            if not isinstance(resume_state, OutboxState) or version != OutboxState.VERSION:
                raise StateFormatError(
                    f"step {step_id}: the snapshot holds {type(resume_state).__name__} "
                    f"(version {version}), not "
                    f"{OutboxState.KIND} v{OutboxState.VERSION}"
                )
            outbox.enqueue(resume_state.pending)
        return OutboxPartition(outbox, self.drain_timeout_s)
