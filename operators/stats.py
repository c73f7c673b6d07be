"""Process-wide counters behind the live status line (`pulse up`, `pulse run`).

Informational only: they count what this process did since it started (not restored
from snapshots). The steps update them; the status printer reads them.
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TypeVar


@dataclass
class FlowStats:
    inferences: int = 0
    feedback: int = 0
    dead_letters: int = 0
    duplicate_inferences: int = 0
    duplicate_feedback: int = 0
    unjoined: int = 0
    late_events: int = 0
    misrouted: int = 0  # sampled events whose request_id hashes to another partition
    looked_up: int = 0  # feedback whose inference was asked of the store
    found_in_store: int = 0
    join_evictions: int = 0  # inferences dropped by join.max_entries before their TTL
    dedup_evictions: int = 0  # event ids dropped by dedup.max_entries before the horizon
    windows_final: int = 0
    metric_rows: int = 0
    rows_written: int = 0
    early_deferred: int = 0  # merge ticks whose early rows waited for their budget
    after_final: int = 0  # contributions to a window already final at the merge (should be 0)
    alert_transitions: int = 0  # rules: transitions recorded (alerts rows)
    notifications: int = 0  # rules: notifications handed to the outbox
    actions: int = 0  # rules: actions asked for
    deliveries_delivered: int = 0  # delivery outcomes (connectors.delivery), recorded or not
    deliveries_failed: int = 0
    deliveries_skipped: int = 0
    deliveries_unrecorded: int = 0  # outcomes the deliveries table could not take (logged)
    # The latest watermark a partition reported (epoch ms; 0: none yet): readiness and the
    # watermark-lag self-metric compare it with the wall clock.
    watermark_ms: int = 0
    snapshots: int = 0  # state snapshots taken by the stateful steps, their size and time
    snapshot_bytes: int = 0
    snapshot_us: int = 0
    # For the self-metrics (connectors.telemetry): lines read per (topic, stream), dead
    # letters per category, events decoded, the merge stage's emissions and their time,
    # the sink's rows handed over, inserts (time, retries) and Kafka consumer lag.
    lines_read: Counter[tuple[str, str]] = field(default_factory=Counter)
    dead_letter_reasons: Counter[str] = field(default_factory=Counter)
    decoded: int = 0
    emissions: int = 0
    emission_us: int = 0
    sink_rows_in: int = 0
    # Of those, rows to write at once (TableRows.write_now), and how many are written: the
    # minute window's early rows wait on their own, not on final rows handed before them.
    sink_now_in: int = 0
    now_written: int = 0
    sink_inserts: int = 0
    sink_insert_us: int = 0
    sink_retries: int = 0
    kafka_lag: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition)
    partition_watermarks: dict[int, int] = field(default_factory=dict)

    @property
    def events_in(self) -> int:
        return self.inferences + self.feedback + self.dead_letters

    @property
    def sink_pending(self) -> int:
        """Rows handed to the ClickHouse sink and not written yet."""
        return max(0, self.sink_rows_in - self.rows_written)

    @property
    def join_hit_rate(self) -> float | None:
        """Share of (non-duplicate) feedback joined to its inference; feedback still
        waiting for its inference counts as joined until its wait ends. None: no feedback."""
        seen = self.feedback - self.duplicate_feedback
        return (seen - self.unjoined) / seen if seen > 0 else None

    def saw_watermark(self, partition: int, watermark: float) -> None:
        """A partition's watermark went downstream: `watermark_ms` is the lowest of the
        partitions still running (an ended partition's infinite one does not count)."""
        if math.isfinite(watermark):
            self.partition_watermarks[partition] = int(watermark)
        else:
            self.partition_watermarks.pop(partition, None)
        if self.partition_watermarks:
            self.watermark_ms = min(self.partition_watermarks.values())

    def count_read(self, topic: str, stream: str, lines: int) -> None:
        if lines:
            self.lines_read[(topic, stream)] += lines

    def count_dead_letters(self, letters: Iterable[_Categorized]) -> None:
        self.dead_letter_reasons.update(letter.error for letter in letters)

    def as_dict(self) -> dict[str, int]:
        plain = {k: v for k, v in asdict(self).items() if isinstance(v, int)}
        return {**plain, "events_in": self.events_in}


class _Categorized(Protocol):
    @property
    def error(self) -> str: ...


class _Counted(Protocol):
    stats: FlowStats


F = TypeVar("F", bound=Callable[..., Any])


def timed(count: str, total_us: str, only_if_result: bool = False) -> Callable[[F], F]:
    """A method decorator: add one to ``self.stats.<count>`` and the call's duration (µs)
    to ``self.stats.<total_us>`` (a one-line addition at the timed site; calls that raise,
    or return nothing when `only_if_result`, are not counted)."""

    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: _Counted, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = method(self, *args, **kwargs)
            if result or not only_if_result:
                stats = self.stats
                setattr(stats, count, getattr(stats, count) + 1)
                took = int((time.perf_counter() - start) * 1e6)
                setattr(stats, total_us, getattr(stats, total_us) + took)
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


STATS = FlowStats()
