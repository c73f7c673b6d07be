"""A service on a real uvicorn socket on 127.0.0.1, over the test's home."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.settings import Settings, load_settings
from connectors.clickhouse import connect, migrate
from connectors.service.app import create_app
from connectors.service.auth import KeyRing
from connectors.service.context import ServiceContext
from connectors.service.keys import key_hash, new_key
from connectors.service.server import ServiceThread
from connectors.service.store import Store
from dataflows.feedback import clickhouse_target


class RunningService:
    """A started service: its URL, an operator key (any tenant, every scope), its context."""

    def __init__(self, thread: ServiceThread, context: ServiceContext, key: str) -> None:
        self.thread = thread
        self.context = context
        self.key = key
        self.url = thread.url

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"} if (key or self.key) else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


ServiceFactory = Callable[..., RunningService]


def api_keys(*keys: tuple[str, str, list[str]]) -> tuple[str, dict[str, str]]:
    """`service.api_keys` (name, tenant, scopes) as PULSE_SERVICE_API_KEYS takes it, and the
    keys themselves by name."""
    made = {name: new_key() for name, _tenant, _scopes in keys}
    entries = [
        {"name": name, "sha256": key_hash(made[name]), "tenant": tenant, "scopes": scopes}
        for name, tenant, scopes in keys
    ]
    return json.dumps(entries), made


def keyed_settings(
    home: Path, *keys: tuple[str, str, list[str]], **environ: str
) -> tuple[Settings, dict[str, str]]:
    """Settings over `home` with `service.api_keys` configured, and the keys by name."""
    entries, made = api_keys(*keys)
    env = {"PULSE_HOME": str(home), "PULSE_SERVICE_API_KEYS": entries, **environ}
    return load_settings(environ=env), made


def migrated(settings: Settings) -> Settings:
    """Create the store's tables (as a run does at start), then close the client."""
    target = clickhouse_target(settings)
    client = connect(target)
    try:
        migrate(client, target.database)
    finally:
        client.close()
    return settings


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
            keys=KeyRing(settings.service.api_keys, operator_key=key),
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
