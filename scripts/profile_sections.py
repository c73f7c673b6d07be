#!/usr/bin/env python3
"""Where a bounded flow run's CPU goes, by section (issue 13's profiles).

    python scripts/profile_sections.py --home DIR [--root TREE] [--config YAML]
        [--sections A,B,...] [--flow-env PULSE_KEY=VALUE] [--out FILE]

Runs ``pulse run --bounded --quiet`` over `--home` (a home with a local log, such as the
one ``scripts/bench.py --keep`` leaves; its ``olap`` and ``recovery`` are removed first,
as the bench does) and prints each section's own thread CPU time
(:mod:`scripts.section_timer`), largest first, then the run's wall time. The default
sections are the stages' methods the performance notes quote; `--sections` names others
(``module:Qualified.name``, comma-separated). `--root` runs another tree's code (a ``git
worktree`` of another commit, with this checkout's virtualenv and this timer) to compare
two commits section by section: a section the older code lacks is listed as missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SECTIONS = (
    "operators.decode:BatchDecoder.decode",
    "operators.partition_stage:PartitionStage._process",
    "operators.partition_stage:PartitionStage._on_inferences",
    "operators.partition_stage:PartitionStage._on_feedback",
    "operators.partition_stage:PartitionStage._count",
    "operators.partition_stage:PartitionStage._cell_ids",
    "operators.partition_stage:PartitionStage._accumulate",
    "operators.partition_stage:PartitionStage._collect_rows",
    "operators.partition_stage:PartitionStage._tick",
    "operators.partition_stage:PartitionStage.snapshot",
    "operators.merge_stage:MergeStage.on_item",
    "operators.merge_stage:MergeStage.on_notify",
    "operators.merge_stage:MergeStage._apply",
    "operators.merge_stage:MergeStage._rollup",
    "operators.merge_stage:MergeStage._rollup_rolled",
    "operators.merge_stage:MergeStage._final_columns",
    "operators.merge_stage:MergeStage._window_columns",
    "operators.merge_stage:MergeStage._table_rows",
    "operators.merge_stage:MergeStage.snapshot",
    "operators.panes:window_sums",
    "operators.sessions:SessionStage.on_item",
    "connectors.local_log_source:LocalLogPartition.next_batch",
    "connectors.clickhouse_sink:_Writer.add",
    "connectors.clickhouse_sink:_Writer._insert",
)
ENV_SECTIONS = "SECTION_TIMER_SECTIONS"  # read by the flow process (not PULSE_: those are settings)
ENV_OUT = "SECTION_TIMER_OUT"
# Put on the flow's PYTHONPATH: wraps the sections at start, writes the report at exit.
SITECUSTOMIZE = f"""\
import atexit, os, time
from _section_timer import SectionTimer  # this checkout's, whichever tree runs

_timer = SectionTimer()
_timer.install(os.environ[{ENV_SECTIONS!r}].split(","))


def _report():
    with open(os.environ[{ENV_OUT!r}], "w") as out:
        out.write(_timer.report(time.process_time()) + "\\n")


atexit.register(_report)
"""


def profile(
    home: Path, sections: list[str], env_extra: dict[str, str], out: Path, root: Path = ROOT
) -> tuple[float, int]:
    """One bounded run of `root`'s code with the sections timed; its wall seconds and
    exit status."""
    with tempfile.TemporaryDirectory(prefix="pulse-probe-") as probe:
        Path(probe, "sitecustomize.py").write_text(SITECUSTOMIZE)
        shutil.copy(Path(__file__).with_name("section_timer.py"), Path(probe, "_section_timer.py"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(env_extra)
        env.update({
            "PULSE_HOME": str(home),
            "PYTHONPATH": os.pathsep.join([probe, str(root)]),
            ENV_SECTIONS: ",".join(sections),
            ENV_OUT: str(out),
        })  # fmt: skip
        for kept in ("olap", "recovery"):
            shutil.rmtree(home / kept, ignore_errors=True)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "dataflows.cli", "run", "--bounded", "--quiet"],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode()[-3000:])
    return seconds, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a home with a local log")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree whose code runs")
    parser.add_argument("--config", type=Path, help="the flow's config (PULSE_CONFIG)")
    parser.add_argument("--sections", help="module:Qualified.name,... (default: the stages')")
    parser.add_argument(
        "--flow-env", action="append", default=[], metavar="PULSE_KEY=VALUE",
        help="a setting of the flow's (repeatable), e.g. PULSE_LOG_PARTITIONS=4",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="also keep the report here")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.flow_env)
    if args.config:
        env["PULSE_CONFIG"] = str(args.config.resolve())
    sections = args.sections.split(",") if args.sections else list(SECTIONS)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch, "sections.txt")
        seconds, status = profile(args.home.resolve(), sections, env, out, args.root.resolve())
        if status != 0:
            sys.exit(f"profile_sections: the flow exited {status}")
        print(out.read_text(), end="")
    print(f"wall {seconds:.2f} s")


if __name__ == "__main__":
    main()
