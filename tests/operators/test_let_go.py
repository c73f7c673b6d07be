"""A bounded partition whose input ended keeps no scatter table (issue 13: the end of a
bounded run closes every window in memory the partitions no longer need)."""

from __future__ import annotations

import json

from operators.batches import RawBatch
from operators.partition_stage import PartitionStage
from operators.slices import SCATTER_FROM_ROWS
from operators.stats import FlowStats
from tests.harness import configs, semantics

T0 = 1_767_225_600_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _line(event: dict) -> bytes:
    return json.dumps(event).encode()


def test_an_ended_partition_frees_its_scatter_tables() -> None:
    n = 2 * SCATTER_FROM_ROWS  # one batch of counted events in one slice: a table
    partition_config, _ = configs(semantics(partitions=1), bounded=True)
    stats = FlowStats()
    stage = PartitionStage(partition_config, stats, clock=Clock())
    inferences = [_line({"type": "inference", "request_id": f"r{i}", "ts": T0 + i,
                         "model_id": "m", "model_version": "v", "endpoint": f"/e{i % 40}"})
                  for i in range(n)]  # fmt: skip
    feedback = [_line({"type": "feedback", "event_id": f"e{i}", "request_id": f"r{i}",
                       "ts": T0 + n + i, "kind": "thumbs", "value": True, "user_id": "u"})
                for i in range(n)]  # fmt: skip
    stage.on_item(RawBatch(0, "inferences", "inferences", inferences, list(range(n))))
    stage.on_item(RawBatch(0, "feedback", "feedback", feedback, list(range(n))))
    stage.on_item(RawBatch(0, "inferences", "inferences", [], [], end_of_input=True))
    assert not stage.ended
    assert sum(d.tables_held for d in stage.deltas.values()) > 0, "the test makes a table"
    stage.on_item(RawBatch(0, "feedback", "feedback", [], [], end_of_input=True))
    assert stage.ended and stats.feedback == n
    assert sum(d.tables_held for d in stage.deltas.values()) == 0
