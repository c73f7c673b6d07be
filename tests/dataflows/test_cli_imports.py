"""The command line imports only what every command needs before it parses its options.

`pulse run` begins opening its store (connectors/store_start.py) once it has its
settings, and imports the flow's modules while that runs: whatever the command line
imports up front is start-up the store cannot overlap. Commands that read (`pulse query`,
`pulse alerts`) start faster by as much."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Each imported by a command that uses it, or by the run once its store is starting.
NOT_UP_FRONT = ("bytewax", "fastapi", "uvicorn", "confluent_kafka", "chdb", "pandas")


def test_the_command_line_does_not_import_the_flow_or_the_service_up_front() -> None:
    child = (
        "import sys, dataflows.cli\n"
        f"loaded = [m for m in {NOT_UP_FRONT!r} if m in sys.modules]\n"
        "assert not loaded, f'imported up front: {loaded}'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", child], env=env, check=True, timeout=120)
