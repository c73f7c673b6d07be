"""The two-process prototype is a fair comparison: the stages in child processes, with
either transport and channel, produce exactly the outputs the in-process stages do (a
digest of every output in the sink's form), on the same schedule of batches."""

from __future__ import annotations

from pathlib import Path

from operators.synthetic import TrafficProfile
from scripts.bench_two_process import (
    partition_config,
    raw_schemas,
    read_log,
    run_children,
    run_inproc,
    schedule,
)
from tests.scripts.synthetic_log import write_log

PARTITIONS = 2
RATE = 2_000.0  # events per simulated second: a tick every ~2,000 events


def test_child_processes_give_the_in_process_outputs(tmp_path: Path) -> None:
    write_log(
        tmp_path / "log", PARTITIONS, TrafficProfile(seed=3, duration_s=10.0, rate=200.0, dims=50)
    )
    steps = schedule(read_log(tmp_path / "log"), PARTITIONS, 300)
    config, schemas = partition_config(None, PARTITIONS), raw_schemas()

    here = run_inproc(steps, config, schemas, RATE, check=True)
    assert here.events == sum(step.lines for step in steps) > 3_000
    pickled = run_children(steps, config, schemas, RATE, True, False, 1, 2, "socket")
    # Two children (one partition each), Arrow IPC, a pipe drained by a thread.
    arrow = run_children(steps, config, schemas, RATE, True, True, 2, 3, "thread")
    assert [len(pickled.child), len(arrow.child)] == [1, 2]
    assert pickled.events == arrow.events == here.events
    assert pickled.digest == arrow.digest == here.digest
