"""What each stateful step stores in a snapshot: one explicit, versioned type per step.

A step's attributes are its own business; these fields are the stored format. Each step
builds its state with `to_state()` and takes it back with `from_state()`;
:func:`operators.snapshots.encode_state` / :func:`~operators.snapshots.decode_state`
turn it into bytes and back and refuse any other version. Changing a field (its name,
meaning or type, or the layout of an object it holds): bump that type's `VERSION` and
:data:`operators.snapshots.STATE_FORMAT` (the recovery guard then refuses older stores).

Not stored, by design: what a step rebuilds on resume (the partition stage's recent
inferences and dedup ids come back from ClickHouse, the merge stage's cached rollups are
recomputed), the partition stage's next tick and the merge stage's early-row pacing
(processing time: a restart starts them afresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from operators.snapshots import VersionedState

if TYPE_CHECKING:
    import numpy as np

    from operators.cells import Cell, CellIndex, GlobalIds, LocalIds
    from operators.clock import PartitionClock
    from operators.join import PendingFeedback, ReleasedFeedback
    from operators.panes import SpecState
    from operators.rules.evaluation import Evaluator
    from operators.rules.grouping import OpenGroup
    from operators.rules.lifecycle import AlertRecord
    from operators.sessions import SessionRecord, UserSessions
    from operators.slices import SliceDeltas
    from operators.stream_merge import StreamMerge


@dataclass(frozen=True)
class PartitionState(VersionedState):
    """One source partition (:class:`~operators.partition_stage.PartitionStage`)."""

    KIND = "partition_stage"
    # 2: released feedback waits for the tick's store lookup (`released`); 3: each
    # released item keeps how far the inference stream was read at its release
    VERSION = 3

    partition: int  # -1 until the first batch names it
    clock: PartitionClock
    merge: StreamMerge  # events read but not yet released in time order
    pending: PendingFeedback  # feedback waiting for its inference
    released: ReleasedFeedback  # feedback given up on, until the tick's store lookup
    processed: dict[str, int]  # last source offset processed, per stream
    cells: LocalIds[Cell]
    keys: dict[str, LocalIds[Any]]  # per keyed family
    deltas: dict[str, SliceDeltas]  # per family, since the last tick
    session_records: list[list[SessionRecord]]  # per session shard, since the last tick
    sent_watermark: float
    ended: bool
    sampled: int  # events seen by the routing check's sampler


@dataclass(frozen=True)
class MergeState(VersionedState):
    """The merge stage (:class:`~operators.merge_stage.MergeStage`)."""

    KIND = "merge_stage"
    VERSION = 1

    cells: CellIndex
    local_cells: dict[int, np.ndarray]  # per partition: its cell id -> finest-cell row
    keys: dict[str, GlobalIds[Any]]  # per keyed family
    specs: list[SpecState]  # per window spec: panes, extras, how far final
    watermarks: dict[int, float]  # per partition
    ended: set[int]  # partitions whose input ended
    next_tick: float


@dataclass(frozen=True)
class SessionShardState(VersionedState):
    """One session shard (:class:`~operators.sessions.SessionStage`)."""

    KIND = "session_stage"
    VERSION = 1

    users: dict[tuple[int, str], UserSessions]  # (spec index, user_id) -> open sessions
    watermarks: dict[int, float]  # per partition


@dataclass(frozen=True)
class RulesState(VersionedState):
    """The rules stage (:class:`~operators.rules.stage.RulesStage`): alerts, evaluators,
    open notification groups and firing inhibition sources, in event time."""

    KIND = "rules_stage"
    # 2: drift references and spike rings in arrays by cell slot, canary sides;
    # 3: their slots found by the merge stage's cell id (WindowMetrics.cell_ids)
    VERSION = 3

    alerts: dict[str, AlertRecord]  # fingerprint -> lifecycle record (Lifecycle.alerts)
    # Rule name -> its evaluator, pickled whole: an evaluator's state (a canary's
    # evidence, drift references and spike rings as numpy arrays indexed by dense cell
    # slots) is plain data held by the object itself.
    evaluators: dict[str, Evaluator]
    groups: dict[str, OpenGroup]  # target -> open group (Grouper.groups)
    inhibiting: dict[int, dict[tuple[str, ...], set[str]]]  # Inhibitor.firing
    clock: float  # the latest event time the rules were evaluated at (-inf before any)
