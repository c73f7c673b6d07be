"""Shared by the read tests: a store with two tenants' rows, and tenant-bound keys.

Rows are inserted directly (after the real migrations), so each test knows exactly what
each tenant may see; the flow's own rows are covered by tests/dataflows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config.settings import ApiKeySettings, Settings, load_settings
from connectors.service.keys import key_hash, new_key
from dataflows.feedback import prepare_store
from tests.conftest import Store

TENANTS = ("acme", "globex")
WINDOW_START = "2026-01-05 10:00:00"
# Per tenant: the model versions of its 1m rows (so counts differ between tenants).
VERSIONS = {"acme": ("v1", "v2"), "globex": ("v1", "v2", "v3")}


def settings_for(home: Path, **service: Any) -> Settings:
    settings = load_settings(environ={"PULSE_HOME": str(home)})
    if service:
        settings = settings.model_copy(
            update={"service": settings.service.model_copy(update=service)}
        )
    return settings


def with_key(
    settings: Settings, tenant: str, scopes: tuple[str, ...] = ("read", "query")
) -> tuple[Settings, str]:
    """`settings` plus a new key bound to `tenant`; returns both."""
    key = new_key()
    entry = ApiKeySettings(
        name=f"k-{tenant.replace('*', 'all')}-{len(settings.service.api_keys)}",
        sha256=key_hash(key),
        tenant=tenant,
        scopes=list(scopes),
    )
    keys = [*settings.service.api_keys, entry]
    service = settings.service.model_copy(update={"api_keys": keys})
    return settings.model_copy(update={"service": service}), key


def seed(home: Path, alerts: bool = True) -> None:
    """Migrate the home's store and insert metrics, alerts and dead letters of 2 tenants."""
    prepare_store(load_settings(environ={"PULSE_HOME": str(home)}))
    store = Store(home)
    try:
        client = store.open()
        for tenant in TENANTS:
            for i, version in enumerate(VERSIONS[tenant]):
                client.command(
                    "INSERT INTO pulse.metrics (window, window_start, window_end, tenant, "
                    "model_id, deployment, model_version, segment, endpoint, extra_dims, final, "
                    "version, feedback_count, labeled_count, correct_count, accuracy) VALUES "
                    f"('1m', '{WINDOW_START}', '2026-01-05 10:01:00', '{tenant}', 'm', "
                    f"'primary', '{version}', '*', '*', '', 1, 1, 10, 10, {5 + i}, {0.5 + i / 10})"
                )
            client.command(
                "INSERT INTO pulse.metrics_late (window, window_start, tenant, model_id, "
                "deployment, model_version, segment, endpoint, stream, event_id) VALUES "
                f"('1m', '{WINDOW_START}', '{tenant}', 'm', 'primary', 'v1', '*', '*', "
                f"'feedback', 'late-{tenant}')"
            )
            if alerts:
                client.command(
                    "INSERT INTO pulse.alerts (rule, fingerprint, episode, sequence, state, "
                    "previous, severity, window, event_time, tenant, model_id, reason) VALUES "
                    f"('acc-floor', 'fp-{tenant}', 1, 1, 'firing', 'pending', 'critical', '1m', "
                    f"'{WINDOW_START}', '{tenant}', 'm', 'accuracy below 0.9')"
                )
        client.command(
            "INSERT INTO pulse.dead_letters (reason, raw) VALUES ('invalid', '{\"tenant\":\"x\"}')"
        )
    finally:
        store.close()


def table_counts(home: Path) -> dict[str, int]:
    """Rows per table of the pulse database (views aside), to show nothing changed."""
    store = Store(home)
    try:
        names = [r[0] for r in store.rows(
            "SELECT name FROM system.tables WHERE database = 'pulse' AND engine NOT LIKE '%View'"
        )]  # fmt: skip
        return {n: int(store.scalar(f"SELECT count() FROM pulse.`{n}`")) for n in names}
    finally:
        store.close()
