"""The merge-process prototype is a fair comparison: the merge stage in a child, fed the
same partials on the same simulated clock, writes exactly the rows it writes in process
(a digest of every output), final windows included."""

from __future__ import annotations

from pathlib import Path

from operators.synthetic import TrafficProfile
from scripts.bench_merge_process import merge_config, partials_of, run_child, run_inproc
from tests.scripts.synthetic_log import write_log

PARTITIONS = 2
RATE = 2_000.0  # events per simulated second: a tick every ~2,000 events


def test_the_merge_stage_in_a_child_gives_the_in_process_rows(tmp_path: Path) -> None:
    write_log(
        tmp_path / "log", PARTITIONS, TrafficProfile(seed=5, duration_s=130.0, rate=40.0, dims=30)
    )
    calls = partials_of(tmp_path / "log", None, 300, RATE)
    config = merge_config(None, PARTITIONS)

    here = run_inproc(calls, config)
    there = run_child(calls, config)
    assert here.rows > 1_000  # final rows of several windows and the cube's rollups
    assert there.rows == here.rows
    assert there.digest == here.digest
