"""Whether the sink has written what a stage last handed it: the one rule the merge
stage's early rows and its final slices both wait on.

A stage's output reaches the sink only after the stage's call returns (Bytewax hands it
downstream at the end of the activation), so "the sink holds at most `slack` unwritten
rows" read right after a call is true before the sink has even seen that call's rows: a
second call in the same activation then handed its rows too, and two slices that were
meant to be written one after the other reached the sink as one batch. A mark taken when
the rows are handed — the sink's count of rows in, plus those rows — is only reached once
the sink has got them and written all but `slack` of everything up to them.

Rows the sink writes at once (`TableRows.write_now`: the minute window's early rows) jump
its queue, so a wait for them counts only such rows (`write_now`): counted with every
row, the minute's next early rows waited until a window's final rows, handed before
them and written after them, were written too.

A wait may leave outputs in flight (`in_flight`): with 2, the next output goes once the
sink has written the one *before* the last, so the sink writes one while the stage builds
the next (a bounded run's final slices: built and written one after the other, the
worker idled half of the ~4 s the end's ~1.3M rows took on the bench log).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from operators.stats import FlowStats


@dataclass
class SinkWait:
    """Rows handed to the sink up to and with a stage's last output, and when."""

    max_wait_ms: float
    write_now: bool = False  # the rows waited on are written at once: count only those
    in_flight: int = 1  # outputs that may be unwritten when the next goes
    # (mark, when handed) of the last `in_flight` outputs, oldest first.
    marks: deque[tuple[int, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.marks = deque(maxlen=self.in_flight)

    def handed(self, stats: FlowStats, rows: int, now: float) -> None:
        """`rows` are handed to the sink now (not counted by it yet)."""
        mark = (stats.sink_now_in if self.write_now else stats.sink_rows_in) + rows
        self.marks.append((mark, now))  # the oldest falls out past `in_flight`

    def written(self, stats: FlowStats, slack: int, now: float) -> bool:
        """Fewer than `in_flight` outputs were handed, or the sink has written all but
        `slack` of the rows up to the oldest of them, or those rows waited `max_wait_ms`
        (a sink whose writes these stats do not count must not starve the stage)."""
        if len(self.marks) < self.in_flight:
            return True
        mark, at = self.marks[0]
        written = stats.now_written if self.write_now else stats.rows_written
        return written + slack >= mark or now - at >= self.max_wait_ms
