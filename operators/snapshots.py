"""State snapshots of the stateful steps: a pickle of named fields, measured.

Bytewax serializes each changed key's whole state at every snapshot, so what a step
snapshots is its cost at every epoch; the counters let the bench report it.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable
from typing import Any

from operators.stats import FlowStats


def snapshot_fields(owner: Any, names: Iterable[str], stats: FlowStats | None) -> bytes:
    start = time.perf_counter()
    data = pickle.dumps({name: getattr(owner, name) for name in names}, pickle.HIGHEST_PROTOCOL)
    if stats is not None:
        stats.snapshots += 1
        stats.snapshot_bytes += len(data)
        stats.snapshot_us += int((time.perf_counter() - start) * 1e6)
    return data
