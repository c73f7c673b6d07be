"""The partition stage counts a run of feedback in bulk exactly as it counted each event
alone: the per-event `_count_feedback` below is copied as it was at e5dc37f, and both
count the same random mixes (every kind, labels of every type, joined and unjoined,
late for some or all windows, tenants that may be refused, preferences, reports), cut
into batches. Everything the counting touches must be identical, down to the types."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from operators.columnar.joined import NONE
from operators.events import Feedback
from operators.families import CLASSES, PREFERENCES, REPORTS, WINNER_CODES
from operators.join import InferenceContext, tenant_refusal
from operators.metrics import KIND_CODES, as_label, feedback_number
from operators.partition_stage import PartitionConfig, PartitionStage
from operators.sessions import shard_of
from operators.slices import NO_CUTOFF
from operators.stats import FlowStats
from operators.windows import WindowSpec, is_final

MINUTE = 60_000
CONFIG = PartitionConfig(
    partitions=1, specs=(WindowSpec("1m", MINUTE, MINUTE), WindowSpec("5m", 5 * MINUTE, MINUTE)),
    grouping_sets=((), ("model_id",)), allowed_lateness=10_000, max_out_of_orderness=5_000,
    idle_timeout=5_000, emit_interval=1_000, bounded=True, join_ttl=600_000,
    join_max_entries=1_000_000, join_wait=30_000, dedup_horizon=86_400_000,
    dedup_max_entries=1_000_000, extra_dims=("region",), confidence_bins=4,
    max_event_bytes=65_536, min_ts=0, max_ts=1 << 62, session_shards=3, snapshots=False,
)  # fmt: skip
TENANTS = ("t1", "t2")
CELLS = [(t, f"m{i}", "d", "v", "s", "e", "eu") for t in TENANTS for i in range(2)]


class Bulk(PartitionStage):
    """The stage counting every run in bulk, however short."""

    BULK_FROM = 0


class PerEvent(PartitionStage):
    """The stage with its per-event counting as it was at e5dc37f (one call per event)."""

    def _count_feedback(
        self,
        events: list[Feedback],
        offsets: list[int],
        contexts: list[InferenceContext | None],
        cutoffs: list[float],
    ) -> None:
        for event, offset, context, cutoff in zip(events, offsets, contexts, cutoffs, strict=True):
            self._count_one(event, offset, context, cutoff)

    def _count_one(
        self, event: Feedback, offset: int, context: InferenceContext | None, cutoff: float
    ) -> None:
        ts = event.ts
        kind = event.kind
        value: Any = event.value
        correct: bool | None = None
        true = predicted = pair = category = NONE
        winner = 0
        if context is None:
            cell_id = self.cells.id_of(self._unjoined_cell(event))
        else:
            cell_id = context[1]
            if event.tenant is not UNSET:
                refusal = tenant_refusal(event, self.cells.values[cell_id][0])
                if refusal is not None:
                    self._refuse(event, offset, refusal)
                    return
            prediction = context[2]
            if kind == "label" and prediction is not None:
                label = value.strip() if type(value) is str else as_label(value)
                correct = label == prediction
                if type(value) is str or type(value) is int:
                    ids = self.keys[CLASSES]
                    true, predicted = ids.id_of(label), ids.id_of(prediction)
        slice_start = ts - ts % self._slice
        end = self._earliest_end.get(slice_start)
        if end is None:
            end = self._window_end_floor(slice_start)
        late = is_final(end, cutoff, self.config.allowed_lateness)
        self._event_rows.add(
            event, context, self.cells.values[cell_id], self.partition, offset, late, correct
        )
        number = feedback_number(kind, value)
        shards = self.config.session_shards
        if shards:
            cell = self.cells.values[cell_id]
            self.session_records[shard_of(event.user_id, shards)].append(
                (event.user_id, ts, cell, kind, number)
            )
        if kind == "preference":
            pair = self.keys[PREFERENCES].id_of((value["policy_a"], value["policy_b"]))
            winner = WINNER_CODES[value["winner"]]
        elif kind == "report":
            category = self.keys[REPORTS].id_of(value["category"])
        if late and not self._late(slice_start, cell_id, cutoff, "feedback", event.event_id, ts):
            return
        counted = self._counted
        if true != NONE or pair != NONE or category != NONE:
            row = len(counted.feedback_slices)
            counted.keyed.append((row, true, predicted, pair, winner, category))
        counted.feedback_slices.append(slice_start)
        counted.feedback_cells.append(cell_id)
        counted.kinds.append(KIND_CODES[kind])
        counted.numbers.append(number)
        counted.correct.append(bool(correct))
        counted.unjoined.append(context is None)
        counted.feedback_cutoffs.append(cutoff if late else NO_CUTOFF)


words = st.sampled_from(["a", " a", "b ", "1", " 1 ", "1.0", "cat", ""])
magnitudes = st.one_of(
    st.integers(-(10**9), 10**9),
    st.floats(-1e9, 1e9, allow_nan=False),
    st.sampled_from([-0.0, 0.0, -1e-9, 1e-9, -(2.0**-21), 2.0**-21, 3 * 2.0**-21, 0.5]),
)
VALUES: dict[str, Any] = {
    "label": st.one_of(
        words,
        st.integers(-(2**63), 2**63 - 1),
        st.sampled_from([1, -1, 0]),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from([1.0, 1.5, -0.0, 1e20, 2.0**63]),
    ),
    "thumbs": st.booleans(),
    "click": st.booleans(),
    "conversion": st.booleans(),
    "rating": st.one_of(st.integers(1, 5), st.floats(1, 5)),
    "reward": magnitudes,
    "dwell": magnitudes.map(abs),
    "preference": st.fixed_dictionaries(
        {
            "winner": st.sampled_from(["a", "b", "tie"]),
            "policy_a": st.sampled_from(["p", "q"]),
            "policy_b": st.sampled_from(["q", "r"]),
        }
    ),
    "report": st.one_of(
        st.fixed_dictionaries({"category": st.sampled_from(["fraud", "spam"])}),
        st.fixed_dictionaries(
            {
                "category": st.sampled_from(["fraud", "spam"]),
                "amount": st.one_of(st.none(), magnitudes),
            }
        ),
    ),
}


@st.composite
def feedback(draw: st.DrawFn, i: int) -> tuple[Feedback, int, InferenceContext | None, float]:
    kind = draw(st.sampled_from(sorted(VALUES)))
    ts = draw(st.integers(0, 10 * MINUTE))
    event = Feedback(
        event_id=f"e{i}", request_id=f"r{draw(st.integers(0, 5))}", ts=ts, kind=kind,
        value=draw(VALUES[kind]), user_id=draw(st.sampled_from(["u1", "u2", "u3", "u4"])),
        tenant=draw(st.sampled_from([UNSET, UNSET, "t1", "t2"])),
        attributes=draw(st.sampled_from([{}, {"region": "us"}])),
    )  # fmt: skip
    context: InferenceContext | None = None
    if draw(st.integers(0, 4)):  # most feedback is joined
        prediction = draw(st.sampled_from([None, "a", "1", "1.5", "cat", "", "b"]))
        context = (ts - 100, draw(st.integers(0, len(CELLS) - 1)), prediction, 0.5, None)
    cutoff = draw(st.one_of(st.just(-float("inf")), st.integers(0, 12 * MINUTE).map(float)))
    return event, i, context, cutoff


@st.composite
def batches(draw: st.DrawFn) -> list[list[tuple[Feedback, int, InferenceContext | None, float]]]:
    n = draw(st.integers(0, 60))
    events = [draw(feedback(i)) for i in range(n)]
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return [events[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


def stage_of(kind: type[PartitionStage]) -> PartitionStage:
    stage = kind(CONFIG, FlowStats(), clock=lambda: 0.0)
    stage.partition = 0
    for cell in CELLS:
        stage.cells.id_of(cell)
    return stage


def touched(stage: PartitionStage) -> str:
    """Everything counting feedback writes, as text (types show: 0.0 against -0.0, bool
    against numpy's)."""
    return repr((
        asdict(stage._counted), stage._event_rows.records, stage.session_records,
        stage.cells.values, {name: ids.values for name, ids in stage.keys.items()},
        stage._refused, stage._late_rows.rows, stage.stats.late_events,
        stage.stats.dead_letter_reasons,
    ))  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_bulk_counting_equals_counting_each_event(cut: list[list[Any]]) -> None:
    bulk, each, mixed = stage_of(Bulk), stage_of(PerEvent), stage_of(PartitionStage)
    for batch in cut:
        columns = [list(column) for column in zip(*batch, strict=True)] or [[], [], [], []]
        for stage in (bulk, each, mixed):
            stage._count_feedback(*[list(column) for column in columns])
    assert touched(bulk) == touched(each)
    assert touched(mixed) == touched(each)  # short runs one at a time (_count_one)
