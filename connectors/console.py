"""What the user's terminal shows: the log format, the live one-line status of a running
flow (`pulse up`, `pulse run`) and its summary at the end."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Literal, TextIO

from operators.stats import FlowStats

# Libraries that log every request at INFO (httpx: one line per query sent to a running
# flow); their warnings still show.
QUIET_LIBRARIES = ("httpx", "httpcore", "urllib3", "clickhouse_connect")


LogFormat = Literal["auto", "human", "json"]


def configure_logging(verbose: bool, log_format: LogFormat = "human") -> None:
    """Log to stderr: `human` lines, or `json` lines (connectors.telemetry.json_logs);
    `auto` (settings.telemetry.log_format) picks human on a terminal, JSON elsewhere.
    Secrets are masked in both."""
    from connectors.telemetry.json_logs import JsonFormatter, Redact

    if log_format == "auto":
        log_format = "human" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Redact())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # force: the command line configures logging at once (human), then again when the
    # settings (telemetry.log_format) are read.
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True
    )
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def status_line(stats: FlowStats, elapsed: float, pending_final: str = "") -> str:
    """The counters; `pending_final` says why no window is final yet (while none is)."""
    s = stats
    rate = s.events_in / elapsed if elapsed > 0 else 0.0
    waiting = f" ({pending_final})" if pending_final and not s.windows_final else ""
    return (
        f"[{elapsed:7.1f}s] events in {s.events_in:,} ({rate:,.0f}/s: "
        f"{s.inferences:,} inferences, {s.feedback:,} feedback) | "
        f"dead letters {s.dead_letters:,} | "
        f"duplicates {s.duplicate_inferences + s.duplicate_feedback:,} | "
        f"unjoined {s.unjoined:,} | late {s.late_events:,} | "
        f"windows final {s.windows_final:,}{waiting} | rows written {s.rows_written:,}"
        f"{_alerting(s)}"
    )


def _alerting(s: FlowStats) -> str:
    """The rules' counters, once there is something to count (a flow with rules)."""
    delivered = s.deliveries_delivered + s.deliveries_failed + s.deliveries_skipped
    if not (s.alert_transitions or s.notifications or s.actions or delivered):
        return ""
    unrecorded = f", {s.deliveries_unrecorded:,} unrecorded" if s.deliveries_unrecorded else ""
    return (
        f" | alert transitions {s.alert_transitions:,} | notifications {s.notifications:,} "
        f"(delivered {s.deliveries_delivered:,}, failed {s.deliveries_failed:,}, skipped "
        f"{s.deliveries_skipped:,}{unrecorded}) | actions {s.actions:,}"
    )


def print_summary(stats: FlowStats, elapsed: float, out: TextIO = sys.stdout) -> None:
    """The counters once more when a run ends, however it was started."""
    out.write(status_line(stats, elapsed) + "\n")
    out.flush()


class StatusPrinter:
    """Prints the status every `interval` seconds: in place on a terminal, else as lines.
    Stopping clears an in-place line (the summary follows)."""

    def __init__(
        self, stats: FlowStats, interval: float, pending_final: str = "", out: TextIO = sys.stdout
    ) -> None:
        self.stats = stats
        self.interval = interval
        self.pending_final = pending_final
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
            line = status_line(self.stats, time.monotonic() - self.started, self.pending_final)
            self.out.write("\r\x1b[K" + line if self._tty else line + "\n")
            self.out.flush()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._tty:
            self.out.write("\r\x1b[K")
            self.out.flush()
