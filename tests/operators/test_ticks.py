"""Every stage ticks on one wall-clock grid, the merge stage just after the partitions, so
an event's early row (and the alert it raises) waits one interval, not two."""

from __future__ import annotations

from datetime import datetime

import pytest

from operators.merge_stage import MergeStage
from operators.partition_stage import PartitionStage
from operators.stats import FlowStats
from operators.ticks import merge_lag, next_tick
from tests.harness import configs, semantics


def test_next_tick_is_the_first_grid_point_after_now() -> None:
    assert next_tick(1_000, 1_000) == 2_000  # on the grid: the next point
    assert next_tick(1_999.5, 1_000) == 2_000
    assert next_tick(1_050, 1_000, lag=100) == 1_100
    assert next_tick(1_100, 1_000, lag=100) == 2_100
    assert merge_lag(1_000) == 100 and merge_lag(250) == 25


def _ms(at: datetime | None) -> float:
    assert at is not None
    return at.timestamp() * 1000


@pytest.mark.parametrize("started", [1_764_547_200_123.0, 1_764_547_200_987.0])
def test_partitions_tick_together_and_the_merge_stage_just_after(started: float) -> None:
    """Stages started at different moments (as partitions of several workers are) share
    their ticks; before, each ticked `emit_interval` after its own start, at random
    phases, and an event waited for one tick and then for the other."""
    partition_config, merge_config = configs(semantics(), bounded=False)
    stats = FlowStats()
    clock = [started]
    first = PartitionStage(partition_config, stats, clock=lambda: clock[0])
    merge = MergeStage(merge_config, stats, clock=lambda: clock[0])
    clock[0] += 377
    second = PartitionStage(partition_config, stats, clock=lambda: clock[0])
    interval = partition_config.emit_interval
    tick = _ms(first.notify_at())
    assert tick % interval == 0 and _ms(second.notify_at()) % interval == 0
    assert started < tick <= started + interval
    lag = merge_lag(interval)
    assert (_ms(merge.notify_at()) - lag) % interval == 0  # after the partitions' tick
    assert _ms(merge.notify_at()) in (tick + lag, tick + lag - interval)
    clock[0] = tick + 3  # the partitions' tick comes a little late: still on the grid
    first.on_notify()
    assert _ms(first.notify_at()) == tick + interval
    clock[0] = tick + lag + 1
    merge.on_notify()
    assert _ms(merge.notify_at()) == tick + interval + lag
