"""SilenceStore on a real embedded ClickHouse (chDB) store: what the rules stage polls."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.clickhouse import Target
from connectors.silence_store import SilenceStore, SilenceStoreError
from operators.rules.alerts import AlertState, Severity, Transition

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000


def _store(home: Path, refresh_ms: int = 0) -> SilenceStore:
    return SilenceStore(Target(f"chdb://{home / 'olap'}", "pulse"), refresh_ms=refresh_ms)


def _transition(rule: str, model_id: str, event_time: int) -> Transition:
    return Transition(
        rule=rule, fingerprint="f", episode=1, state=AlertState.FIRING,
        previous=AlertState.PENDING, severity=Severity.WARNING, window="1m", window_start=0,
        window_end=60_000, event_time=event_time, dims=(("model_id", model_id),), value=0.5,
        threshold=0.8, samples=100, baseline_samples=None, reason="",
    )  # fmt: skip


def test_active_excludes_expired_and_ended_silences(home: Path) -> None:
    store = _store(home)  # a fresh home: the table is made on first use
    long = store.add({"rule": "accuracy-floor", "model_id": ["m1", "m2"]}, NOW + 2 * HOUR,
                     "deploy", now_ms=NOW)  # fmt: skip
    short = store.add({"model_id": "m3"}, NOW + HOUR, now_ms=NOW)
    ended = store.add({"model_id": "m4"}, NOW + HOUR, now_ms=NOW)
    store.expire(ended.id, now_ms=NOW + 1)

    assert {s.until for s in store.active(NOW + 10)} == {long.until, short.until}
    assert [s.until for s in store.active(NOW + HOUR)] == [long.until]  # `until` is exclusive
    assert store.active(NOW + 2 * HOUR) == []

    (active,) = store.active(NOW + HOUR)
    assert active.comment == "deploy"
    assert active.mutes(_transition("accuracy-floor", "m2", NOW + HOUR))
    assert not active.mutes(_transition("accuracy-floor", "m5", NOW + HOUR))
    assert not active.mutes(_transition("other-rule", "m1", NOW + HOUR))
    # Listing keeps the ended one when asked, with its expiry moved to when it ended.
    listed = {s.id: s for s in store.listed(NOW + 10, include_expired=True)}
    assert listed[ended.id].until == NOW + 1
    assert set(listed) == {long.id, short.id, ended.id}


def test_expire_is_idempotent_and_unknown_ids_are_named(home: Path) -> None:
    store = _store(home)
    silence = store.add({"model_id": "m1"}, NOW + HOUR, now_ms=NOW)
    first = store.expire(silence.id, now_ms=NOW + 5)
    again = store.expire(silence.id, now_ms=NOW + 50)
    assert first.until == again.until == NOW + 5
    with pytest.raises(SilenceStoreError, match="no silence with id 'nope'"):
        store.expire("nope", now_ms=NOW)


def test_a_poll_reads_the_table_at_most_once_per_refresh_interval(home: Path) -> None:
    writer = _store(home)
    poller = _store(home, refresh_ms=3_600_000)
    assert poller.active(NOW) == []
    writer.add({"model_id": "m1"}, NOW + HOUR, now_ms=NOW)
    assert poller.active(NOW) == []  # within the interval: the last list
    assert len(_store(home, refresh_ms=0).active(NOW)) == 1
