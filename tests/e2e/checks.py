"""Assertions on a store after a bounded run over generated traffic."""

from __future__ import annotations

from collections import Counter

from operators.rows import DEAD_LETTER_RAW_LIMIT
from operators.synthetic import GeneratedEvent
from tests import reference as ref
from tests.conftest import Store
from tests.harness import (
    assert_keyed_match,
    assert_metrics_match,
    assert_sessions_match,
    final_metric_rows,
    late_keys,
    semantics,
)

DEFAULT_SEMANTICS = semantics(partitions=4)


def assert_store_matches_truth(
    store: Store,
    events: list[GeneratedEvent],
    sem: ref.Semantics = DEFAULT_SEMANTICS,
    replayed: bool = False,
) -> None:
    valid = [(e.stream, e.key, e.line) for e in events if e.invalid is None]
    expected = ref.compute(valid, sem)

    # metrics: every final row equals the independent computation
    rows = store.dicts(
        "SELECT * REPLACE (toUnixTimestamp64Milli(window_start) AS window_start) FROM {db}.metrics FINAL"
    )
    assert_metrics_match(final_metric_rows(rows), ref.expected_rows(expected, sem))

    # dead letters: exactly the injected invalid events, with the right category
    injected = Counter((e.line[:DEAD_LETTER_RAW_LIMIT], e.invalid) for e in events if e.invalid)
    stored = Counter(
        (bytes.fromhex(raw), error)  # hex: the driver would show non-UTF-8 bytes as hex anyway
        for raw, error in store.rows("SELECT hex(raw), error FROM {db}.dead_letters FINAL")
    )
    assert injected, "the traffic should contain invalid events"
    missing = [(raw[:80], error) for (raw, error), n in (injected - stored).items()]
    unexpected = [(raw[:80], error) for (raw, error), n in (stored - injected).items()]
    assert stored == injected, f"dead letters: missing {missing[:5]}, unexpected {unexpected[:5]}"

    # duplicates count once: one events row per distinct event_id, flags as computed
    duplicates = sum(e.duplicate for e in events if e.stream == "feedback" and not e.invalid)
    assert duplicates > 0, "the traffic should contain duplicate feedback"
    events_rows = {
        r[0]: r[1:]
        for r in store.rows("SELECT event_id, joined, late, model_version FROM {db}.events FINAL")
    }
    if not replayed:
        assert store.scalar("SELECT count() FROM {db}.events") == len(events_rows), (
            "each event is written once"
        )
    assert set(events_rows) == set(expected.events)
    for event_id, want in expected.events.items():
        joined, late, model_version = events_rows[event_id]
        assert (bool(joined), bool(late), model_version) == (
            want["joined"],
            want["late"],
            want["model_version"],
        ), event_id

    inference_rows = dict(store.rows("SELECT request_id, late FROM {db}.inferences FINAL"))
    assert set(inference_rows) == set(expected.inferences)
    assert {k: bool(v) for k, v in inference_rows.items()} == {
        k: v["late"] for k, v in expected.inferences.items()
    }

    assert_keyed_match(
        lambda table: store.dicts(
            f"SELECT * REPLACE (toUnixTimestamp64Milli(window_start) AS window_start) FROM {{db}}.{table} FINAL"
        ),
        expected,
    )

    sessions = store.dicts(
        "SELECT * REPLACE (toUnixTimestamp64Milli(session_start) AS session_start, "
        "toUnixTimestamp64Milli(session_end) AS session_end) FROM {db}.sessions FINAL"
    )
    assert_sessions_match(sessions, expected, sem)

    late_rows = store.dicts(
        "SELECT * REPLACE (toUnixTimestamp64Milli(window_start) AS window_start) FROM {db}.metrics_late FINAL"
    )
    assert late_keys(late_rows) == expected.late
    assert expected.late, "the traffic should contain late events"
