"""Hosting the service in this process: its context, its thread, its discovery file.

`pulse serve` hosts it alone; `pulse run` / `pulse up` (:class:`dataflows.running.FlowRun`)
host it next to the flow, which holds the embedded store, so other processes read through
it. With no ``service.api_keys`` configured, two keys are made for this run and written to
``service.json`` only: the local key (tenant ``default``; ingest, read, query), which local
commands use, and an operator key (any tenant, every scope) for what needs more: silences,
other tenants' rows (``pulse query --all-tenants``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from config.settings import Settings
from connectors import ingest_log, telemetry
from connectors.clickhouse import Target
from connectors.service import discovery
from connectors.service.app import create_app
from connectors.service.auth import KeyRing
from connectors.service.context import ServiceContext
from connectors.service.keys import new_key
from connectors.service.server import ServiceThread
from connectors.service.store import Store
from operators.errors import PulseError
from operators.stats import STATS

log = logging.getLogger("pulse.service")


class ServiceBusyError(PulseError):
    """Another live process already serves this home; the message names its URL."""


def build_context(
    settings: Settings,
    *,
    hosted_by_flow: bool,
    local_key: str | None,
    operator_key: str | None = None,
) -> ServiceContext:
    """What the routes share: the store, the keys (configured + the run's), the log."""
    target = Target.of(settings)
    return ServiceContext(
        settings=settings,
        keys=KeyRing(settings.service.api_keys, local_key=local_key, operator_key=operator_key),
        target=target,
        store=Store(target),
        log=ingest_log.durable_log(settings),
        telemetry=telemetry.service_telemetry(settings, STATS),
        stats=STATS,
        hosted_by_flow=hosted_by_flow,
    )


@dataclass
class HostedService:
    """A started service: where it listens, the keys it made (if any)."""

    thread: ServiceThread
    context: ServiceContext
    local_key: str | None
    operator_key: str | None = None

    @property
    def url(self) -> str:
        return self.thread.url

    def stop(self) -> None:
        """Forget discovery first (no new callers), then stop serving and close."""
        discovery.remove(self.context.settings.home_dir)
        self.thread.stop()
        self.context.close()


def host_service(settings: Settings, hosted_by_flow: bool) -> HostedService:
    """Start the service on `service.host:port` and record it in service.json."""
    home = settings.home_dir
    running = discovery.read(home)
    if running is not None:
        raise ServiceBusyError(
            f"pid {running.pid} already serves {home} at {running.url}; stop it first, or "
            "give this process its own PULSE_HOME"
        )
    made = not settings.service.api_keys
    local_key, operator_key = (new_key(), new_key()) if made else (None, None)
    context = build_context(
        settings, hosted_by_flow=hosted_by_flow, local_key=local_key, operator_key=operator_key
    )
    try:
        thread = ServiceThread(create_app(context), settings.service.host, settings.service.port)
        thread.start()
    except BaseException:
        context.close()
        raise
    discovery.write(home, thread.url, local_key, operator_key)
    log.info("service: %s (%s)", thread.url, discovery.service_file(home))
    return HostedService(thread, context, local_key, operator_key)
