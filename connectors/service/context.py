"""What every route shares, built once per service (and kept on ``app.state.context``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from config.settings import Settings
from connectors.clickhouse import Target
from connectors.service.auth import KeyRing
from connectors.service.store import Store
from operators.stats import STATS, FlowStats

Routed = tuple[str, str | bytes, bytes]  # (stream, key, line), as connectors.event_writer


class EventLogUnavailable(Exception):
    """The event log did not confirm in time (broker down, queue full): 503, retry later."""

    def __init__(self, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class DurableLog(Protocol):
    """Where accepted events go. `append` returns only once every event is durable (Kafka
    acknowledged it with acks=all, or the local log fsynced it), else raises
    :class:`EventLogUnavailable` and the request reports nothing as accepted."""

    def append(self, events: Sequence[Routed], timeout_s: float) -> None: ...

    async def append_async(self, events: Sequence[Routed], timeout_s: float) -> None:
        """`append` for the event loop: the same guarantee, awaited without a thread
        (the log's own thread resolves the request's future)."""
        ...

    def reachable(self) -> bool: ...

    def close(self) -> None: ...


class ServiceTelemetry(Protocol):
    """The service's view of connectors.telemetry."""

    def prometheus_text(self) -> tuple[bytes, str]: ...  # body, content type

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None: ...


@dataclass
class ServiceContext:
    settings: Settings
    keys: KeyRing
    target: Target
    store: Store
    log: DurableLog | None = None  # None: ingestion answers 503
    telemetry: ServiceTelemetry | None = None
    stats: FlowStats = field(default_factory=lambda: STATS)  # the hosting flow's counters
    hosted_by_flow: bool = False  # a flow runs in this process (readiness checks its lag)
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        self.store.close()
        for extra in self.extras.values():  # what routes opened for themselves
            if callable(getattr(extra, "close", None)):
                extra.close()
