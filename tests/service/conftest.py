"""A service on a real uvicorn socket on 127.0.0.1, over the test's home."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.settings import Settings, load_settings
from connectors.service.app import create_app
from connectors.service.auth import KeyRing, new_key
from connectors.service.context import ServiceContext
from connectors.service.server import ServiceThread
from connectors.service.store import Store
from dataflows.feedback import clickhouse_target


class RunningService:
    """A started service: its URL, a local key with every scope, and its context."""

    def __init__(self, thread: ServiceThread, context: ServiceContext, key: str) -> None:
        self.thread = thread
        self.context = context
        self.key = key
        self.url = thread.url

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"} if (key or self.key) else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


ServiceFactory = Callable[..., RunningService]


@pytest.fixture
def service(home: Path) -> Iterator[ServiceFactory]:
    """`service(settings=None, log=None, telemetry=None, **context_fields)` starts one."""
    started: list[RunningService] = []

    def start(settings: Settings | None = None, **fields: Any) -> RunningService:
        settings = settings or load_settings(environ={"PULSE_HOME": str(home)})
        key = new_key()
        target = clickhouse_target(settings)
        context = ServiceContext(
            settings=settings,
            keys=KeyRing(settings.service.api_keys, local_key=key),
            target=target,
            store=Store(target),
            **fields,
        )
        thread = ServiceThread(create_app(context), "127.0.0.1", 0).start()
        running = RunningService(thread, context, key)
        started.append(running)
        return running

    yield start
    for running in started:
        running.thread.stop()
        running.context.close()
