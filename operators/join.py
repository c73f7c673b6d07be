"""Join feedback to the inference that produced it, by `request_id`.

Either side may come first (an interval join, as in Flink):

* :class:`InferenceCache` holds recent inferences' context for `join.ttl` of event time,
  at most `join.max_entries` (oldest evicted first, counted). The first inference of a
  `request_id` wins; later ones are duplicates. The partition stage holds them in the
  bulk form of these rules (:class:`operators.columnar.join_buffer.JoinBuffer`); this
  row-wise form is the reference its property tests compare with.
* :class:`PendingFeedback` holds feedback whose inference has not been seen, until the
  watermark passes `ts + join.wait`. Then it is :class:`ReleasedFeedback` until the
  partition's next tick, when a :class:`JoinStore` (ClickHouse `inferences`, where every
  inference is stored) is asked for all of it in one batch: labels and chargebacks arrive
  hours after their inference, and after a restart the memory holds nothing. What is
  still not found proceeds unjoined.

:func:`tenant_refusal` is the one rule of who may join: feedback that names a tenant
joins only an inference of that tenant (an API key bound to a tenant stamps its own on
the feedback it sends), so another tenant's `request_id` cannot move its metrics.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
from msgspec import UNSET
from numpy.typing import NDArray

from operators.events import Feedback
from operators.reasons import foreign_tenant

# What feedback takes from its inference: (ts, the partition's id of its finest cell
# (operators.cells.LocalCells), prediction as a trimmed string for label comparison,
# confidence, latency_ms). A plain tuple: one is built per inference on the hot path.
InferenceContext = tuple[int, int, str | None, float | None, float | None]

# A stored inference: (ts, tenant, model_id, deployment, model_version, segment, endpoint,
# prediction as a trimmed string, confidence, latency_ms, attributes).
StoredInference = tuple[
    int, str, str, str, str, str, str, str | None, float | None, float | None, dict[str, str]
]


class FoundInference(NamedTuple):
    """A request's first stored inference, and where the log had it."""

    partition: int  # its source partition
    offset: int  # its source offset in the partition's inference stream
    inference: StoredInference


# A release outside a replay: whatever the store holds for the request joins.
NOT_REPLAYING = (1 << 63) - 1


def read_before_release(found: FoundInference, partition: int, read_up_to: int) -> bool:
    """Whether feedback released when the partition stage had read its inference stream
    up to `read_up_to` may join `found`: the stage had read it, or the release was not
    during a replay (`NOT_REPLAYING`, :class:`ReplayWindow`).

    During a replay the store may hold an inference the stage has not read yet, stored
    by the crashed execution's sink; one that came after the give-up leaves the
    feedback unjoined in the run without the crash, so it must here too. Outside a
    replay a stored inference the stage has not read is from an earlier log (topics
    recreated, offsets reset): it joins, as it always did; during one, such an inference
    beyond the offset read is taken for the crashed execution's and does not (the one
    case the replay rule gets wrong, for the seconds a replay lasts). One stored from
    another partition (the log was partitioned differently when it was written) joins."""
    return found.partition != partition or found.offset <= read_up_to


class ReplayWindow:
    """Whether a partition stage resumed from a snapshot is still re-reading what its
    crashed execution may have read (and that execution's sink stored): until it has
    processed its inference stream up to where the source stood when it first said it
    was caught up after the resume. The crashed execution cannot have read past that:
    the stream's end only grows. A stage that did not resume never replays."""

    __slots__ = ("_read", "_until", "active")

    def __init__(self, resumed: bool, read: int) -> None:
        self.active = resumed
        self._read = read  # the last valid inference's offset read from the source
        self._until: int | None = None

    def read(self, offsets: Sequence[int], caught_up: bool) -> None:
        """A batch of the inference stream was read: its valid events' offsets."""
        if not self.active or self._until is not None:
            return  # not replaying, or its end is known: nothing to follow
        if offsets:
            self._read = max(self._read, offsets[-1])
        if caught_up:
            self._until = self._read

    def read_up_to(self, processed: int) -> int:
        """What a release now records: `processed` during the replay, else NOT_REPLAYING."""
        if self.active and self._until is not None and processed >= self._until:
            self.active = False
        return processed if self.active else NOT_REPLAYING


def tenant_refusal(feedback: Feedback, tenant: str) -> str | None:
    """Why `feedback` may not join an inference of `tenant` (None: it may). Feedback that
    names no tenant is not checked: producers writing the log directly predate the field."""
    claimed = feedback.tenant
    if claimed is UNSET or claimed == tenant:
        return None
    return foreign_tenant(claimed, feedback.request_id)


class ReleasedFeedback:
    """Feedback that gave up waiting for a live inference, held until one store lookup
    a tick resolves it: a lookup costs ~2.5 ms in chDB whatever its size, and one per
    hook call was ~6 % of a bounded run's worker.

    Resolving later answers what a lookup at the release would have: an inference that
    arrives after the release (and may reach the store before the lookup) *supersedes*
    the feedback's wait, which then stays unjoined, as it would have been. The stage
    marks it twice: at the release, for the inferences of the same sequence that come
    after it (:meth:`add`'s `superseded`), and for later ones as they arrive
    (:meth:`arrived`). Each item keeps how far the stage had read its inference stream
    at the release, for a lookup after a crash (:func:`read_before_release`)."""

    __slots__ = ("_items", "_open")

    def __init__(self) -> None:
        # [event, source offset, cutoff, superseded, inference offset read up to], in
        # release order
        self._items: list[list[Any]] = []
        self._open: dict[str, list[list[Any]]] = {}  # request id -> items not superseded

    def __len__(self) -> int:
        return len(self._items)

    def add(
        self,
        items: list[tuple[Feedback, int, float]],
        superseded: Sequence[bool],
        read_up_to: int,
    ) -> None:
        """Feedback given up on now, the stage having read its inference stream up to
        the offset `read_up_to`."""
        for (event, offset, cutoff), gone in zip(items, superseded, strict=True):
            item = [event, offset, cutoff, gone, read_up_to]
            self._items.append(item)
            if not gone:
                self._open.setdefault(event.request_id, []).append(item)

    def arrived(self, request_ids: Sequence[str]) -> None:
        """Inferences of these request ids arrived: feedback released for them waits no more."""
        waiting = self._open
        if waiting:
            for request_id in filter(waiting.__contains__, request_ids):
                for item in waiting.pop(request_id):
                    item[3] = True

    def events(self) -> list[Feedback]:
        return [item[0] for item in self._items]

    def take(self) -> list[tuple[Feedback, int, float, bool, int]]:
        """Everything released, in release order: (event, offset, cutoff, superseded,
        inference offset read up to)."""
        items = [
            (event, offset, cutoff, gone, read) for event, offset, cutoff, gone, read in self._items
        ]
        self._items, self._open = [], {}
        return items


class JoinStore(Protocol):
    """Where every inference and every counted feedback event is stored (ClickHouse)."""

    def lookup(self, request_ids: list[str]) -> dict[str, FoundInference]:
        """The first stored inference of each request id found, with its source position."""
        ...

    def recent_inferences(
        self, partition: int, up_to_offset: int, since_ts: float, limit: int
    ) -> list[tuple[str, StoredInference]]:
        """The last `limit` inferences of a partition with source offset <= `up_to_offset`
        and ts > `since_ts`, in offset order: the join's memory at a snapshot."""
        ...

    def recent_feedback(
        self, partition: int, up_to_offset: int, since_ts: float, limit: int
    ) -> list[tuple[str, int]]:
        """(event_id, ts) of the last `limit` counted feedback events of a partition with
        source offset <= `up_to_offset` and ts > `since_ts`, in offset order."""
        ...


class InferenceCache:
    __slots__ = ("_entries", "evicted", "max_entries", "ttl")

    def __init__(self, ttl: int, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[str, InferenceContext] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, request_id: str) -> InferenceContext | None:
        return self._entries.get(request_id)

    def add(self, request_id: str, context: InferenceContext) -> bool:
        """Hold `context`; False when this request_id is already held (a duplicate)."""
        entries = self._entries
        if request_id in entries:
            return False
        entries[request_id] = context
        if len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evicted += 1
        return True

    def expire(self, watermark: float) -> None:
        """Drop inferences more than `ttl` behind the watermark (in arrival order)."""
        entries = self._entries
        cutoff = watermark - self.ttl
        while entries:
            if next(iter(entries.values()))[0] > cutoff:
                break
            entries.popitem(last=False)


class PendingFeedback:
    """Feedback waiting for its inference, released by `take` or when it gives up."""

    __slots__ = ("_by_request", "_deadlines", "_seq")

    def __init__(self) -> None:
        self._by_request: dict[str, list[tuple[int, Any]]] = {}
        self._deadlines: list[tuple[int, int, str]] = []
        self._seq = 0

    def __len__(self) -> int:
        return sum(len(items) for items in self._by_request.values())

    def __bool__(self) -> bool:
        return bool(self._by_request)

    def add(self, request_id: str, item: Any, give_up_at: int) -> None:
        self._by_request.setdefault(request_id, []).append((give_up_at, item))
        self._seq += 1
        heapq.heappush(self._deadlines, (give_up_at, self._seq, request_id))

    def waiting_for(self, request_ids: Sequence[str]) -> NDArray[np.bool_]:
        """Which of `request_ids` have feedback waiting (one C-level map, no Python step)."""
        found = map(self._by_request.__contains__, request_ids)
        return np.fromiter(found, dtype=np.bool_, count=len(request_ids))

    def take(self, request_id: str) -> list[Any]:
        """Everything waiting for `request_id` (its inference just arrived)."""
        items = self._by_request.pop(request_id, None)
        return [item for _, item in items] if items else []

    def items(self) -> list[Any]:
        """Everything waiting, in no particular order."""
        return [item for items in self._by_request.values() for _, item in items]

    def next_deadline(self) -> int | None:
        while self._deadlines:
            give_up_at, _, request_id = self._deadlines[0]
            if request_id in self._by_request:
                return give_up_at
            heapq.heappop(self._deadlines)
        return None

    def due(self, watermark: float) -> list[Any]:
        """Items whose give-up time the watermark has reached, oldest first."""
        released: list[Any] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= watermark:
            _, _, request_id = heapq.heappop(deadlines)
            items = self._by_request.get(request_id)
            if not items:
                continue
            keep = [(g, item) for g, item in items if g > watermark]
            released.extend(item for g, item in items if g <= watermark)
            if keep:
                self._by_request[request_id] = keep
            else:
                del self._by_request[request_id]
        return released
