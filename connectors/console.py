"""The live one-line status of a running flow (`pulse up`, `pulse run`)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from operators.stats import FlowStats


def status_line(stats: FlowStats, elapsed: float) -> str:
    s = stats
    rate = s.events_in / elapsed if elapsed > 0 else 0.0
    return (
        f"[{elapsed:7.1f}s] events in {s.events_in:,} ({rate:,.0f}/s: "
        f"{s.inferences:,} inferences, {s.feedback:,} feedback) | "
        f"dead letters {s.dead_letters:,} | "
        f"duplicates {s.duplicate_inferences + s.duplicate_feedback:,} | "
        f"unjoined {s.unjoined:,} | late {s.late_events:,} | windows final {s.windows_final:,} | "
        f"rows written {s.rows_written:,}"
    )


class StatusPrinter:
    """Prints the status every `interval` seconds: in place on a terminal, else as lines."""

    def __init__(self, stats: FlowStats, interval: float, out: TextIO = sys.stdout) -> None:
        self.stats = stats
        self.interval = interval
        self.out = out
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self._tty = out.isatty()

    def start(self) -> StatusPrinter:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._print(final=False)

    def _print(self, final: bool) -> None:
        line = status_line(self.stats, time.monotonic() - self.started)
        if self._tty and not final:
            self.out.write("\r\x1b[K" + line)
        else:
            self.out.write(("\r\x1b[K" if self._tty else "") + line + "\n")
        self.out.flush()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._print(final=True)
