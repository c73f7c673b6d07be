"""Two streams whose lines cover different spans of event time per byte, and a reader
that records how far apart in event time a source delivers them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from operators.batches import RawBatch

T0 = 1_767_225_600_000
LINES = 600


def stream_lines(step_ms: int) -> list[bytes]:
    """Lines of about the same size, `step_ms` of event time apart."""
    return [json.dumps({"ts": T0 + i * step_ms, "n": i}).encode() for i in range(LINES)]


# Equal byte reads of both: inferences run 10x ahead of feedback in event time.
INFERENCES, FEEDBACK = stream_lines(1_000), stream_lines(100)


def read_aligned(next_batch: Callable[[], list[RawBatch]]) -> tuple[dict[str, list[bytes]], int]:
    """Everything a bounded source delivers, by stream, and the largest gap in event time
    between the two streams' positions seen while both were still being read."""
    got: dict[str, list[bytes]] = {"inferences": [], "feedback": []}
    last = {"inferences": T0, "feedback": T0}
    ended: set[str] = set()
    gap = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            batches = next_batch()
        except StopIteration:
            return got, gap
        if not batches:
            time.sleep(0.01)  # as Bytewax waits for next_awake
        for batch in batches:
            got[batch.stream] += batch.lines
            if batch.lines:
                last[batch.stream] = json.loads(batch.lines[-1])["ts"]
            if batch.end_of_input:
                ended.add(batch.stream)
        if not ended:
            gap = max(gap, abs(last["inferences"] - last["feedback"]))
    raise AssertionError("the source never stopped")
