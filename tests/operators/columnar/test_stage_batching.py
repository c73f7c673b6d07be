"""The partition stage's output does not depend on how its input was cut into batches.

Ordering, dedup and join run in bulk over whatever the stream merge releases at once
(``PartitionStage._on_events``), or in runs of one event type when the join buffer could
push an inference out (``join.max_entries``). Either way every event must see what the
row-wise stage showed it: the same joins, duplicates, lateness, waits and give-ups. So the
same log fed one line at a time and in random batches must give identical tables, final
rows and counters, also with tiny `max_entries` bounds that push inferences and ids out.
The reference comparison of the unbounded case is ``tests/operators/test_semantics.py``.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.batches import STREAMS, RawBatch
from operators.partitioning import partition_for
from tests.harness import Output, Stages, configs
from tests.operators.test_semantics import SEM, lines, streams

FOREVER = 10**12  # TTL and horizon: only max_entries pushes anything out (order decides it)
TABLES = ("inferences", "events", "metrics_late", "dead_letters", "sessions")
KEYED = ("metrics_classes", "metrics_preferences", "metrics_reports")
COUNTERS = (
    "inferences", "feedback", "dead_letters", "duplicate_inferences", "duplicate_feedback",
    "unjoined", "late_events", "misrouted", "join_evictions", "dedup_evictions", "windows_final",
)  # fmt: skip


def run(
    stream: list[tuple[str, str, bytes]], seed: int, max_batch: int, join_max: int, dedup_max: int
) -> dict[str, Any]:
    """A bounded run in batches of 1..`max_batch` lines (streams interleaved at random):
    every table's rows (sorted), the final metric rows and the counters."""
    rng = random.Random(seed)
    partition_config, merge_config = configs(SEM)
    partition_config = dataclasses.replace(
        partition_config, join_ttl=FOREVER, join_max_entries=join_max,
        dedup_horizon=FOREVER, dedup_max_entries=dedup_max, routing_check_every=3,
    )  # fmt: skip
    out = Output()
    wired = Stages(partition_config, merge_config, SEM, out, lambda: 0.0)
    stages, merge, shards, handle = wired.partitions, wired.merge, wired.shards, wired.handle

    queues: dict[tuple[int, str], list[bytes]] = defaultdict(list)
    for name, key, line in stream:
        queues[(partition_for(key, SEM.partitions), name)].append(line)
    for p in range(SEM.partitions):
        for name in STREAMS:
            handle(stages[p].on_item(RawBatch(p, name, name))[0])
    offsets = dict.fromkeys(queues, 0)
    left = [key for key in queues if queues[key]]
    while left:
        p, name = key = rng.choice(left)
        take = rng.randint(1, max_batch)
        chunk, queues[key] = queues[key][:take], queues[key][take:]
        start = offsets[key]
        offsets[key] += len(chunk)
        ended = not queues[key]
        batch = RawBatch(p, name, name, chunk, list(range(start, start + len(chunk))),
                         caught_up=ended, end_of_input=ended)  # fmt: skip
        handle(stages[p].on_item(batch)[0])
        if ended:
            left.remove(key)
    for p in range(SEM.partitions):  # a partition with one stream never read ends here
        for name in STREAMS:
            if (p, name) not in queues:
                handle(
                    stages[p].on_item(RawBatch(p, name, name, caught_up=True, end_of_input=True))[0]
                )
    for stage in stages.values():
        handle(stage.on_eof()[0])
    handle(merge.on_eof()[0])
    for shard in shards.values():
        handle(shard.on_eof()[0])
    result: dict[str, Any] = {
        table: sorted(map(repr, out.column_rows(table)), key=str) for table in TABLES
    }
    for table in ("metrics", *KEYED):
        rows = out.column_rows(table, final_only=True)
        result[table] = sorted(repr({k: v for k, v in r.items() if k != "version"})
                               for r in rows if r["final"])  # fmt: skip
    result["counters"] = {name: getattr(out.stats, name) for name in COUNTERS}
    return result


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    streams(), st.integers(0, 10**6), st.integers(2, 40),
    st.sampled_from([1, 2, 4, 1_000_000]), st.sampled_from([1, 3, 1_000_000]),
)  # fmt: skip
def test_the_partition_stage_gives_the_same_output_for_any_batch_size(
    events: list[dict[str, Any]], seed: int, max_batch: int, join_max: int, dedup_max: int
) -> None:
    stream = lines(events)
    one_line_at_a_time = run(stream, seed, 1, join_max, dedup_max)
    batched = run(stream, seed + 1, max_batch, join_max, dedup_max)
    assert batched == one_line_at_a_time
