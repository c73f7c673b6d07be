"""Process-wide counters behind the live status line (`pulse up`, `pulse run`).

Informational only: they count what this process did since it started (not restored
from snapshots). The steps update them; the status printer reads them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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

    @property
    def events_in(self) -> int:
        return self.inferences + self.feedback + self.dead_letters

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "events_in": self.events_in}


STATS = FlowStats()
